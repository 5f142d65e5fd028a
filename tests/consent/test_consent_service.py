"""ConsentService over real gRPC, with a real auth service and real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.consent.v1 import consent_service_pb2 as pb

from services.common.audit import verify_chain
from services.consent import replies
from tests.consent.harness import new_phone, rpc_error

# The practice People.practice() makes, with no contact of its own: the setting's fallback.
LAKESIDE = replies.Sender("Lakeside Counseling")
OPTED_OUT_REPLY = replies.opted_out(LAKESIDE)
OPTED_IN_REPLY = replies.opted_in(LAKESIDE)


@pytest.fixture
async def office(stack):
    """A practice, its owner and one client."""
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    return practice.owner, client


def events(entries) -> list[str]:
    return [e.event for e in entries]


# -- the Client Info tab ---------------------------------------------------------------


async def test_a_new_client_has_no_number(stack, office):
    owner, client = office
    phone = await stack.get_phone(owner, client)
    assert phone.client_id == client.user_id
    assert phone.phone_number == ""
    assert phone.state == pb.CONSENT_STATE_NO_NUMBER
    assert await stack.ledger(owner, client) == []


async def test_saving_a_number_with_text_ok_opts_in_and_is_ledgered(stack, office):
    owner, client = office
    typed, e164 = new_phone()
    saved = await stack.set_phone(owner, client, typed, True)
    assert (saved.phone_number, saved.text_ok, saved.state) == (e164, True, pb.CONSENT_STATE_OPTED_IN)
    assert await stack.get_phone(owner, client) == saved
    entries = await stack.ledger(owner, client)
    assert events(entries) == ["number_added", "text_ok_checked"]
    assert {(e.actor, e.source, e.phone_number) for e in entries} == {(owner.user_id, "client_info", e164)}
    assert all(e.created_at.seconds > 0 for e in entries)

    allowed = await stack.sms_allowed(client)
    assert (allowed.allowed, allowed.phone_number, allowed.state) == (True, e164, pb.CONSENT_STATE_OPTED_IN)

    # Saving the same thing again (in another format) writes nothing.
    await stack.set_phone(owner, client, e164, True)
    assert len(await stack.ledger(owner, client)) == 2


async def test_a_team_member_of_the_practice_can_save_too(stack):
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    sam = await stack.people.user(practice, auth_pb.ROLE_TEAM_MEMBER, "Sam Okafor")
    typed, _ = new_phone()
    saved = await stack.set_phone(sam, client, typed, False)
    assert saved.state == pb.CONSENT_STATE_NOT_GIVEN
    assert (await stack.ledger(sam, client))[0].actor == sam.user_id


async def test_changing_the_number_needs_text_ok_again_and_deleting_clears_it(stack, office):
    owner, client = office
    first, _ = new_phone()
    second, second_e164 = new_phone()
    await stack.set_phone(owner, client, first, True)
    changed = await stack.set_phone(owner, client, second, False)
    assert (changed.phone_number, changed.text_ok, changed.state) == (second_e164, False, pb.CONSENT_STATE_NOT_GIVEN)
    assert not (await stack.sms_allowed(client)).allowed
    assert (await stack.sms_allowed(client)).phone_number == ""  # not disclosed without consent

    ticked = await stack.set_phone(owner, client, second, True)
    assert ticked.state == pb.CONSENT_STATE_OPTED_IN
    unticked = await stack.set_phone(owner, client, second, False)
    assert unticked.state == pb.CONSENT_STATE_NOT_GIVEN

    deleted = await stack.set_phone(owner, client, "", True)  # the box cannot stay ticked without a number
    assert (deleted.phone_number, deleted.text_ok, deleted.state) == ("", False, pb.CONSENT_STATE_NO_NUMBER)
    assert events(await stack.ledger(owner, client)) == [
        "number_added", "text_ok_checked", "number_changed", "text_ok_checked", "text_ok_unchecked",
        "number_deleted",
    ]
    rows = await stack.sql("SELECT phone_e164, text_ok FROM phone_numbers WHERE client_id = %s", (client.user_id,))
    assert rows == [(None, False)]


async def test_the_saved_consent_change_is_audited_without_the_number(stack, office):
    owner, client = office
    typed, e164 = new_phone()
    await stack.set_phone(owner, client, typed, True)
    await stack.get_phone(owner, client)
    rows = await stack.sql(
        "SELECT action, actor, outcome, practice_id, detail::text FROM audit_events WHERE target = %s"
        " ORDER BY event_id",
        (client.user_id,),
    )
    assert [r[0] for r in rows] == ["consent.client_info_saved", "consent.phone_read"]
    assert rows[0][1:4] == (owner.user_id, "ok", owner.practice_id)
    assert e164 not in rows[0][4] and "555" not in rows[0][4]
    async with await psycopg.AsyncConnection.connect(stack.consent_url, autocommit=True) as conn:
        assert await verify_chain(conn)


# -- errors a person can hit --------------------------------------------------------------


async def test_an_invalid_number_is_refused_plainly(stack, office):
    owner, client = office
    for bad in ("12", "call me", "(212) 555-01", "+1 000 000 0000"):
        err = await rpc_error(stack.set_phone(owner, client, bad, True))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "That is not a valid phone number."
    assert await stack.ledger(owner, client) == []


async def test_clients_outside_the_practice_are_not_found(stack, office):
    owner, client = office
    other = await stack.people.practice("Hillside Therapy")
    their_client = await stack.people.user(other)
    colleague = await stack.people.user(await stack.people.practice(), auth_pb.ROLE_CLINICIAN, "Riley Park")
    typed, _ = new_phone()
    for client_id in (str(uuid.uuid4()), their_client.user_id, owner.user_id, colleague.user_id, "not-an-id"):
        for call in (
            stack.consent.SetClientPhone(
                pb.SetClientPhoneRequest(client_id=client_id, phone_number=typed, text_ok=True),
                metadata=stack.people.as_user(owner), timeout=5,
            ),
            stack.consent.GetClientPhone(
                pb.GetClientPhoneRequest(client_id=client_id), metadata=stack.people.as_user(owner), timeout=5
            ),
            stack.consent.ListLedger(
                pb.ListLedgerRequest(client_id=client_id), metadata=stack.people.as_user(owner), timeout=5
            ),
        ):
            err = await rpc_error(call)
            assert err.code() == grpc.StatusCode.NOT_FOUND, client_id
            assert err.details() == "There is no such client in your practice."
    err = await rpc_error(stack.consent.GetClientPhone(
        pb.GetClientPhoneRequest(client_id=""), metadata=stack.people.as_user(owner), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_clients_and_services_cannot_use_the_client_info_tab(stack, office):
    owner, client = office
    typed, _ = new_phone()
    request = pb.SetClientPhoneRequest(client_id=client.user_id, phone_number=typed, text_ok=True)
    for metadata in (stack.people.as_user(client), stack.people.service("web"), stack.people.service("notify")):
        err = await rpc_error(stack.consent.SetClientPhone(request, metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(stack.consent.ListLedger(
            pb.ListLedgerRequest(client_id=client.user_id), metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.consent.SetClientPhone(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await stack.ledger(owner, client) == []


async def test_only_notify_may_ask_whether_a_text_is_allowed(stack, office):
    owner, client = office
    request = pb.CheckSmsAllowedRequest(client_id=client.user_id)
    for metadata in (stack.people.service("web"), stack.people.service("messaging"), stack.people.as_user(owner)):
        err = await rpc_error(stack.consent.CheckSmsAllowed(request, metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.consent.CheckSmsAllowed(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # A client consent has never heard of may not be texted.
    answer = await stack.sms_allowed(client)
    assert (answer.allowed, answer.phone_number, answer.state) == (False, "", pb.CONSENT_STATE_NO_NUMBER)


# -- replies from the client's phone ------------------------------------------------------


async def test_stop_then_start_each_confirmed_once_and_ledgered(stack, office):
    owner, client = office
    typed, e164 = new_phone()
    await stack.set_phone(owner, client, typed, True)

    stop = await stack.inbound(typed, "  Stop ", "SM-stop-1")
    assert (stop.action, stop.reply_text, stop.reply_to) == (pb.INBOUND_ACTION_OPTED_OUT, OPTED_OUT_REPLY, e164)
    stopped = await stack.get_phone(owner, client)
    # "Text message ok" shows unticked after STOP; the state says why.
    assert (stopped.state, stopped.text_ok) == (pb.CONSENT_STATE_OPTED_OUT, False)
    assert not (await stack.sms_allowed(client)).allowed

    # The provider retries the same webhook: nothing changes twice. The reply comes again (the
    # first may never have reached notify), and notify sends one reply per inbound message.
    again = await stack.inbound(typed, "STOP", "SM-stop-1")
    assert (again.action, again.reply_text) == (pb.INBOUND_ACTION_NONE, OPTED_OUT_REPLY)
    # Another STOP while already out changes nothing and sends nothing.
    another = await stack.inbound(e164, "unsubscribe")
    assert (another.action, another.reply_text) == (pb.INBOUND_ACTION_NONE, "")

    # The clinician cannot override the STOP with the checkbox: saving it unticked, as shown,
    # records nothing; ticking it is recorded as what they did, and changes nothing.
    await stack.set_phone(owner, client, typed, False)
    ticked = await stack.set_phone(owner, client, typed, True)
    assert (ticked.state, ticked.text_ok) == (pb.CONSENT_STATE_OPTED_OUT, False)
    assert not (await stack.sms_allowed(client)).allowed

    start = await stack.inbound(e164, "start", "SM-start-1")
    assert (start.action, start.reply_text, start.reply_to) == (pb.INBOUND_ACTION_OPTED_IN, OPTED_IN_REPLY, e164)
    phone = await stack.get_phone(owner, client)
    assert (phone.text_ok, phone.state) == (True, pb.CONSENT_STATE_OPTED_IN)
    assert (await stack.sms_allowed(client)).allowed
    # START while opted in changes nothing.
    assert (await stack.inbound(e164, "YES")).action == pb.INBOUND_ACTION_NONE

    entries = await stack.ledger(owner, client)
    assert events(entries) == [
        "number_added", "text_ok_checked", "keyword_stop", "confirmation_sent", "text_ok_checked",
        "keyword_start", "confirmation_sent",
    ]
    stop_entry, confirmation = entries[2], entries[3]
    assert (stop_entry.source, stop_entry.actor, stop_entry.provider_message_id) == ("sms", client.user_id, "SM-stop-1")
    assert (confirmation.source, confirmation.provider_message_id) == ("sms", "SM-stop-1")
    rows = await stack.sql("SELECT action FROM inbound_sms WHERE provider_message_id = 'SM-stop-1'")
    assert rows == [("opted_out",)]
    columns = await stack.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'inbound_sms'")
    assert "body" not in {c for (c,) in columns}
    audited = await stack.sql(
        "SELECT action FROM audit_events WHERE target = %s AND action LIKE 'consent.%%_by_sms' ORDER BY event_id",
        (client.user_id,),
    )
    assert audited == [("consent.stop_by_sms",), ("consent.start_by_sms",)]


async def test_delete_and_re_add_with_text_ok_re_enables_after_stop(stack, office):
    owner, client = office
    typed, e164 = new_phone()
    await stack.set_phone(owner, client, typed, True)
    await stack.inbound(e164, "STOP")
    assert (await stack.set_phone(owner, client, "", False)).state == pb.CONSENT_STATE_NO_NUMBER
    assert (await stack.set_phone(owner, client, typed, False)).state == pb.CONSENT_STATE_NOT_GIVEN
    assert (await stack.set_phone(owner, client, typed, True)).state == pb.CONSENT_STATE_OPTED_IN
    assert (await stack.sms_allowed(client)).allowed
    assert events(await stack.ledger(owner, client))[-3:] == ["number_deleted", "number_added", "text_ok_checked"]


async def test_help_answers_with_the_practice_name_without_changing_consent(stack):
    practice = await stack.people.practice("Harbor Light Therapy")
    owner, client = practice.owner, await stack.people.user(practice)
    typed, e164 = new_phone()
    await stack.set_phone(owner, client, typed, True)
    help_reply = await stack.inbound(e164, "info", "SM-help-1")
    assert (help_reply.action, help_reply.reply_to) == (pb.INBOUND_ACTION_HELP, e164)
    assert help_reply.reply_text == (
        "Harbor Light Therapy: Secure message alerts. For help, contact your practice. "
        "Reply STOP to unsubscribe. Msg & data rates may apply."
    )
    assert (await stack.get_phone(owner, client)).state == pb.CONSENT_STATE_OPTED_IN
    assert events(await stack.ledger(owner, client))[-2:] == ["help_requested", "confirmation_sent"]


async def test_keywords_from_unknown_numbers_do_nothing(stack, office):
    owner, client = office
    typed, e164 = new_phone()
    await stack.set_phone(owner, client, typed, True)
    _, stranger = new_phone()
    unknown = await stack.inbound(stranger, "STOP", "SM-unknown-1")
    assert (unknown.action, unknown.reply_text) == (pb.INBOUND_ACTION_NONE, "")
    assert await stack.sql("SELECT from_e164 FROM inbound_sms WHERE provider_message_id = 'SM-unknown-1'") == [
        (stranger,)]
    assert len(await stack.ledger(owner, client)) == 2


async def test_stop_covers_every_client_with_that_number_with_one_reply(stack):
    practice = await stack.people.practice()
    parent = await stack.people.user(practice, name="Morgan Lee")
    child = await stack.people.user(practice, name="Casey Lee")
    typed, e164 = new_phone()
    owner = practice.owner
    await stack.set_phone(owner, parent, typed, True)
    await stack.set_phone(owner, child, typed, False)  # no consent yet: a STOP still counts for later
    stop = await stack.inbound(e164, "QUIT")
    assert (stop.action, stop.reply_text) == (pb.INBOUND_ACTION_OPTED_OUT, OPTED_OUT_REPLY)
    for client in (parent, child):
        assert (await stack.get_phone(owner, client)).state == pb.CONSENT_STATE_OPTED_OUT
        assert events(await stack.ledger(owner, client))[-2:] == ["keyword_stop", "confirmation_sent"]
    assert (await stack.set_phone(owner, child, typed, True)).state == pb.CONSENT_STATE_OPTED_OUT


async def test_an_opt_out_in_the_clients_own_words_is_honoured_and_confirmed_once(stack, office):
    owner, client = office
    typed, e164 = new_phone()
    await stack.set_phone(owner, client, typed, True)
    # Not an opt-out: said the other way round. It gets the automatic answer instead.
    keep = await stack.inbound(e164, "Please don't stop texting me, it helps", "SM-keep-1", provider="twilio")
    assert (keep.action, keep.reply_text) == (pb.INBOUND_ACTION_AUTO_REPLY, replies.auto_reply(LAKESIDE))
    assert (await stack.get_phone(owner, client)).state == pb.CONSENT_STATE_OPTED_IN

    out = await stack.inbound(e164, "Please stop texting me.", "SM-own-words-1", provider="twilio",
                              to_number="+1 (646) 555-0123")
    assert (out.action, out.reply_text, out.reply_to) == (pb.INBOUND_ACTION_OPTED_OUT, OPTED_OUT_REPLY, e164)
    assert not (await stack.sms_allowed(client)).allowed
    # Saying it again changes nothing and sends nothing.
    again = await stack.inbound(e164, "no more texts", provider="twilio")
    assert (again.action, again.reply_text) == (pb.INBOUND_ACTION_NONE, "")

    entries = await stack.ledger(owner, client)
    assert [(e.event, e.actor, e.source, e.provider, e.provider_message_id) for e in entries[2:]] == [
        ("auto_reply_sent", "service:consent", "sms", "twilio", "SM-keep-1"),
        ("free_text_revocation", client.user_id, "sms", "twilio", "SM-own-words-1"),
        ("confirmation_sent", "service:consent", "sms", "twilio", "SM-own-words-1"),
    ]
    assert [e.provider for e in entries[:2]] == ["", ""]  # the clinician's save involved no provider
    rows = await stack.sql(
        "SELECT provider, from_e164, to_e164, action FROM inbound_sms WHERE provider_message_id = 'SM-own-words-1'")
    assert rows == [("twilio", e164, "+16465550123", "opted_out")]
    audited = await stack.sql(
        "SELECT action, detail->>'provider' FROM audit_events WHERE target = %s AND action LIKE 'consent.%%_by_sms'",
        (client.user_id,),
    )
    assert audited == [("consent.revocation_by_sms", "twilio")]


async def test_the_state_says_since_when(stack, office):
    owner, client = office
    assert not (await stack.get_phone(owner, client)).HasField("state_since")
    typed, e164 = new_phone()
    saved = await stack.set_phone(owner, client, typed, True)
    await stack.inbound(e164, "HELP")  # changes nothing, so not the date
    phone = await stack.get_phone(owner, client)
    entries = await stack.ledger(owner, client)
    assert entries[1].event == "text_ok_checked"
    assert saved.state_since == phone.state_since == entries[1].created_at
    await stack.inbound(e164, "STOP")
    stopped = await stack.get_phone(owner, client)
    stop_entry = [e for e in await stack.ledger(owner, client) if e.event == "keyword_stop"][0]
    assert (stopped.state, stopped.state_since) == (pb.CONSENT_STATE_OPTED_OUT, stop_entry.created_at)
    assert stopped.state_since.ToDatetime() >= phone.state_since.ToDatetime()


async def test_a_retried_delivery_changes_nothing_twice_even_when_concurrent(stack):
    practice = await stack.people.practice()
    parent = await stack.people.user(practice, name="Morgan Lee")
    child = await stack.people.user(practice, name="Casey Lee")
    typed, e164 = new_phone()
    for client in (parent, child):
        await stack.set_phone(practice.owner, client, typed, True)

    # The provider delivers the same STOP six times at once.
    replies = await asyncio.gather(*(stack.inbound(e164, "STOP", "SNS-dup-1", provider="sns") for _ in range(6)))
    assert sorted(r.action for r in replies) == [pb.INBOUND_ACTION_OPTED_OUT] + [pb.INBOUND_ACTION_NONE] * 5
    # Each answer carries the same reply; notify sends it once per inbound message.
    assert {r.reply_text for r in replies} == {OPTED_OUT_REPLY}
    # And once more, later.
    late = await stack.inbound(e164, "STOP", "SNS-dup-1", provider="sns")
    assert (late.action, late.reply_text) == (pb.INBOUND_ACTION_NONE, OPTED_OUT_REPLY)
    for client in (parent, child):
        assert events(await stack.ledger(practice.owner, client))[2:] == ["keyword_stop", "confirmation_sent"]

    # The same id from another provider is another message: it acts.
    start = await stack.inbound(e164, "START", "SNS-dup-1", provider="twilio")
    assert (start.action, start.reply_text) == (pb.INBOUND_ACTION_OPTED_IN, OPTED_IN_REPLY)
    assert await stack.sql(
        "SELECT provider, action FROM inbound_sms WHERE provider_message_id = 'SNS-dup-1' ORDER BY provider"
    ) == [("sns", "opted_out"), ("twilio", "opted_in")]
    assert (await stack.sms_allowed(parent)).allowed


async def test_help_without_one_practice_to_name_is_generic(stack):
    generic = ("Secure message alerts. For help, contact your practice. Reply STOP to unsubscribe. "
               "Msg & data rates may apply.")
    # A number we do not know still gets the help text, and nothing is ledgered.
    _, stranger = new_phone()
    unknown = await stack.inbound(stranger, "HELP", provider="sns")
    assert (unknown.action, unknown.reply_text, unknown.reply_to) == (pb.INBOUND_ACTION_HELP, generic, stranger)
    # A number that clients of two practices share: naming either would be a guess.
    first, second = await stack.people.practice("Lakeside Counseling"), await stack.people.practice("Hillside")
    typed, e164 = new_phone()
    clients = [(first.owner, await stack.people.user(first)), (second.owner, await stack.people.user(second))]
    for owner, client in clients:
        await stack.set_phone(owner, client, typed, True)
    shared = await stack.inbound(e164, "info")
    assert (shared.action, shared.reply_text) == (pb.INBOUND_ACTION_HELP, generic)
    for owner, client in clients:
        assert events(await stack.ledger(owner, client))[-2:] == ["help_requested", "confirmation_sent"]


async def test_an_unknown_provider_is_refused(stack):
    _, e164 = new_phone()
    err = await rpc_error(stack.inbound(e164, "STOP", "SM-p-1", provider="carrier-pigeon"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "provider must be one of development, sns, twilio."
    assert await stack.sql("SELECT 1 FROM inbound_sms WHERE provider_message_id = 'SM-p-1'") == []


async def test_only_the_web_edge_delivers_inbound_texts(stack):
    _, e164 = new_phone()
    request = pb.ReceiveInboundSmsRequest(from_number=e164, body="STOP", provider_message_id="SM-x")
    for name in ("notify", "messaging"):
        err = await rpc_error(stack.consent.ReceiveInboundSms(
            request, metadata=stack.people.service(name), timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.consent.ReceiveInboundSms(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    bad_number = await rpc_error(stack.inbound("not a number", "STOP"))
    assert bad_number.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_id = await rpc_error(stack.consent.ReceiveInboundSms(
        pb.ReceiveInboundSmsRequest(from_number=e164, body="STOP"), metadata=stack.people.service("web"), timeout=5))
    assert no_id.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await stack.sql("SELECT 1 FROM inbound_sms WHERE provider_message_id = 'SM-x'") == []


# -- the ledger is append-only ------------------------------------------------------------


async def test_the_ledger_cannot_be_rewritten(stack, office):
    owner, client = office
    typed, _ = new_phone()
    await stack.set_phone(owner, client, typed, True)
    for statement in (
        "UPDATE consent_ledger SET event = 'text_ok_unchecked' WHERE client_id = %s",
        "DELETE FROM consent_ledger WHERE client_id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            await stack.sql(statement, (client.user_id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await stack.sql("TRUNCATE consent_ledger")
    assert events(await stack.ledger(owner, client)) == ["number_added", "text_ok_checked"]

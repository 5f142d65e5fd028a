"""What a client's phone gets back, over real gRPC with a real auth and PostgreSQL (issue 11).

A text that is not a keyword gets one automatic answer per number per 24 hours, counted
from the ledger; every reply names the practice (never the vendor); and the owner's view
of consent's audit trail lists each change about a client when filtered by that client.

The practices here have no contact phone or email (auth's UpdatePractice is not on this
branch), so the texts give the configured CONFIDANT_CONSENT_HELP_CONTACT; how a practice's
own phone and email are written is pinned in test_replies.py.
"""

from __future__ import annotations

import asyncio

import psycopg
from confidant.consent.v1 import consent_service_pb2 as pb

from services.common.audit import verify_chain
from services.consent import replies
from tests.consent.harness import new_phone

THURSDAY = "Thanks, see you Thursday!"


async def _client_with_number(stack, practice, text_ok: bool = True, name: str = "Jordan Lee"):
    client = await stack.people.user(practice, name=name)
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, client, typed, text_ok)
    return client, e164


def events(entries) -> list[str]:
    return [e.event for e in entries]


async def test_a_text_that_is_not_a_keyword_gets_one_answer_a_day(stack):
    practice = await stack.people.practice("Harbor Light Therapy")
    owner = practice.owner
    client, e164 = await _client_with_number(stack, practice)

    first = await stack.inbound(e164, THURSDAY, "SM-chat-1", provider="sns")
    expected = replies.auto_reply(replies.Sender("Harbor Light Therapy"))
    assert (first.action, first.reply_text, first.reply_to) == (pb.INBOUND_ACTION_AUTO_REPLY, expected, e164)
    assert first.reply_text.startswith("Harbor Light Therapy: ")
    assert "911" in first.reply_text and "988" in first.reply_text

    # In the consent history, without the words.
    answer = (await stack.ledger(owner, client))[-1]
    assert (answer.event, answer.actor, answer.source, answer.provider, answer.provider_message_id,
            answer.phone_number) == ("auto_reply_sent", "service:consent", "sms", "sns", "SM-chat-1", e164)

    # The provider retries the same message: the same answer again (notify sends it once).
    retried = await stack.inbound(e164, THURSDAY, "SM-chat-1", provider="sns")
    assert (retried.action, retried.reply_text) == (pb.INBOUND_ACTION_NONE, expected)

    # Another text within the day: no answer, and not recorded again.
    second = await stack.inbound(e164, "cancel my appointment", "SM-chat-2", provider="sns")
    assert (second.action, second.reply_text, second.reply_to) == (pb.INBOUND_ACTION_NONE, "", e164)
    assert events(await stack.ledger(owner, client)) == ["number_added", "text_ok_checked", "auto_reply_sent"]
    assert await stack.sql(
        "SELECT provider_message_id, action FROM inbound_sms WHERE from_e164 = %s ORDER BY provider_message_id",
        (e164,)) == [("SM-chat-1", "auto_reply"), ("SM-chat-2", "none")]
    # Nothing about consent changed.
    shown = await stack.get_phone(owner, client)
    assert (shown.state, shown.text_ok) == (pb.CONSENT_STATE_OPTED_IN, True)
    # HELP and STOP are still answered within the day.
    assert (await stack.inbound(e164, "HELP")).action == pb.INBOUND_ACTION_HELP
    assert (await stack.inbound(e164, "STOP")).action == pb.INBOUND_ACTION_OPTED_OUT


async def test_the_day_is_counted_from_the_ledger(stack):
    practice = await stack.people.practice()
    recent, recent_number = await _client_with_number(stack, practice)
    older, older_number = await _client_with_number(stack, practice, name="Riley Moss")

    async def answered(client, number, hours_ago: int) -> None:
        # An earlier answer as the service records it, dated back (the ledger only takes INSERTs).
        await stack.sql(
            "INSERT INTO consent_ledger (client_id, practice_id, event, actor, source, phone_e164, created_at)"
            " VALUES (%s, %s, 'auto_reply_sent', 'service:consent', 'sms', %s, now() - make_interval(hours => %s))",
            (client.user_id, practice.practice.practice_id, number, hours_ago),
        )

    await answered(recent, recent_number, 23)
    await answered(older, older_number, 25)
    assert (await stack.inbound(recent_number, THURSDAY)).action == pb.INBOUND_ACTION_NONE
    again = await stack.inbound(older_number, THURSDAY)
    assert again.action == pb.INBOUND_ACTION_AUTO_REPLY and again.reply_text


async def test_no_automatic_answer_to_unknown_numbers_or_after_an_opt_out(stack):
    practice = await stack.people.practice()
    owner = practice.owner
    # A number that is no client's: we would not know whose texts these are.
    _, stranger = new_phone()
    unknown = await stack.inbound(stranger, THURSDAY, "SM-stranger-1")
    assert (unknown.action, unknown.reply_text) == (pb.INBOUND_ACTION_NONE, "")
    assert await stack.sql("SELECT action FROM inbound_sms WHERE provider_message_id = 'SM-stranger-1'") == [
        ("none",)]

    # A client who replied STOP gets nothing but STOP's one confirmation.
    stopped, stopped_number = await _client_with_number(stack, practice)
    await stack.inbound(stopped_number, "STOP")
    after_stop = await stack.inbound(stopped_number, THURSDAY)
    assert (after_stop.action, after_stop.reply_text) == (pb.INBOUND_ACTION_NONE, "")
    assert "auto_reply_sent" not in events(await stack.ledger(owner, stopped))

    # A number on file without "Text message ok" is the client's: the answer goes (they wrote to us).
    not_given, not_given_number = await _client_with_number(stack, practice, text_ok=False)
    answer = await stack.inbound(not_given_number, THURSDAY)
    assert answer.action == pb.INBOUND_ACTION_AUTO_REPLY
    assert (await stack.get_phone(owner, not_given)).state == pb.CONSENT_STATE_NOT_GIVEN


async def test_an_opt_out_in_the_clients_own_words_is_not_an_automatic_answer(stack):
    practice = await stack.people.practice()
    client, e164 = await _client_with_number(stack, practice)
    out = await stack.inbound(e164, "please stop texting me")
    assert (out.action, out.reply_text) == (pb.INBOUND_ACTION_OPTED_OUT, replies.opted_out(
        replies.Sender("Lakeside Counseling")))
    assert events(await stack.ledger(practice.owner, client))[2:] == ["free_text_revocation", "confirmation_sent"]


async def test_a_number_clients_share_gets_one_answer_recorded_for_each(stack):
    # A family in one practice: named, once, in both histories.
    practice = await stack.people.practice("Harbor Light Therapy")
    parent = await stack.people.user(practice, name="Morgan Lee")
    child = await stack.people.user(practice, name="Casey Lee")
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, parent, typed, True)
    await stack.set_phone(practice.owner, child, typed, False)
    family = await stack.inbound(e164, THURSDAY, "SM-family-1")
    assert (family.action, family.reply_text) == (
        pb.INBOUND_ACTION_AUTO_REPLY, replies.auto_reply(replies.Sender("Harbor Light Therapy")))
    for client in (parent, child):
        assert events(await stack.ledger(practice.owner, client))[-1] == "auto_reply_sent"
    assert (await stack.inbound(e164, "ok")).action == pb.INBOUND_ACTION_NONE

    # Clients of two practices: one answer in neutral wording (naming either would be a guess),
    # recorded for each client, and the day counts for the number.
    first, second = await stack.people.practice("Lakeside Counseling"), await stack.people.practice("Hillside")
    typed, e164 = new_phone()
    clients = [(first.owner, await stack.people.user(first)), (second.owner, await stack.people.user(second))]
    for owner, client in clients:
        await stack.set_phone(owner, client, typed, True)
    shared = await stack.inbound(e164, THURSDAY, "SM-shared-1")
    assert (shared.action, shared.reply_text) == (pb.INBOUND_ACTION_AUTO_REPLY, replies.auto_reply(replies.Sender()))
    assert "Lakeside" not in shared.reply_text and "Hillside" not in shared.reply_text
    for owner, client in clients:
        entry = (await stack.ledger(owner, client))[-1]
        assert (entry.event, entry.provider_message_id) == ("auto_reply_sent", "SM-shared-1")
    assert (await stack.inbound(e164, "thanks")).action == pb.INBOUND_ACTION_NONE


async def test_texts_arriving_together_get_one_answer(stack):
    practice = await stack.people.practice()
    client, e164 = await _client_with_number(stack, practice)
    answers = await asyncio.gather(*(stack.inbound(e164, f"message {n}") for n in range(5)))
    assert sorted(a.action for a in answers) == [pb.INBOUND_ACTION_NONE] * 4 + [pb.INBOUND_ACTION_AUTO_REPLY]
    assert sum(1 for a in answers if a.reply_text) == 1
    assert events(await stack.ledger(practice.owner, client)).count("auto_reply_sent") == 1


async def test_every_reply_names_the_practice_and_never_the_vendor(stack):
    practice = await stack.people.practice("Harbor Light Therapy")
    _, e164 = await _client_with_number(stack, practice)
    texts = {body: (await stack.inbound(e164, body)).reply_text for body in ("HELP", THURSDAY, "STOP", "START")}
    for body, text in texts.items():
        assert text.startswith("Harbor Light Therapy: "), body
        assert "confidant" not in text.lower(), body
    assert "Reply STOP to unsubscribe. Msg & data rates may apply." in texts["HELP"]
    assert "For help, contact your practice." in texts["HELP"]  # the setting: this practice gives no contact
    # Where no practice can be named, the wording is neutral, still without the vendor.
    _, stranger = new_phone()
    neutral = (await stack.inbound(stranger, "HELP")).reply_text
    assert neutral.startswith("Secure message alerts.") and "confidant" not in neutral.lower()


async def test_the_owner_finds_every_consent_change_about_a_client_in_the_audit_trail(stack):
    practice = await stack.people.practice()
    owner = practice.owner
    client, e164 = await _client_with_number(stack, practice)
    other, other_number = await _client_with_number(stack, practice, name="Riley Moss")
    await stack.inbound(e164, "STOP")
    await stack.inbound(e164, "START")
    await stack.inbound(e164, THURSDAY)
    await stack.inbound(e164, "HELP")
    typed, _ = new_phone()
    await stack.set_phone(owner, client, typed, False)
    await stack.inbound(other_number, "STOP")

    rows = await stack.audit_events(owner, client_id=client.user_id)
    assert [r.action for r in reversed(rows)] == [
        "consent.client_info_saved", "consent.stop_by_sms", "consent.start_by_sms", "consent.auto_reply_sent",
        "consent.help_by_sms", "consent.client_info_saved",
    ]
    assert all(r.target == client.user_id and r.service == "consent" for r in rows)
    # No phone number, no words of a text, in any row.
    for row in rows:
        assert e164 not in row.detail_json and "555" not in row.detail_json and "Thursday" not in row.detail_json
    # The other client's STOP is theirs alone; another practice's owner sees none of it.
    assert "consent.stop_by_sms" in [r.action for r in await stack.audit_events(owner, client_id=other.user_id)]
    stranger_owner = (await stack.people.practice("Hillside")).owner
    assert await stack.audit_events(stranger_owner, client_id=client.user_id) == []
    async with await psycopg.AsyncConnection.connect(stack.consent_url, autocommit=True) as conn:
        assert await verify_chain(conn)
    indexes = await stack.sql("SELECT indexdef FROM pg_indexes WHERE indexname = 'audit_events_practice_idx'")
    assert indexes and "(practice_id, event_id DESC)" in indexes[0][0]


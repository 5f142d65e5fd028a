"""NotifyService over real gRPC with real auth and consent services and real PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.config import ConfigError
from services.notify.config import NotifyConfig
from services.notify.render import MESSAGE_EMAIL_SUBJECT
from tests.consent.harness import new_phone, rpc_error
from tests.notify.conftest import PUBLIC_URL, in_production, notify_config, notify_service
from tests.runtime.production import production_env
from tests.support import channel, service_env, unique

CANARY = "CANARY-the-session-notes-say-xyzzy"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/m/([A-Za-z0-9_-]+)")


@pytest.fixture
async def office(stack):
    """A practice ("Lakeside Counseling", owner Dana Rivera) with one client."""
    practice = await stack.people.practice()
    client = await stack.people.user(practice, name="Jordan Lee")
    return practice, client


def conversation() -> str:
    return str(uuid.uuid4())


def expected_text(link: str) -> re.Pattern:
    """The whole alert; the link's end is shown in the practice's time zone when auth gives one."""
    return re.compile(re.escape(
        "Lakeside Counseling sent you a secure message.\n\n"
        f"View message: {link}\n\n"
        "This link lets you read and reply without signing in for 15 minutes"
    ) + r"(, until \d{1,2}:\d\d\xa0[AP]M\xa0\w+)?" + re.escape(
        ". After that, sign in to your Client Portal.\n\n"
        "Secure messages are not for emergencies. If you are in crisis or thinking about suicide, call or text 988"
        " (the Suicide & Crisis Lifeline). In an emergency, call 911.\n\n"
        "Sent by Lakeside Counseling\n"
        "This email was sent automatically; please do not reply to it.\n"
    ))


# -- email ---------------------------------------------------------------------------------


async def test_an_event_delivered_twice_gives_one_neutral_email(stack, office):
    practice, client = office
    event_id, conv = unique("event"), conversation()
    recipients = [(client.user_id, True), (practice.owner.user_id, False)]
    # The client's email and text, and the owner's delayed staff email.
    assert await stack.enqueue(practice.practice.practice_id, conv, recipients, event_id) == 3
    # messaging's outbox relays at least once: the same event again creates nothing.
    assert await stack.enqueue(practice.practice.practice_id, conv, recipients, event_id) == 0

    jobs = await stack.settled(client.user_id)
    assert ("message_email", "sent", "") in jobs
    emails = [item for item in await stack.mailbox(client.email) if item.channel == pb.CHANNEL_EMAIL]
    assert len(emails) == 1
    email = emails[0]
    assert email.to_address == client.email
    assert email.subject == MESSAGE_EMAIL_SUBJECT == "You have a new secure message"
    link = LINK.search(email.text_body)
    assert link is not None
    # The whole text is the neutral template: no message text, no clinician or client name.
    assert expected_text(link.group(0)).fullmatch(email.text_body), email.text_body
    assert f'href="{link.group(0)}"' in email.html_body
    assert "View message" in email.html_body and "15 minutes" in email.html_body
    for item_text in (email.subject, email.text_body, email.html_body):
        for secret in (CANARY, "Dana", "Rivera", "Jordan", client.user_id):
            assert secret not in item_text
    # The staff recipient's email waits for the unread delay (tests/notify/test_staff_unread.py).
    assert await stack.notify_sql(
        "SELECT kind, status FROM notification_jobs WHERE recipient_id = %s", (practice.owner.user_id,)
    ) == [("staff_unread_email", "pending")]


async def test_the_emailed_link_opens_a_messaging_session_once(stack, office):
    practice, client = office
    conv = conversation()
    await stack.enqueue(practice.practice.practice_id, conv, [(client.user_id, True)])
    await stack.settled(client.user_id)
    (email,) = [item for item in await stack.mailbox(client.email) if item.channel == pb.CHANNEL_EMAIL]
    token = LINK.search(email.text_body).group(1)
    web = stack.people.service("web")
    redeemed = await stack.people.auth.RedeemMagicLink(auth_pb.RedeemMagicLinkRequest(token=token), metadata=web,
                                                       timeout=5)
    assert redeemed.outcome == auth_pb.MAGIC_LINK_OUTCOME_REDEEMED
    assert redeemed.conversation_id == conv
    assert redeemed.user.user_id == client.user_id
    assert redeemed.session.kind == auth_pb.SESSION_KIND_MAGIC_LINK
    # The 15 minutes run from sending.
    remaining = redeemed.session.expires_at.seconds - time.time()
    assert 14 * 60 < remaining <= 15 * 60 + 5
    again = await stack.people.auth.RedeemMagicLink(auth_pb.RedeemMagicLinkRequest(token=token), metadata=web,
                                                    timeout=5)
    assert again.outcome == auth_pb.MAGIC_LINK_OUTCOME_ALREADY_USED


async def test_a_burst_of_messages_gives_one_email_per_conversation(stack, office):
    practice, client = office
    conv, other_conv = conversation(), conversation()
    for _ in range(3):
        assert await stack.enqueue(practice.practice.practice_id, conv, [(client.user_id, True)]) == 2
    await stack.enqueue(practice.practice.practice_id, other_conv, [(client.user_id, True)])
    jobs = await stack.settled(client.user_id)
    email_jobs = [status for kind, status, _ in jobs if kind == "message_email"]
    assert sorted(email_jobs) == ["coalesced", "coalesced", "sent", "sent"]
    emails = [item for item in await stack.mailbox(client.email) if item.channel == pb.CHANNEL_EMAIL]
    assert len(emails) == 2  # one for each conversation
    rows = await stack.notify_sql(
        "SELECT status FROM notification_jobs WHERE recipient_id = %s AND conversation_id = %s"
        " AND kind = 'message_email' ORDER BY job_id",
        (client.user_id, conv),
    )
    assert rows == [("sent",), ("coalesced",), ("coalesced",)]


# -- text messages ---------------------------------------------------------------------------


async def test_a_burst_to_a_client_without_consent_asks_consent_once(stack, office):
    """A skipped text still stands for its burst: the next message in the window adds no text job."""
    practice, client = office
    conv = conversation()
    await stack.enqueue(practice.practice.practice_id, conv, [(client.user_id, True)])
    assert ("message_sms", "skipped", "no consent") in await stack.settled(client.user_id)
    await stack.enqueue(practice.practice.practice_id, conv, [(client.user_id, True)])
    await stack.settled(client.user_id)
    rows = await stack.notify_sql(
        "SELECT status FROM notification_jobs WHERE recipient_id = %s AND conversation_id = %s"
        " AND kind = 'message_sms' ORDER BY job_id",
        (client.user_id, conv),
    )
    assert rows == [("skipped",), ("coalesced",)]


async def test_a_text_goes_only_to_a_number_with_consent(stack, office):
    practice, client = office
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, client, typed, True)
    await stack.enqueue(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    jobs = await stack.settled(client.user_id)
    assert ("message_sms", "sent", "") in jobs
    (text,) = await stack.mailbox(e164)
    assert text.channel == pb.CHANNEL_SMS
    assert text.text_body == (
        "Lakeside Counseling: you have a new secure message. Check your email to read it. Reply STOP to opt out."
    )
    assert text.subject == "" and text.html_body == ""

    # The client replies STOP: consent is asked right before the next text, so none goes.
    await stack.inbound(e164, "STOP")
    await stack.enqueue(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    jobs = await stack.settled(client.user_id)
    assert jobs[-1] == ("message_sms", "skipped", "no consent")
    assert len(await stack.mailbox(e164)) == 1


async def test_no_text_without_a_number_or_without_text_ok(stack, office):
    practice, client = office
    await stack.enqueue(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    jobs = await stack.settled(client.user_id)
    assert ("message_sms", "skipped", "no consent") in jobs
    assert ("message_email", "sent", "") in jobs

    other = await stack.people.user(practice, name="Alex Chen")
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, other, typed, False)
    await stack.enqueue(practice.practice.practice_id, conversation(), [(other.user_id, True)])
    assert ("message_sms", "skipped", "no consent") in await stack.settled(other.user_id)
    assert await stack.mailbox(e164) == []


async def test_consent_replies_are_texted_once_per_inbound_message(stack):
    _, e164 = new_phone()
    web = stack.people.service("web")
    request = pb.SendSmsReplyRequest(to_number=e164, body="You have been resubscribed.", in_reply_to=unique("SM"))
    assert (await stack.notify.SendSmsReply(request, metadata=web, timeout=5)).queued
    assert (await stack.notify.SendSmsReply(request, metadata=web, timeout=5)).queued
    await stack.settled(e164)
    (text,) = await stack.mailbox(e164)
    assert (text.channel, text.text_body) == (pb.CHANNEL_SMS, "You have been resubscribed.")


# -- the development mailbox ---------------------------------------------------------------


async def test_the_mailbox_lists_newest_first_and_pages(stack):
    _, e164 = new_phone()
    web = stack.people.service("web")
    for n in range(3):
        await stack.notify.SendSmsReply(pb.SendSmsReplyRequest(to_number=e164, body=f"reply {n}"), metadata=web,
                                        timeout=5)
    await stack.settled(e164)
    items = await stack.mailbox(e164)
    assert sorted(i.text_body for i in items) == ["reply 0", "reply 1", "reply 2"]
    assert [i.item_id for i in items] == sorted((i.item_id for i in items), reverse=True)
    assert len(await stack.mailbox(e164, page_size=2)) == 2
    assert len(await stack.mailbox(page_size=1000)) >= 3
    assert all(i.created_at.seconds > 0 for i in items)


async def test_the_mailbox_is_refused_in_production_mode(stack, fresh_database, keys_dir):
    url = await fresh_database("notify")
    config = in_production(notify_config(keys_dir, url, stack.auth_address, stack.consent_address))
    async with notify_service(config) as address, channel(address) as ch:
        err = await rpc_error(pb_grpc.NotifyServiceStub(ch).ListMailbox(
            pb.ListMailboxRequest(), metadata=stack.people.service("web"), timeout=5))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == "The development mailbox exists only in development mode."


def test_production_mode_without_a_real_transport_refuses_to_start(keys_dir, tmp_path):
    base = {"notify_database_url": "postgresql://unused"}
    with pytest.raises(ConfigError, match="Production mode needs an email and SMS transport"):
        NotifyConfig.load(production_env(tmp_path, **base))
    with pytest.raises(ConfigError, match="cannot be used in production"):
        NotifyConfig.load(production_env(tmp_path, notify_transport="mailbox", **base))
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        NotifyConfig.load(service_env(keys_dir, notify_database_url="postgresql://unused", public_url="example"))


# -- authorization and bad input ------------------------------------------------------------


async def test_only_messaging_enqueues_and_only_web_reads_the_mailbox(stack, office):
    practice, client = office
    request = pb.EnqueueMessageNotificationsRequest(
        event_id=unique("event"), practice_id=practice.practice.practice_id, conversation_id=conversation(),
        recipients=[pb.Recipient(user_id=client.user_id, is_client=True)],
    )
    for metadata in (stack.people.service("web"), stack.people.service("consent"), stack.people.as_user(client),
                     stack.people.as_user(practice.owner)):
        err = await rpc_error(stack.notify.EnqueueMessageNotifications(request, metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.notify.EnqueueMessageNotifications(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    for metadata in (stack.people.service("messaging"), stack.people.as_user(practice.owner)):
        err = await rpc_error(stack.notify.ListMailbox(pb.ListMailboxRequest(), metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(stack.notify.SendSmsReply(
            pb.SendSmsReplyRequest(to_number="+12125550199", body="hi"), metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.notify.ListMailbox(pb.ListMailboxRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await stack.notify_sql("SELECT 1 FROM notification_jobs WHERE event_id = %s", (request.event_id,)) == []


async def test_bad_input_is_refused(stack, office):
    practice, client = office
    messaging, web = stack.people.service("messaging"), stack.people.service("web")
    for missing in ("event_id", "practice_id", "conversation_id"):
        fields = {"event_id": "e", "practice_id": practice.practice.practice_id, "conversation_id": "c", missing: ""}
        err = await rpc_error(stack.notify.EnqueueMessageNotifications(
            pb.EnqueueMessageNotificationsRequest(**fields), metadata=messaging, timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert missing in err.details()
    for to_number, body in (("12", "hi"), ("+12125550199", ""), ("+12125550199", "x" * 1601)):
        err = await rpc_error(stack.notify.SendSmsReply(
            pb.SendSmsReplyRequest(to_number=to_number, body=body), metadata=web, timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(stack.notify.ListMailbox(pb.ListMailboxRequest(page_size=-1), metadata=web, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- failures and retries -------------------------------------------------------------------


async def test_an_unknown_recipient_fails_without_retrying(stack, office):
    practice, _ = office
    stranger = str(uuid.uuid4())
    await stack.enqueue(practice.practice.practice_id, conversation(), [(stranger, True)])
    jobs = await stack.settled(stranger)
    assert ("message_email", "failed", "recipient not found") in jobs
    assert ("message_sms", "skipped", "no consent") in jobs


async def test_an_unreachable_auth_is_retried_with_backoff_then_fails(stack, office, fresh_database, keys_dir):
    practice, client = office
    url = await fresh_database("notify")
    # Nothing listens on port 9 (discard): every call to "auth" fails as UNAVAILABLE.
    config = notify_config(
        keys_dir, url, "127.0.0.1:9", stack.consent_address,
        notify_max_attempts="3", notify_retry_base_seconds="0.1", notify_poll_interval_seconds="0.05",
    )
    async with notify_service(config) as address, channel(address) as ch:
        await pb_grpc.NotifyServiceStub(ch).EnqueueMessageNotifications(
            pb.EnqueueMessageNotificationsRequest(
                event_id=unique("event"), practice_id=practice.practice.practice_id, conversation_id=conversation(),
                recipients=[pb.Recipient(user_id=client.user_id, is_client=True)],
            ),
            metadata=stack.people.service("messaging"), timeout=5,
        )
        stack_for_this = dataclasses.replace(stack, notify_url=url)
        jobs = await stack_for_this.settled(client.user_id)
    rows = await stack_for_this.notify_sql(
        "SELECT status, attempts, last_error FROM notification_jobs WHERE kind = 'message_email'")
    assert rows == [("failed", 3, "rpc UNAVAILABLE")]
    assert ("message_sms", "skipped", "no consent") in jobs

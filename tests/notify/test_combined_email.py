"""One email instead of two (defect 9): a client's Client Portal invitation and their first message
alert within the window make one email that carries both, in either order.

Real auth and consent with notify on a ManualClock (``await clock.advance(...)`` returns once the
worker has handled every job then due), reading the development mailbox. The invitation reaches
notify as auth's outbox relay sends it (SendAccountNotice), the alert as messaging's does
(EnqueueMessageNotifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
from confidant.audit.v1 import audit_service_pb2 as audit_pb
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.clock import ManualClock
from services.notify.app import create_service
from services.notify.storage import HOLD_FOR_ALERT, HOLD_FOR_INVITATION, SENT_TOGETHER
from tests.notify.conftest import PUBLIC_URL, NotifyStack, notify_config
from tests.support import channel, running, unique

WINDOW = 60
MAGIC_LINK = f"{PUBLIC_URL}/m/"
CREDENTIAL_LINK = f"{PUBLIC_URL}/credentials/"


@dataclass
class Notify:
    """One notify service on a ManualClock, and what a test asks of it."""

    clock: ManualClock
    notify: pb_grpc.NotifyServiceStub
    audit: audit_grpc.AuditServiceStub
    url: str
    stack: NotifyStack

    async def invite(self, user: auth_pb.User) -> str:
        """What auth's relay sends for an invitation; returns the link's token."""
        token = secrets.token_urlsafe(32)
        await self.notify.SendAccountNotice(
            pb.SendAccountNoticeRequest(user_id=user.user_id, kind=pb.ACCOUNT_NOTICE_KIND_INVITATION,
                                        dedupe_key=unique("invitation"), link_token=token),
            metadata=self.stack.people.service("auth"), timeout=5,
        )
        return token

    async def alert(self, practice_id: str, client: auth_pb.User, conversation_id: str = "") -> str:
        """What messaging's relay sends for a staff message to the client, created now; returns its id."""
        created = Timestamp()
        created.FromDatetime(self.clock.now())
        message_id = unique("message")
        await self.notify.EnqueueMessageNotifications(
            pb.EnqueueMessageNotificationsRequest(
                event_id=unique("event"), practice_id=practice_id,
                conversation_id=conversation_id or str(uuid.uuid4()), message_id=message_id,
                sender_id="clinician", created_at=created,
                recipients=[pb.Recipient(user_id=client.user_id, is_client=True)],
            ),
            metadata=self.stack.people.service("messaging"), timeout=5,
        )
        return message_id

    async def emails(self, to: str) -> list[pb.MailboxItem]:
        reply = await self.notify.ListMailbox(
            pb.ListMailboxRequest(to_address=to), metadata=self.stack.people.service("web"), timeout=5)
        return [item for item in reply.items if item.channel == pb.CHANNEL_EMAIL]

    async def sql(self, query: str, params=()) -> list[tuple]:
        return await replace(self.stack, notify_url=self.url).notify_sql(query, params)

    async def jobs(self, client: auth_pb.User) -> list[tuple]:
        """(kind, status, last_error) of the client's email jobs, oldest first."""
        return await self.sql(
            "SELECT kind, status, last_error FROM notification_jobs WHERE recipient_id = %s AND channel = 'email'"
            " ORDER BY job_id", (client.user_id,))


@contextlib.asynccontextmanager
async def notify_on_a_clock(stack, fresh_database, keys_dir, **settings: str):
    clock = ManualClock()
    url = await fresh_database("notify")
    config = notify_config(keys_dir, url, stack.auth_address, stack.consent_address,
                           notify_invitation_hold_seconds=str(WINDOW), **settings)
    async with running(await create_service(config, clock=clock)) as address, channel(address) as ch:
        yield Notify(clock, pb_grpc.NotifyServiceStub(ch), audit_grpc.AuditServiceStub(ch), url, stack)


@pytest.fixture
async def notify(stack, fresh_database, keys_dir):
    async with notify_on_a_clock(stack, fresh_database, keys_dir) as notify:
        yield notify


@pytest.fixture
async def practice(stack):
    return await stack.people.practice()


async def client_without_password(stack, practice) -> auth_pb.User:
    client = await stack.people.user(practice, name="Alex Chen")
    assert not client.has_password
    return client


def assert_one_email_with_both_links(email: pb.MailboxItem, token: str) -> None:
    assert email.subject == "You have a new secure message"
    text = email.text_body
    assert "You have a secure message" in text and "Choose a password for your Client Portal" in text
    assert f"View message: {MAGIC_LINK}" in text
    assert f"Choose a password: {CREDENTIAL_LINK}{token}" in text
    assert f'href="{CREDENTIAL_LINK}{token}"' in email.html_body and f'href="{MAGIC_LINK}' in email.html_body
    assert "988" in text and "911" in text
    assert "Lakeside Counseling" in text and "Alex" not in text + email.html_body


async def test_an_invitation_then_an_alert_give_one_email(notify, practice, stack):
    client = await client_without_password(stack, practice)
    t = notify.clock.now()
    token = await notify.invite(client)
    await notify.clock.advance(0)
    # The invitation waits for an alert, at most the window.
    assert await notify.emails(client.email) == []
    assert await notify.sql("SELECT status, next_attempt_at, last_error, attempts FROM notification_jobs"
                            " WHERE recipient_id = %s", (client.user_id,)) == [
        ("pending", t + timedelta(seconds=WINDOW), HOLD_FOR_ALERT, 0)]

    await notify.clock.advance(20)  # the clinician writes the first message
    message_id = await notify.alert(practice.practice.practice_id, client)
    await notify.clock.advance(0)
    (email,) = await notify.emails(client.email)
    assert_one_email_with_both_links(email, token)
    # The alert is sent (delivery status says so); the invitation is settled as covered by it.
    assert await notify.jobs(client) == [
        ("account_notice", "coalesced", SENT_TOGETHER), ("message_email", "sent", "")]
    reply = await notify.notify.ListDeliveryStatus(
        pb.ListDeliveryStatusRequest(conversation_id=(await notify.sql(
            "SELECT conversation_id FROM notification_jobs WHERE message_id = %s", (message_id,)))[0][0]),
        metadata=stack.people.as_user(practice.owner), timeout=5)
    assert [(d.channel, d.state) for d in reply.deliveries if d.channel == pb.CHANNEL_EMAIL] == [
        (pb.CHANNEL_EMAIL, pb.DELIVERY_STATE_SENT)]
    # The link's token is kept nowhere once the email went.
    assert await notify.sql("SELECT count(*) FROM notification_jobs WHERE link_token = %s", (token,)) == [(0,)]

    # Nothing more comes when the window ends.
    await notify.clock.advance(WINDOW * 2)
    assert len(await notify.emails(client.email)) == 1


async def test_an_alert_then_an_invitation_give_one_email(notify, practice, stack):
    client = await client_without_password(stack, practice)
    t = notify.clock.now()
    await notify.alert(practice.practice.practice_id, client)
    await notify.clock.advance(0)
    # A first alert to a client with no password waits for the invitation that enabling them sends.
    assert await notify.emails(client.email) == []
    assert await notify.sql("SELECT status, next_attempt_at, last_error FROM notification_jobs"
                            " WHERE recipient_id = %s AND kind = 'message_email'", (client.user_id,)) == [
        ("pending", t + timedelta(seconds=WINDOW), HOLD_FOR_INVITATION)]
    conversation_id = (await notify.sql(
        "SELECT conversation_id FROM notification_jobs WHERE recipient_id = %s", (client.user_id,)))[0][0]
    reply = await notify.notify.ListDeliveryStatus(
        pb.ListDeliveryStatusRequest(conversation_id=conversation_id),
        metadata=stack.people.as_user(practice.owner), timeout=5)
    (waiting,) = [d for d in reply.deliveries if d.channel == pb.CHANNEL_EMAIL]
    assert (waiting.state, waiting.detail) == (
        pb.DELIVERY_STATE_QUEUED,
        "waiting a moment for the client's Client Portal invitation, to send both in one email")

    # A second message in the burst adds no email (the burst rule holds while the alert waits).
    await notify.clock.advance(10)
    await notify.alert(practice.practice.practice_id, client, conversation_id)
    await notify.clock.advance(25)
    token = await notify.invite(client)
    await notify.clock.advance(0)
    (email,) = await notify.emails(client.email)
    assert_one_email_with_both_links(email, token)
    assert await notify.jobs(client) == [
        ("message_email", "sent", ""), ("message_email", "coalesced", ""),
        ("account_notice", "coalesced", SENT_TOGETHER)]

    # Both rows of the trail are the practice's, about the client (the owner's client filter finds them).
    reply = await notify.audit.ListAuditEvents(
        audit_pb.ListAuditEventsRequest(client_id=client.user_id,
                                        actions=["notification.message_email", "notification.account_notice"]),
        metadata=stack.people.as_user(practice.owner), timeout=5)
    assert sorted((e.action, e.outcome) for e in reply.events) == [
        ("notification.account_notice", "coalesced"), ("notification.message_email", "sent")]
    await notify.clock.advance(WINDOW * 2)
    assert len(await notify.emails(client.email)) == 1


async def test_an_invitation_with_no_alert_goes_alone_when_the_window_ends(notify, practice, stack):
    client = await client_without_password(stack, practice)
    token = await notify.invite(client)
    await notify.clock.advance(WINDOW - 1)
    assert await notify.emails(client.email) == []
    await notify.clock.advance(1)
    (email,) = await notify.emails(client.email)
    assert email.subject == "Set up your Client Portal"
    assert f"Choose a password: {CREDENTIAL_LINK}{token}" in email.text_body and MAGIC_LINK not in email.text_body
    assert await notify.jobs(client) == [("account_notice", "sent", "")]

    # A later alert goes at once, by itself: the invitation has come and gone.
    await notify.alert(practice.practice.practice_id, client)
    await notify.clock.advance(0)
    emails = await notify.emails(client.email)
    assert [e.subject for e in emails] == ["You have a new secure message", "Set up your Client Portal"]
    assert CREDENTIAL_LINK not in emails[0].text_body


async def test_only_a_first_alert_to_a_client_with_no_password_waits_and_never_longer_than_the_window(
    notify, practice, stack
):
    client = await client_without_password(stack, practice)
    await notify.alert(practice.practice.practice_id, client)
    await notify.clock.advance(WINDOW - 1)
    assert await notify.emails(client.email) == []
    # No invitation came: the alert goes alone when the window ends.
    await notify.clock.advance(1)
    (email,) = await notify.emails(client.email)
    assert MAGIC_LINK in email.text_body and CREDENTIAL_LINK not in email.text_body
    # Their next alert (another conversation) does not wait.
    await notify.alert(practice.practice.practice_id, client)
    await notify.clock.advance(0)
    assert len(await notify.emails(client.email)) == 2

    # A client with a password expects no invitation: their first alert goes at once.
    created = await stack.people.auth.CreateUser(
        auth_pb.CreateUserRequest(practice_id=practice.practice.practice_id, role=auth_pb.ROLE_CLIENT,
                                  email=f"{unique('client')}@client.test", display_name="Jordan Lee",
                                  password="maple-window-77"),
        metadata=stack.people.service("web"), timeout=10)
    await notify.alert(practice.practice.practice_id, created.user)
    await notify.clock.advance(0)
    assert len(await notify.emails(created.user.email)) == 1

    # Staff invitations never wait: staff get no message alerts to join them.
    member = await stack.people.user(practice, role=auth_pb.ROLE_TEAM_MEMBER, name="Sam Okafor")
    await notify.invite(member)
    await notify.clock.advance(0)
    assert [e.subject for e in await notify.emails(member.email)] == ["You're invited to secure messaging"]


async def test_two_workers_send_each_client_one_email_for_both(stack, fresh_database, keys_dir, practice):
    """Two replicas share the queue (small batches, so a pair is often split between them): each
    client still gets one email, and every job is settled exactly once."""
    clients = [await client_without_password(stack, practice) for _ in range(12)]
    async with notify_on_a_clock(stack, fresh_database, keys_dir, notify_batch_size="3") as one:
        config = notify_config(keys_dir, one.url, stack.auth_address, stack.consent_address,
                               notify_invitation_hold_seconds=str(WINDOW), notify_batch_size="3")
        other_clock = ManualClock(one.clock.now())
        async with running(await create_service(config, clock=other_clock)):
            for client in clients:  # both arrive before either worker is asked to drain
                await asyncio.gather(one.invite(client), one.alert(practice.practice.practice_id, client))
            await asyncio.gather(one.clock.advance(0), other_clock.advance(0))
            await asyncio.gather(one.clock.advance(WINDOW), other_clock.advance(WINDOW))
            for client in clients:
                emails = await one.emails(client.email)
                assert len(emails) == 1, (client.user_id, [e.subject for e in emails])
                assert CREDENTIAL_LINK in emails[0].text_body and MAGIC_LINK in emails[0].text_body
                assert sorted(await one.jobs(client)) == [
                    ("account_notice", "coalesced", SENT_TOGETHER), ("message_email", "sent", "")]
            # One audit row per job: the alert sent, the invitation covered.
            audited = await one.sql(
                "SELECT action, outcome, count(*) FROM audit_events WHERE target = ANY(%s) AND action IN"
                " ('notification.message_email', 'notification.account_notice') GROUP BY 1, 2 ORDER BY 1",
                ([c.user_id for c in clients],))
            assert audited == [("notification.account_notice", "coalesced", len(clients)),
                               ("notification.message_email", "sent", len(clients))]

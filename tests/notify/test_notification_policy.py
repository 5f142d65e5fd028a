"""The notification policy under a controllable clock: client bursts, delayed staff emails.

Real auth, consent, messaging and notify in-process on real PostgreSQL. Each test's
notify runs on a ManualClock: ``await clock.advance(...)`` moves time and returns once
the worker has handled every job then due, so no test sleeps. Events reach notify
through EnqueueMessageNotifications, as messaging's outbox relay sends them; reads go
through messaging's MarkRead.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as messaging_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.clock import ManualClock
from services.common.config import ConfigError
from services.common.pgserver import free_port
from services.messaging.app import create_service as create_messaging
from services.messaging.config import MessagingConfig
from services.notify.app import create_service
from services.notify.config import NotifyConfig
from services.notify.render import STAFF_UNREAD_SUBJECT
from tests.messaging.harness import NO_NOTIFY, MessagingHarness, Team, messaging_service
from tests.notify.conftest import PUBLIC_URL, NotifyStack, notify_config
from tests.support import channel, running, service_env, unique

CANARY = "CANARY-the-session-notes-say-xyzzy"
DELAY = timedelta(minutes=15)


@dataclass
class Messaging:
    harness: MessagingHarness
    address: str
    url: str


@pytest.fixture(scope="module")
async def messaging(stack, fresh_database, keys_dir, tokens):
    async with (
        messaging_service(fresh_database, keys_dir, stack.auth_address) as (address, url),
        channel(address) as ch,
    ):
        yield Messaging(MessagingHarness(messaging_grpc.MessagingServiceStub(ch), stack.people.auth, tokens, url),
                        address, url)


@dataclass
class Policy:
    """One notify service on a ManualClock, and what a test asks of it."""

    clock: ManualClock
    notify: pb_grpc.NotifyServiceStub
    url: str
    stack: NotifyStack

    async def enqueue(self, practice_id: str, conversation_id: str, recipients, sender_id: str, seq: int = 0) -> int:
        """What messaging's relay sends for a message created now (by this clock)."""
        created = Timestamp()
        created.FromDatetime(self.clock.now())
        reply = await self.notify.EnqueueMessageNotifications(
            pb.EnqueueMessageNotificationsRequest(
                event_id=unique("event"), practice_id=practice_id, conversation_id=conversation_id,
                message_id=unique("message"), sender_id=sender_id, seq=seq, created_at=created,
                recipients=[pb.Recipient(user_id=user_id, is_client=is_client) for user_id, is_client in recipients],
            ),
            metadata=self.stack.people.service("messaging"), timeout=5,
        )
        return reply.jobs_created

    async def emails(self, to: str) -> list[pb.MailboxItem]:
        reply = await self.notify.ListMailbox(
            pb.ListMailboxRequest(to_address=to), metadata=self.stack.people.service("web"), timeout=5)
        return [item for item in reply.items if item.channel == pb.CHANNEL_EMAIL]

    async def jobs(self, recipient_id: str, kind: str = "staff_unread_email") -> list[tuple]:
        """(status, next_attempt_at, attempts, last_error) of the recipient's jobs of a kind, oldest first."""
        return await replace(self.stack, notify_url=self.url).notify_sql(
            "SELECT status, next_attempt_at, attempts, last_error FROM notification_jobs"
            " WHERE recipient_id = %s AND kind = %s ORDER BY job_id",
            (recipient_id, kind),
        )

    async def statuses(self, recipient_id: str, kind: str = "staff_unread_email") -> list[str]:
        return [row[0] for row in await self.jobs(recipient_id, kind)]


@contextlib.asynccontextmanager
async def policy_notify(stack, fresh_database, keys_dir, messaging_address: str, **settings: str):
    clock = ManualClock()
    url = await fresh_database("notify")
    config = notify_config(keys_dir, url, stack.auth_address, stack.consent_address,
                           messaging_addr=messaging_address, **settings)
    async with running(await create_service(config, clock=clock)) as address, channel(address) as ch:
        yield Policy(clock, pb_grpc.NotifyServiceStub(ch), url, stack)


@pytest.fixture
async def policy(stack, fresh_database, keys_dir, messaging):
    async with policy_notify(stack, fresh_database, keys_dir, messaging.address) as policy:
        yield policy


@pytest.fixture
async def team(messaging) -> Team:
    return await messaging.harness.team()


async def client_writes(messaging: Messaging, team: Team, conversation_id: str, body: str = CANARY) -> int:
    """The client sends a message (really, through messaging); returns its seq."""
    return (await messaging.harness.send(team.client, conversation_id, body)).message.seq


async def mark_read(messaging: Messaging, reader: auth_pb.User, conversation_id: str, seq: int) -> None:
    await messaging.harness.stub.MarkRead(
        messaging_pb.MarkReadRequest(conversation_id=conversation_id, read_seq=seq),
        metadata=messaging.harness.as_user(reader), timeout=5,
    )


# -- a burst of staff messages to a client -------------------------------------------------


async def test_a_burst_within_two_minutes_gives_the_client_one_email(policy, team):
    conv = str(uuid.uuid4())
    to_client = [(team.client.user_id, True)]
    for step in (0, 30, 60):  # t, t+30s, t+90s
        await policy.clock.advance(step)
        await policy.enqueue(team.practice_id, conv, to_client, sender_id=team.clinician.user_id)
        await policy.clock.advance(0)  # the worker handles what is due now
        assert len(await policy.emails(team.client.email)) == 1
    await policy.clock.advance(110)  # t+200s: the burst's window (from its first email) is over
    await policy.enqueue(team.practice_id, conv, to_client, sender_id=team.clinician.user_id)
    await policy.clock.advance(0)
    emails = await policy.emails(team.client.email)
    assert len(emails) == 2
    assert {e.subject for e in emails} == {"You have a new secure message"}
    assert await policy.statuses(team.client.user_id, "message_email") == ["sent", "coalesced", "coalesced", "sent"]


# -- a staff member's unread message ---------------------------------------------------------


async def test_an_unread_message_emails_staff_once_after_fifteen_minutes_then_at_most_hourly(
    policy, team, messaging
):
    conv = (await messaging.harness.client_conversation(team)).conversation_id
    clinician = team.clinician
    t = policy.clock.now()
    seq = await client_writes(messaging, team, conv)
    # The sender (the client) is never a recipient, even if named.
    await policy.enqueue(team.practice_id, conv, [(clinician.user_id, False), (team.client.user_id, True)],
                         sender_id=team.client.user_id, seq=seq)
    assert await policy.jobs(team.client.user_id, "message_email") == []

    await policy.clock.advance(minutes=14, seconds=59)
    assert await policy.emails(clinician.email) == []
    # Untouched: never claimed, still due at t + 15 min.
    assert await policy.jobs(clinician.user_id) == [("pending", t + DELAY, 0, "")]

    await policy.clock.advance(seconds=1)
    (email,) = await policy.emails(clinician.email)
    assert email.to_address == clinician.email
    assert email.subject == STAFF_UNREAD_SUBJECT == "You have an unread secure message"
    link = f"{PUBLIC_URL}/?conversation={conv}"
    assert email.text_body == (
        "You have an unread secure message at Lakeside Counseling.\n\n"
        f"Open the conversation: {link}\n\n"
        "For privacy, this email does not contain the message. Sign in to read it.\n\n"
        "Sent by Lakeside Counseling\n"
        "This email was sent automatically; please do not reply to it.\n"
    )
    assert f'href="{link}"' in email.html_body
    for text in (email.subject, email.text_body, email.html_body):
        for secret in (CANARY, "Jordan", "Lee", team.client.email, team.client.user_id):
            assert secret not in text
    assert await policy.statuses(clinician.user_id) == ["sent"]

    # A second message at t+20m: its 15 minutes end at t+35m, inside the hour after the first email.
    await policy.clock.advance(minutes=5)
    seq2 = await client_writes(messaging, team, conv, "second")
    await policy.enqueue(team.practice_id, conv, [(clinician.user_id, False)], sender_id=team.client.user_id,
                         seq=seq2)
    await policy.clock.advance(minutes=15)
    assert len(await policy.emails(clinician.email)) == 1
    # It waits for the window to reopen an hour after the first email (t+15m+60m).
    assert (await policy.jobs(clinician.user_id))[1][:3] == ("pending", t + DELAY + timedelta(hours=1), 0)
    await policy.clock.set(t + timedelta(minutes=74, seconds=59))
    assert len(await policy.emails(clinician.email)) == 1

    # Still unread when the hour is over: one more email.
    await policy.clock.advance(seconds=1)
    assert len(await policy.emails(clinician.email)) == 2
    assert await policy.statuses(clinician.user_id) == ["sent", "sent"]
    await policy.clock.advance(hours=3)
    assert len(await policy.emails(clinician.email)) == 2


async def test_reading_first_cancels_the_email(policy, team, messaging):
    conv = (await messaging.harness.client_conversation(team)).conversation_id
    seq = await client_writes(messaging, team, conv)
    await policy.enqueue(team.practice_id, conv, [(team.clinician.user_id, False)], sender_id=team.client.user_id,
                         seq=seq)
    await policy.clock.advance(minutes=10)
    await mark_read(messaging, team.clinician, conv, seq)
    await policy.clock.advance(minutes=5)
    assert await policy.emails(team.clinician.email) == []
    ((status, _, _, reason),) = await policy.jobs(team.clinician.user_id)
    assert (status, reason) == ("cancelled", "read")
    audited = await replace(policy.stack, notify_url=policy.url).notify_sql(
        "SELECT outcome FROM audit_events WHERE action = 'notification.staff_unread_email' AND target = %s",
        (team.clinician.user_id,))
    assert audited == [("cancelled",)]
    await policy.clock.advance(hours=2)
    assert await policy.emails(team.clinician.email) == []


async def test_messages_due_together_give_one_email_and_reading_the_first_still_emails_the_second(
    policy, team, messaging
):
    conv = (await messaging.harness.client_conversation(team)).conversation_id
    staff = [(team.clinician.user_id, False)]
    first = await client_writes(messaging, team, conv, "one")
    await policy.enqueue(team.practice_id, conv, staff, sender_id=team.client.user_id, seq=first)
    await mark_read(messaging, team.clinician, conv, first)
    await policy.clock.advance(seconds=10)
    second = await client_writes(messaging, team, conv, "two")
    await policy.enqueue(team.practice_id, conv, staff, sender_id=team.client.user_id, seq=second)
    await policy.clock.advance(seconds=10)
    third = await client_writes(messaging, team, conv, "three")
    await policy.enqueue(team.practice_id, conv, staff, sender_id=team.client.user_id, seq=third)

    # All three are due in the same batch: the read one is cancelled, the other two give one email.
    await policy.clock.advance(minutes=16)
    assert len(await policy.emails(team.clinician.email)) == 1
    assert await policy.statuses(team.clinician.user_id) == ["cancelled", "sent", "coalesced"]


async def test_an_unreachable_messaging_keeps_the_email_pending_until_it_answers(
    stack, fresh_database, keys_dir, messaging, team
):
    conv = (await messaging.harness.client_conversation(team)).conversation_id
    seq = await client_writes(messaging, team, conv)
    # notify asks a messaging replica that is not up yet.
    listen = f"127.0.0.1:{free_port()}"
    async with policy_notify(stack, fresh_database, keys_dir, listen, notify_max_attempts="1",
                             notify_retry_base_seconds="10", notify_retry_max_seconds="20") as policy:
        t = policy.clock.now()
        await policy.enqueue(team.practice_id, conv, [(team.clinician.user_id, False)],
                             sender_id=team.client.user_id, seq=seq)
        await policy.clock.advance(minutes=15)
        # Not sent blindly, not dropped (even past max_attempts): asked again with backoff.
        assert await policy.jobs(team.clinician.user_id) == [
            ("pending", t + DELAY + timedelta(seconds=10), 1, "rpc UNAVAILABLE")]
        await policy.clock.advance(seconds=10)
        assert await policy.jobs(team.clinician.user_id) == [
            ("pending", t + DELAY + timedelta(seconds=30), 2, "rpc UNAVAILABLE")]
        assert await policy.emails(team.clinician.email) == []

        env = service_env(keys_dir, messaging_database_url=messaging.url, auth_addr=stack.auth_address,
                          notify_addr=NO_NOTIFY)
        replica = await create_messaging(MessagingConfig.load(env))
        await replica.start(listen)
        try:
            deadline = time.monotonic() + 20
            while not await policy.emails(team.clinician.email):
                assert time.monotonic() < deadline, await policy.jobs(team.clinician.user_id)
                await policy.clock.advance(seconds=20)
        finally:
            await replica.stop()
        assert len(await policy.emails(team.clinician.email)) == 1
        assert await policy.statuses(team.clinician.user_id) == ["sent"]


# -- configuration ---------------------------------------------------------------------------


def test_the_staff_email_settings_have_their_defaults_and_are_checked(keys_dir):
    base = {"notify_database_url": "postgresql://unused"}
    config = NotifyConfig.load(service_env(keys_dir, **base))
    assert (config.staff_unread_delay_seconds, config.staff_email_interval_seconds) == (900, 3600)
    assert config.messaging_target == "127.0.0.1:9"  # the test default for a peer that is not started
    config = NotifyConfig.load(service_env(
        keys_dir, notify_staff_unread_delay_seconds="60", notify_staff_email_interval_seconds="0",
        messaging_addr="messaging:50052", **base))
    assert (config.staff_unread_delay_seconds, config.staff_email_interval_seconds) == (60, 0)
    assert config.messaging_target == "messaging:50052"
    with pytest.raises(ConfigError, match="NOTIFY_STAFF_UNREAD_DELAY_SECONDS must be greater than zero"):
        NotifyConfig.load(service_env(keys_dir, notify_staff_unread_delay_seconds="-1", **base))

"""Real auth, consent and notify services for this folder's integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.notify.app import create_service
from services.notify.config import NotifyConfig
from tests.consent.harness import ConsentStack, People, auth_service, consent_service
from tests.support import channel, running, service_env, unique

PUBLIC_URL = "https://confidant.example.test"


@dataclass
class NotifyStack(ConsentStack):
    notify: pb_grpc.NotifyServiceStub
    notify_url: str
    # For tests that start a second notify against the same auth and consent.
    auth_address: str
    consent_address: str

    async def notify_sql(self, query: str, params=()) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(self.notify_url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def enqueue(self, practice_id: str, conversation_id: str, recipients, event_id: str = "") -> int:
        created = Timestamp()
        created.GetCurrentTime()
        reply = await self.notify.EnqueueMessageNotifications(
            pb.EnqueueMessageNotificationsRequest(
                event_id=event_id or unique("event"), practice_id=practice_id, conversation_id=conversation_id,
                message_id=unique("message"), sender_id="sender",
                recipients=[pb.Recipient(user_id=user_id, is_client=is_client) for user_id, is_client in recipients],
                created_at=created,
            ),
            metadata=self.people.service("messaging"), timeout=5,
        )
        return reply.jobs_created

    async def settled(self, recipient_id: str, within: float = 10.0) -> list[tuple[str, str, str]]:
        """Wait until no job for the recipient is pending; return (kind, status, last_error) per job."""
        deadline = time.monotonic() + within
        while True:
            rows = await self.notify_sql(
                "SELECT kind, status, last_error FROM notification_jobs WHERE recipient_id = %s OR to_address = %s"
                " ORDER BY job_id",
                (recipient_id, recipient_id),
            )
            if rows and all(status != "pending" for _, status, _ in rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still pending after {within}s: {rows}")
            await asyncio.sleep(0.05)

    async def alert(self, practice_id: str, conversation_id: str, recipients, message_id: str = "") -> str:
        """What messaging's relay sends for one new message; returns the message id."""
        message_id = message_id or unique("message")
        created = Timestamp()
        created.GetCurrentTime()
        await self.notify.EnqueueMessageNotifications(
            pb.EnqueueMessageNotificationsRequest(
                event_id=unique("event"), practice_id=practice_id, conversation_id=conversation_id,
                message_id=message_id, sender_id="sender", created_at=created,
                recipients=[pb.Recipient(user_id=user_id, is_client=is_client) for user_id, is_client in recipients],
            ),
            metadata=self.people.service("messaging"), timeout=5,
        )
        return message_id

    async def deliveries(self, staff, conversation_id: str, message_ids=()) -> list[pb.Delivery]:
        reply = await self.notify.ListDeliveryStatus(
            pb.ListDeliveryStatusRequest(conversation_id=conversation_id, message_ids=list(message_ids)),
            metadata=self.people.as_user(staff), timeout=5,
        )
        return list(reply.deliveries)

    async def feedback(self, kind: int, provider_message_id: str = "", addresses=(), permanent: bool = True,
                       feedback_id: str = "") -> int:
        reply = await self.notify.RecordDeliveryFeedback(
            pb.RecordDeliveryFeedbackRequest(
                feedback_id=feedback_id or unique("sns"), kind=kind, provider_message_id=provider_message_id,
                addresses=list(addresses), permanent=permanent,
            ),
            metadata=self.people.service("web"), timeout=5,
        )
        return reply.suppressed

    async def job(self, recipient_id: str, kind: str = "message_email", message_id: str = "") -> dict:
        """The recipient's first job of a kind (about ``message_id`` when given), as a dict of its columns."""
        async with await psycopg.AsyncConnection.connect(self.notify_url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT * FROM notification_jobs WHERE recipient_id = %s AND kind = %s"
                " AND (%s = '' OR message_id = %s) ORDER BY job_id LIMIT 1",
                (recipient_id, kind, message_id, message_id))
            row = await cur.fetchone()
            assert row is not None, f"no {kind} job"
            return dict(zip([c.name for c in cur.description], row, strict=True))

    def on(self, notify: pb_grpc.NotifyServiceStub, notify_url: str) -> NotifyStack:
        """The same people and services, talking to another notify."""
        return replace(self, notify=notify, notify_url=notify_url)

    async def mailbox(self, to_address: str = "", page_size: int = 0) -> list[pb.MailboxItem]:
        reply = await self.notify.ListMailbox(
            pb.ListMailboxRequest(to_address=to_address, page_size=page_size),
            metadata=self.people.service("web"), timeout=5,
        )
        return list(reply.items)


def notify_config(keys_dir, url: str, auth_address: str, consent_address: str, **settings) -> NotifyConfig:
    # These tests' clients have no password and most stacks here relay no invitation from auth, so a
    # client's first alert would wait the whole window for one: alerts go at once unless a test
    # (test_combined_email.py) sets the window.
    settings.setdefault("notify_invitation_hold_seconds", "0")
    env = service_env(
        keys_dir, notify_database_url=url, auth_addr=auth_address, consent_addr=consent_address,
        public_url=PUBLIC_URL, **settings,
    )
    return NotifyConfig.load(env)


@contextlib.asynccontextmanager
async def notify_service(config: NotifyConfig) -> AsyncIterator[str]:
    async with running(await create_service(config)) as address:
        yield address


def in_production(config: NotifyConfig) -> NotifyConfig:
    """The same configuration in production mode (NotifyConfig.load refuses one without SES/SNS)."""
    return replace(config, common=replace(config.common, mode="production"))


@pytest.fixture(scope="module")
async def stack(fresh_database, keys_dir, tokens):
    async with contextlib.AsyncExitStack() as stack:
        auth_address = await stack.enter_async_context(auth_service(fresh_database, keys_dir))
        consent_address, consent_url = await stack.enter_async_context(
            consent_service(fresh_database, keys_dir, auth_address))
        notify_url = await fresh_database("notify")
        notify_address = await stack.enter_async_context(
            notify_service(notify_config(keys_dir, notify_url, auth_address, consent_address)))
        auth_ch = await stack.enter_async_context(channel(auth_address))
        consent_ch = await stack.enter_async_context(channel(consent_address))
        notify_ch = await stack.enter_async_context(channel(notify_address))
        yield NotifyStack(
            people=People(auth_grpc.AuthServiceStub(auth_ch), tokens),
            consent=consent_grpc.ConsentServiceStub(consent_ch),
            consent_url=consent_url,
            notify=pb_grpc.NotifyServiceStub(notify_ch),
            notify_url=notify_url,
            auth_address=auth_address,
            consent_address=consent_address,
        )

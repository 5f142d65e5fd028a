"""The lock email: auth locks an account and its owner gets exactly one email through notify.

Real auth, consent and notify in-process, each with its own database. auth must
know notify's address before it starts and notify auth's, so notify listens on
a port reserved up front.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.notify.app import create_service as create_notify
from services.notify.render import ACCOUNT_LOCKED_SUBJECT
from tests.consent.harness import PASSWORD, People, consent_service, rpc_error
from tests.notify.conftest import notify_config
from tests.support import channel, running, service_env, unique

# The answer while an account (or an unknown email) is locked: from the failure that locks it on.
TOO_MANY = "Too many sign-in attempts. Try again in 15 minutes, or choose a new password now with “Forgot password?”."
ADDRESS = "203.0.113.50"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LockStack:
    people: People
    notify: pb_grpc.NotifyServiceStub
    auth_url: str
    notify_url: str

    async def sql(self, url: str, query: str, params=()) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def sign_in(self, email: str, password: str):
        return await self.people.auth.SignIn(
            auth_pb.SignInRequest(email=email, password=password, client_address=ADDRESS),
            metadata=self.people.service("web"), timeout=10,
        )

    async def mailbox(self, to: str) -> list[pb.MailboxItem]:
        reply = await self.notify.ListMailbox(
            pb.ListMailboxRequest(to_address=to), metadata=self.people.service("web"), timeout=5
        )
        return list(reply.items)

    async def emails_when_settled(self, to: str, count: int, within: float = 10.0) -> list[pb.MailboxItem]:
        """Wait until ``count`` emails reached ``to`` and nothing is left to relay or deliver."""
        deadline = time.monotonic() + within
        while True:
            items = await self.mailbox(to)
            unsent = await self.sql(self.auth_url, "SELECT count(*) FROM account_notices WHERE sent_at IS NULL")
            pending = await self.sql(
                self.notify_url, "SELECT count(*) FROM notification_jobs WHERE status = 'pending'"
            )
            if len(items) >= count and unsent == [(0,)] and pending == [(0,)]:
                return items
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(items)} emails, unsent {unsent}, pending {pending} after {within}s")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def stack(fresh_database, keys_dir, tokens):
    notify_port = free_port()
    auth_url = await fresh_database("auth")
    auth_env = service_env(
        keys_dir, auth_database_url=auth_url, notify_addr=f"127.0.0.1:{notify_port}",
        sign_in_delay_after_failures="3", sign_in_lock_after_failures="3",
    )
    async with contextlib.AsyncExitStack() as stack:
        auth_address = await stack.enter_async_context(running(await create_auth(AuthConfig.load(auth_env))))
        consent_address, _ = await stack.enter_async_context(consent_service(fresh_database, keys_dir, auth_address))
        notify_url = await fresh_database("notify")
        notify = await create_notify(notify_config(keys_dir, notify_url, auth_address, consent_address))
        await notify.start(f"127.0.0.1:{notify_port}")
        stack.push_async_callback(notify.stop)
        auth_ch = await stack.enter_async_context(channel(auth_address))
        notify_ch = await stack.enter_async_context(channel(f"127.0.0.1:{notify_port}"))
        yield LockStack(
            People(auth_grpc.AuthServiceStub(auth_ch), tokens), pb_grpc.NotifyServiceStub(notify_ch),
            auth_url, notify_url,
        )


async def lock(stack: LockStack, email: str) -> None:
    for attempt in range(3):
        err = await rpc_error(stack.sign_in(email, "not-the-password-at-all"))
        assert err.code() == (grpc.StatusCode.UNAUTHENTICATED if attempt < 2 else grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_a_lock_emails_the_owner_once_without_phi(stack):
    practice = await stack.people.practice()
    owner = practice.owner
    await lock(stack, owner.email)
    # While locked, more attempts (right or wrong) add no email.
    for password in (PASSWORD, "still-not-the-password"):
        err = await rpc_error(stack.sign_in(owner.email, password))
        assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)

    [email] = await stack.emails_when_settled(owner.email, 1)
    assert email.channel == pb.CHANNEL_EMAIL and email.to_address == owner.email
    assert email.subject == ACCOUNT_LOCKED_SUBJECT == "Your account was locked"
    # The practice is named (defect 16: emails named the vendor), never in the subject.
    assert email.text_body == (
        "Sign-in to your Lakeside Counseling account was locked for 15 minutes after repeated failed sign-in"
        " attempts.\n\n"
        "If this was you, wait 15 minutes and try again.\n\n"
        "If it wasn't you, someone may be trying to guess your password: choose a new password once you are"
        " signed in.\n\n"
        "Sent by Lakeside Counseling\n"
        "This email was sent automatically; please do not reply to it.\n"
    )
    assert "locked for 15 minutes" in email.html_body and "Lakeside Counseling" in email.html_body
    for text in (email.subject, email.text_body, email.html_body):
        assert "Confidant" not in text
        for secret in ("Dana", "Rivera", owner.user_id, practice.practice.practice_id, ADDRESS):
            assert secret not in text
    [(relayed,)] = await stack.sql(
        stack.auth_url, "SELECT count(*) FROM account_notices WHERE user_id = %s AND sent_at IS NOT NULL",
        (owner.user_id,),
    )
    assert relayed == 1
    [(status, audited)] = await stack.sql(
        stack.notify_url,
        "SELECT j.status, (SELECT count(*) FROM audit_events a WHERE a.action = 'notification.account_notice'"
        " AND a.target = j.recipient_id) FROM notification_jobs j WHERE j.recipient_id = %s",
        (owner.user_id,),
    )
    assert (status, audited) == ("sent", 1)
    # auth's notice names only the user: the audit row carries their practice, for the owner's trail.
    assert await stack.sql(
        stack.notify_url, "SELECT practice_id FROM audit_events WHERE action = 'notification.account_notice'"
        " AND target = %s", (owner.user_id,)) == [(practice.practice.practice_id,)]

    # The lock ends (its stored end moved into the past); failing again locks again: one more email.
    await stack.sql(stack.auth_url, "UPDATE sign_in_throttle SET blocked_until = now() - interval '1 second'")
    err = await rpc_error(stack.sign_in(owner.email, "not-the-password-at-all"))
    assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)
    assert len(await stack.emails_when_settled(owner.email, 2)) == 2


async def test_an_unknown_email_locks_without_any_email(stack):
    nobody = f"{unique('nobody')}@lakeside.test"
    await lock(stack, nobody)
    err = await rpc_error(stack.sign_in(nobody, PASSWORD))
    assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)
    assert await stack.mailbox(nobody) == []


async def test_send_account_notice_is_for_auth_only_and_deduplicated(stack):
    practice = await stack.people.practice()
    user_id = practice.owner.user_id

    def request(**fields):
        values = {"user_id": user_id, "kind": pb.ACCOUNT_NOTICE_KIND_LOCKED, "dedupe_key": unique("key")}
        return pb.SendAccountNoticeRequest(**{**values, **fields})

    for caller in ("web", "messaging"):
        err = await rpc_error(stack.notify.SendAccountNotice(request(), metadata=stack.people.service(caller), timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.notify.SendAccountNotice(request(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    as_auth = stack.people.service("auth")
    for bad in (
        {"user_id": "not-an-id"},
        {"kind": pb.ACCOUNT_NOTICE_KIND_UNSPECIFIED},
        {"dedupe_key": ""},
        {"dedupe_key": "k" * 201},
        {"lock_minutes": -1},
    ):
        err = await rpc_error(stack.notify.SendAccountNotice(request(**bad), metadata=as_auth, timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad

    key = unique("key")
    for _ in range(3):
        reply = await stack.notify.SendAccountNotice(request(dedupe_key=key), metadata=as_auth, timeout=5)
        assert reply.queued
    assert len(await stack.emails_when_settled(practice.owner.email, 1)) == 1
    # An unknown user fails permanently and sends nothing.
    stranger = str(uuid.uuid4())
    await stack.notify.SendAccountNotice(request(user_id=stranger), metadata=as_auth, timeout=5)
    deadline = time.monotonic() + 10
    while (rows := await stack.sql(
        stack.notify_url, "SELECT status, last_error FROM notification_jobs WHERE recipient_id = %s", (stranger,)
    )) != [("failed", "recipient not found")]:
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)

"""Invitation and password-reset emails: auth -> outbox -> notify -> mailbox, with the link and no PHI.

Real auth, consent, notify and messaging in-process, each with its own database.
auth must know notify's address before it starts, so notify listens on a port
reserved up front (as in test_account_notices.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.notify.app import create_service as create_notify
from tests.consent.harness import People, consent_service, rpc_error
from tests.messaging.harness import messaging_service
from tests.notify.conftest import PUBLIC_URL, notify_config
from tests.notify.test_account_notices import free_port
from tests.support import channel, running, service_env, unique

ADDRESS = "203.0.113.60"
LINK_PREFIX = f"{PUBLIC_URL}/credentials/"


@dataclass
class CredStack:
    people: People
    notify: pb_grpc.NotifyServiceStub
    messaging: msg_grpc.MessagingServiceStub
    auth_url: str
    notify_url: str

    async def sql(self, url: str, query: str, params=()) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def mailbox(self, to: str) -> list[pb.MailboxItem]:
        reply = await self.notify.ListMailbox(
            pb.ListMailboxRequest(to_address=to), metadata=self.people.service("web"), timeout=5
        )
        return list(reply.items)

    async def emails_when_settled(self, to: str, count: int, within: float = 10.0) -> list[pb.MailboxItem]:
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
    auth_env = service_env(keys_dir, auth_database_url=auth_url, notify_addr=f"127.0.0.1:{notify_port}",
                           sign_in_address_limit="1000")
    async with contextlib.AsyncExitStack() as stack:
        auth_address = await stack.enter_async_context(running(await create_auth(AuthConfig.load(auth_env))))
        consent_address, _ = await stack.enter_async_context(consent_service(fresh_database, keys_dir, auth_address))
        notify_url = await fresh_database("notify")
        notify = await create_notify(notify_config(keys_dir, notify_url, auth_address, consent_address))
        await notify.start(f"127.0.0.1:{notify_port}")
        stack.push_async_callback(notify.stop)
        messaging_address, _ = await stack.enter_async_context(
            messaging_service(fresh_database, keys_dir, auth_address, notify_address=f"127.0.0.1:{notify_port}")
        )
        auth_ch = await stack.enter_async_context(channel(auth_address))
        notify_ch = await stack.enter_async_context(channel(f"127.0.0.1:{notify_port}"))
        messaging_ch = await stack.enter_async_context(channel(messaging_address))
        yield CredStack(
            People(auth_grpc.AuthServiceStub(auth_ch), tokens), pb_grpc.NotifyServiceStub(notify_ch),
            msg_grpc.MessagingServiceStub(messaging_ch), auth_url, notify_url,
        )


def link_in(email: pb.MailboxItem) -> str:
    start = email.text_body.index(LINK_PREFIX)
    return email.text_body[start:].split()[0]


async def user(stack: CredStack, practice_id: str, role: int, name: str) -> auth_pb.User:
    reply = await stack.people.auth.CreateUser(
        auth_pb.CreateUserRequest(practice_id=practice_id, role=role, email=f"{unique('person')}@example.test",
                                  display_name=name),
        metadata=stack.people.service("web"), timeout=10,
    )
    return reply.user


async def assert_no_phi_and_no_stored_token(stack: CredStack, email: pb.MailboxItem, token: str, *secrets: str):
    for text in (email.subject, email.text_body, email.html_body):
        for secret in secrets:
            assert secret not in text, secret
    # The link's token is kept nowhere once the email went out: auth stores its hash only,
    # the outbox row and notify's job forget it.
    assert await stack.sql(stack.auth_url, "SELECT count(*) FROM account_notices WHERE link_token = %s",
                           (token,)) == [(0,)]
    assert await stack.sql(stack.notify_url, "SELECT count(*) FROM notification_jobs WHERE link_token = %s",
                           (token,)) == [(0,)]
    [(stored,)] = await stack.sql(
        stack.auth_url, "SELECT count(*) FROM credential_links WHERE token_hash = %s",
        (hashlib.sha256(token.encode()).digest(),),
    )
    assert stored == 1


async def test_client_invitation_email_carries_the_link_and_no_phi(stack):
    practice = await stack.people.practice()
    client = await user(stack, practice.practice.practice_id, auth_pb.ROLE_CLIENT, "Alex Chen")
    await stack.people.auth.InviteUser(auth_pb.InviteUserRequest(user_id=client.user_id),
                                       metadata=stack.people.service("web"), timeout=10)
    [email] = await stack.emails_when_settled(client.email, 1)
    assert email.subject == "Set up your Client Portal"
    link = link_in(email)
    token = link.removeprefix(LINK_PREFIX)
    assert len(token) >= 43 and link in email.html_body
    assert "Lakeside Counseling" in email.text_body
    assert "24 hours" in email.text_body
    await assert_no_phi_and_no_stored_token(
        stack, email, token, "Alex", "Chen", client.user_id, practice.owner.display_name
    )
    # The link works (the web edge would POST it): the password is set once.
    reply = await stack.people.auth.SetPasswordWithLink(
        auth_pb.SetPasswordWithLinkRequest(token=token, new_password="amber-tide-lantern-41", client_address=ADDRESS),
        metadata=stack.people.service("web"), timeout=20,
    )
    assert reply.user.user_id == client.user_id


async def test_staff_invitation_and_reset_emails(stack):
    practice = await stack.people.practice()
    owner = practice.owner
    member = await user(stack, practice.practice.practice_id, auth_pb.ROLE_TEAM_MEMBER, "Sam Okafor")
    await stack.people.auth.InviteUser(auth_pb.InviteUserRequest(user_id=member.user_id),
                                       metadata=stack.people.as_user(owner), timeout=10)
    [invitation] = await stack.emails_when_settled(member.email, 1)
    assert invitation.subject == "You're invited to secure messaging"
    assert "Lakeside Counseling invites you" in invitation.text_body
    await assert_no_phi_and_no_stored_token(
        stack, invitation, link_in(invitation).removeprefix(LINK_PREFIX), "Sam", "Okafor", member.user_id
    )

    await stack.people.auth.RequestPasswordReset(
        auth_pb.RequestPasswordResetRequest(email=owner.email, client_address=ADDRESS),
        metadata=stack.people.service("web"), timeout=10,
    )
    [reset] = await stack.emails_when_settled(owner.email, 1)
    assert reset.subject == "Reset your password"
    assert "1 hour" in reset.text_body and "Lakeside Counseling" in reset.text_body
    await assert_no_phi_and_no_stored_token(
        stack, reset, link_in(reset).removeprefix(LINK_PREFIX), "Dana", "Rivera", owner.user_id, ADDRESS
    )


async def test_link_notices_need_their_token(stack):
    practice = await stack.people.practice()
    for kind in (pb.ACCOUNT_NOTICE_KIND_INVITATION, pb.ACCOUNT_NOTICE_KIND_PASSWORD_RESET):
        for bad in ("", "has spaces", "x" * 300):
            err = await rpc_error(stack.notify.SendAccountNotice(
                pb.SendAccountNoticeRequest(user_id=practice.owner.user_id, kind=kind, dedupe_key=unique("k"),
                                            link_token=bad),
                metadata=stack.people.service("auth"), timeout=5,
            ))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_enabling_a_client_without_a_password_sends_one_invitation(stack):
    """Messaging -> auth.InviteUser -> outbox -> notify: exactly one email, and none for a client with a password."""
    practice = await stack.people.practice()
    practice_id = practice.practice.practice_id
    clinician = await user(stack, practice_id, auth_pb.ROLE_CLINICIAN, "Riley Park")
    client = await user(stack, practice_id, auth_pb.ROLE_CLIENT, "Alex Chen")
    as_clinician = stack.people.as_user(clinician)
    for _ in range(3):  # enabling again changes nothing and invites nobody again
        reply = await stack.messaging.EnableClientMessaging(
            msg_pb.EnableClientMessagingRequest(client_id=client.user_id), metadata=as_clinician, timeout=10
        )
        assert reply.enabled
    [email] = await stack.emails_when_settled(client.email, 1)
    assert email.subject == "Set up your Client Portal"
    [(invitations,)] = await stack.sql(
        stack.auth_url, "SELECT count(*) FROM account_notices WHERE user_id = %s", (client.user_id,)
    )
    assert invitations == 1

    # A client who already has a password gets no invitation.
    with_password = await stack.people.auth.CreateUser(
        auth_pb.CreateUserRequest(practice_id=practice_id, role=auth_pb.ROLE_CLIENT,
                                  email=f"{unique('client')}@example.test", display_name="Jordan Lee",
                                  password="maple-window-77"),
        metadata=stack.people.service("web"), timeout=10,
    )
    await stack.messaging.EnableClientMessaging(
        msg_pb.EnableClientMessagingRequest(client_id=with_password.user.user_id), metadata=as_clinician, timeout=10
    )
    assert await stack.emails_when_settled(with_password.user.email, 0) == []

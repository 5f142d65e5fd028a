"""Drives a messaging service under test: a real auth for the people, direct SQL to inspect storage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.messaging.app import create_service as create_messaging
from services.messaging.config import MessagingConfig
from tests.support import Tokens, running, service_env, unique

PASSWORD = "quiet-harbor-2026"
# Nothing listens here: the outbox relay's calls fail fast and are retried later.
NO_NOTIFY = "127.0.0.1:9"


@contextlib.asynccontextmanager
async def auth_service(fresh_database, keys_dir) -> AsyncIterator[str]:
    url = await fresh_database("auth")
    service = await create_auth(AuthConfig.load(service_env(keys_dir, auth_database_url=url)))
    async with running(service) as address:
        yield address


@contextlib.asynccontextmanager
async def messaging_service(
    fresh_database,
    keys_dir,
    auth_address: str,
    notify_address: str = NO_NOTIFY,
    database_url: str = "",
    grace_seconds: float = 10.0,
    **settings: str,
) -> AsyncIterator[tuple[str, str]]:
    """A messaging service on an ephemeral port with a fresh database: (address, database url)."""
    url = database_url or await fresh_database("messaging")
    env = service_env(
        keys_dir, messaging_database_url=url, auth_addr=auth_address, notify_addr=notify_address, **settings
    )
    service = await create_messaging(MessagingConfig.load(env))
    service.grace_seconds = grace_seconds
    async with running(service) as address:
        yield address, url


@dataclass
class Team:
    """A practice and its people (auth's User protos)."""

    practice_id: str
    owner: auth_pb.User
    clinician: auth_pb.User
    team_member: auth_pb.User
    client: auth_pb.User
    other_client: auth_pb.User


@dataclass
class MessagingHarness:
    stub: pb_grpc.MessagingServiceStub
    auth: auth_grpc.AuthServiceStub
    tokens: Tokens
    database_url: str
    # Messaging's audit trail as the practice owner reads it (confidant.audit.v1).
    audit: audit_grpc.AuditServiceStub | None = None

    # -- who is calling ----------------------------------------------------------------

    def as_user(self, user: auth_pb.User, session_kind: str = "full", conversation_id: str = ""):
        role = auth_pb.Role.Name(user.role).removeprefix("ROLE_").lower()
        return self.tokens.metadata(
            self.tokens.user(user.user_id, user.practice_id, role, session_kind, conversation_id)
        )

    def as_service(self, name: str):
        return self.tokens.metadata(self.tokens.service(name))

    # -- people, through auth's own RPCs -----------------------------------------------

    async def user(self, practice_id: str, role: int, name: str) -> auth_pb.User:
        reply = await self.auth.CreateUser(
            auth_pb.CreateUserRequest(
                practice_id=practice_id,
                role=role,
                email=f"{unique('person')}@example.test",
                display_name=name,
            ),
            metadata=self.as_service("web"),
            timeout=10,
        )
        return reply.user

    async def team(self) -> Team:
        created = await self.auth.CreatePractice(
            auth_pb.CreatePracticeRequest(
                name="Lakeside Counseling",
                owner_email=f"{unique('owner')}@lakeside.test",
                owner_display_name="Dana Rivera",
                owner_password=PASSWORD,
            ),
            metadata=self.as_service("web"),
            timeout=10,
        )
        practice_id = created.practice.practice_id
        return Team(
            practice_id=practice_id,
            owner=created.owner,
            clinician=await self.user(practice_id, auth_pb.ROLE_CLINICIAN, "Riley Park"),
            team_member=await self.user(practice_id, auth_pb.ROLE_TEAM_MEMBER, "Sam Okafor"),
            client=await self.user(practice_id, auth_pb.ROLE_CLIENT, "Jordan Lee"),
            other_client=await self.user(practice_id, auth_pb.ROLE_CLIENT, "Alex Chen"),
        )

    # -- messaging ---------------------------------------------------------------------

    async def enable(self, staff: auth_pb.User, client: auth_pb.User) -> None:
        await self.stub.EnableClientMessaging(
            pb.EnableClientMessagingRequest(client_id=client.user_id), metadata=self.as_user(staff), timeout=5
        )

    async def open(self, staff: auth_pb.User, *others: auth_pb.User) -> pb.Conversation:
        reply = await self.stub.OpenConversation(
            pb.OpenConversationRequest(participant_ids=[o.user_id for o in others]),
            metadata=self.as_user(staff),
            timeout=5,
        )
        return reply.conversation

    async def client_conversation(self, team: Team) -> pb.Conversation:
        """The clinician's conversation with the (enabled) client."""
        await self.enable(team.clinician, team.client)
        return await self.open(team.clinician, team.client)

    async def send(
        self, sender: auth_pb.User, conversation_id: str, body: str, key: str = "", metadata=None
    ) -> pb.SendMessageResponse:
        return await self.stub.SendMessage(
            pb.SendMessageRequest(
                conversation_id=conversation_id, body=body, idempotency_key=key or unique("send")
            ),
            metadata=metadata or self.as_user(sender),
            timeout=5,
        )

    async def send_to(
        self, sender: auth_pb.User, others, body: str, key: str = "", metadata=None
    ) -> pb.SendMessageResponse:
        """Send to the sender's conversation with ``others`` (users or ids), created by this message
        when there is none."""
        return await self.stub.SendMessage(
            pb.SendMessageRequest(
                participant_ids=[o if isinstance(o, str) else o.user_id for o in others],
                body=body,
                idempotency_key=key or unique("send"),
            ),
            metadata=metadata or self.as_user(sender),
            timeout=5,
        )

    async def find(self, caller: auth_pb.User, others, metadata=None) -> pb.FindConversationResponse:
        return await self.stub.FindConversation(
            pb.FindConversationRequest(participant_ids=[o if isinstance(o, str) else o.user_id for o in others]),
            metadata=metadata or self.as_user(caller),
            timeout=5,
        )

    async def listed(self, person: auth_pb.User, metadata=None) -> list[pb.Conversation]:
        """The first page of the person's (unarchived) conversations."""
        reply = await self.stub.ListConversations(
            pb.ListConversationsRequest(page_size=100), metadata=metadata or self.as_user(person), timeout=5
        )
        return list(reply.conversations)

    async def messages(
        self, reader: auth_pb.User, conversation_id: str, after_seq: int = 0, page_size: int = 0
    ):
        reply = await self.stub.ListMessages(
            pb.ListMessagesRequest(conversation_id=conversation_id, after_seq=after_seq, page_size=page_size),
            metadata=self.as_user(reader),
            timeout=5,
        )
        return list(reply.messages)

    async def unread(self, user: auth_pb.User) -> pb.GetUnreadSummaryResponse:
        return await self.stub.GetUnreadSummary(
            pb.GetUnreadSummaryRequest(), metadata=self.as_user(user), timeout=5
        )

    # -- the database ------------------------------------------------------------------

    async def sql(self, query: str, params=()) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []


async def rpc_error(call: Awaitable) -> grpc.aio.AioRpcError:
    """Await a call that must fail; return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def eventually(check: Callable[[], Awaitable], within: float = 10.0, every: float = 0.05):
    """Poll ``check`` until it returns something truthy (returned), or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(every)

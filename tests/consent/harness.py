"""Real auth and consent services in-process, and the people the tests act as.

Used by the consent tests and by the notify tests (which need both services).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest
from confidant.audit.v1 import audit_service_pb2 as audit_pb
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2 as pb
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.consent.app import create_service as create_consent
from services.consent.config import ConsentConfig
from services.consent.provider import SmsProvider
from tests.support import Tokens, running, service_env, unique

PASSWORD = "quiet-harbor-2026"
_numbers = itertools.count(100)


def new_phone() -> tuple[str, str]:
    """A fresh US number as a person types it, and its E.164 form."""
    n = next(_numbers)
    return f"(212) 555-{n:04d}", f"+1212555{n:04d}"


@dataclass
class Practice:
    practice: auth_pb.Practice
    owner: auth_pb.User


@contextlib.asynccontextmanager
async def auth_service(fresh_database, keys_dir) -> AsyncIterator[str]:
    url = await fresh_database("auth")
    service = await create_auth(AuthConfig.load(service_env(keys_dir, auth_database_url=url)))
    async with running(service) as address:
        yield address


@contextlib.asynccontextmanager
async def consent_service(
    fresh_database, keys_dir, auth_address: str, provider: SmsProvider | None = None, **settings: str
) -> AsyncIterator[tuple[str, str]]:
    """A consent service on a fresh database; ``settings`` are more CONFIDANT_* values
    (``consent_sms_provider="sns"``), ``provider`` replaces the configured SMS provider."""
    url = await fresh_database("consent")
    env = service_env(keys_dir, consent_database_url=url, auth_addr=auth_address, **settings)
    service = await create_consent(ConsentConfig.load(env), provider=provider)
    async with running(service) as address:
        yield address, url


@dataclass
class People:
    """Creates practices and users through auth's RPCs, and mints their tokens."""

    auth: auth_grpc.AuthServiceStub
    tokens: Tokens

    def service(self, name: str):
        return self.tokens.metadata(self.tokens.service(name))

    def as_user(self, user: auth_pb.User):
        role = auth_pb.Role.Name(user.role).removeprefix("ROLE_").lower()
        return self.tokens.metadata(self.tokens.user(user.user_id, user.practice_id, role))

    async def practice(self, name: str = "Lakeside Counseling") -> Practice:
        reply = await self.auth.CreatePractice(
            auth_pb.CreatePracticeRequest(
                name=name, owner_email=f"{unique('owner')}@lakeside.test", owner_display_name="Dana Rivera",
                owner_password=PASSWORD,
            ),
            metadata=self.service("web"), timeout=10,
        )
        return Practice(reply.practice, reply.owner)

    async def user(self, practice: Practice, role: int = auth_pb.ROLE_CLIENT, name: str = "Jordan Lee") -> auth_pb.User:
        reply = await self.auth.CreateUser(
            auth_pb.CreateUserRequest(
                practice_id=practice.practice.practice_id, role=role, email=f"{unique('person')}@client.test",
                display_name=name,
            ),
            metadata=self.service("web"), timeout=10,
        )
        return reply.user


@dataclass
class ConsentStack:
    people: People
    consent: pb_grpc.ConsentServiceStub
    consent_url: str
    # consent's audit trail as the practice owner reads it (confidant.audit.v1.AuditService);
    # keyword-only, so stacks built on this one (notify's) add their fields as before.
    audit: audit_grpc.AuditServiceStub | None = field(default=None, kw_only=True)

    async def sql(self, query: str, params=()) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(self.consent_url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def set_phone(self, staff: auth_pb.User, client: auth_pb.User, number: str, text_ok: bool) -> pb.ClientPhone:
        reply = await self.consent.SetClientPhone(
            pb.SetClientPhoneRequest(client_id=client.user_id, phone_number=number, text_ok=text_ok),
            metadata=self.people.as_user(staff), timeout=5,
        )
        return reply.phone

    async def get_phone(self, staff: auth_pb.User, client: auth_pb.User) -> pb.ClientPhone:
        reply = await self.consent.GetClientPhone(
            pb.GetClientPhoneRequest(client_id=client.user_id), metadata=self.people.as_user(staff), timeout=5
        )
        return reply.phone

    async def ledger(self, staff: auth_pb.User, client: auth_pb.User) -> list[pb.LedgerEntry]:
        reply = await self.consent.ListLedger(
            pb.ListLedgerRequest(client_id=client.user_id), metadata=self.people.as_user(staff), timeout=5
        )
        return list(reply.entries)

    async def inbound(
        self, from_number: str, body: str, provider_message_id: str = "", provider: str = "development",
        to_number: str = "",
    ) -> pb.ReceiveInboundSmsResponse:
        return await self.consent.ReceiveInboundSms(
            pb.ReceiveInboundSmsRequest(
                from_number=from_number, body=body, provider_message_id=provider_message_id or unique("sms"),
                provider=provider, to_number=to_number,
            ),
            metadata=self.people.service("web"), timeout=5,
        )

    async def audit_events(self, owner: auth_pb.User, **filters) -> list[audit_pb.AuditEvent]:
        """The owner's view of consent's trail, newest first, with ListAuditEventsRequest's filters."""
        assert self.audit is not None
        reply = await self.audit.ListAuditEvents(
            audit_pb.ListAuditEventsRequest(page_size=500, **filters), metadata=self.people.as_user(owner), timeout=5
        )
        return list(reply.events)

    async def sms_allowed(self, client: auth_pb.User) -> pb.CheckSmsAllowedResponse:
        return await self.consent.CheckSmsAllowed(
            pb.CheckSmsAllowedRequest(client_id=client.user_id), metadata=self.people.service("notify"), timeout=5
        )


async def rpc_error(call) -> grpc.aio.AioRpcError:
    """Await a call that must fail; return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value

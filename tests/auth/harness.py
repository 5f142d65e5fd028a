"""Helpers to drive an auth service under test: callers, test data, direct SQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2 as pb
from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc

from tests.support import Tokens, unique

PASSWORD = "quiet-harbor-2026"


@dataclass
class AuthHarness:
    stub: pb_grpc.AuthServiceStub
    database_url: str
    tokens: Tokens
    keys_dir: Path
    # auth's audit trail (confidant.audit.v1.AuditService, on the same server).
    audit: audit_grpc.AuditServiceStub | None = None

    # -- who is calling ----------------------------------------------------------------

    def as_service(self, name: str):
        return self.tokens.metadata(self.tokens.service(name))

    @property
    def web(self):
        return self.as_service("web")

    @property
    def notify(self):
        return self.as_service("notify")

    def as_user(self, user: pb.User, session_kind: str = "full", conversation_id: str = ""):
        role = pb.Role.Name(user.role).removeprefix("ROLE_").lower()
        token = self.tokens.user(user.user_id, user.practice_id, role, session_kind, conversation_id)
        return self.tokens.metadata(token)

    # -- making things ------------------------------------------------------------------

    def email(self, hint: str = "person") -> str:
        return f"{unique(hint)}@example.test"

    async def practice(self, name: str = "Lakeside Counseling", owner_name: str = "Dana Rivera"):
        reply = await self.stub.CreatePractice(
            pb.CreatePracticeRequest(
                name=name,
                owner_email=self.email("owner"),
                owner_display_name=owner_name,
                owner_password=PASSWORD,
            ),
            metadata=self.web,
            timeout=10,
        )
        return reply.practice, reply.owner

    async def user(
        self, practice_id: str, role: int, display_name: str, password: str = "", email: str = ""
    ) -> pb.User:
        reply = await self.stub.CreateUser(
            pb.CreateUserRequest(
                practice_id=practice_id,
                role=role,
                email=email or self.email(),
                display_name=display_name,
                password=password,
            ),
            metadata=self.web,
            timeout=10,
        )
        return reply.user

    async def service_account(self, owner: pb.User, scopes=("clients.read",)):
        """A real service account of the owner's practice, signed in: its call metadata."""
        created = await self.stub.CreateServiceAccount(
            pb.CreateServiceAccountRequest(display_name="Practice EHR", scopes=list(scopes)),
            metadata=self.as_user(owner),
            timeout=5,
        )
        issued = await self.stub.IssueServiceAccountToken(
            pb.IssueServiceAccountTokenRequest(
                client_id=created.account.client_id, client_secret=created.client_secret
            ),
            timeout=5,
        )
        return self.tokens.metadata(issued.access_token)

    # -- the database, to simulate time passing and to inspect what is stored -----------

    async def execute(self, query: str, params=()) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def audit_rows(self, action: str) -> list[tuple]:
        return await self.execute(
            "SELECT actor, outcome, target, practice_id, detail FROM audit_events WHERE action = %s ORDER BY event_id",
            (action,),
        )


async def rpc_error(call) -> grpc.aio.AioRpcError:
    """Await a call that must fail; return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value

"""Practice service accounts: how another practice system (an EHR, a scheduler)
signs in to the gRPC APIs.

The practice owner creates an account with scopes and gets its client id and
secret once (the secret is 256 random bits; only its sha256 is stored, which is
enough for a secret of that strength). The system exchanges them for a short
access token (role service_account, the practice, the granted scopes) with
IssueServiceAccountToken, the one RPC callable without a token; it is throttled
per client id. Each service then authorizes by scope.

The account is a users row with role service_account (so it can be a message's
sender that the directory names) plus a service_accounts row with its credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.auth.config import AuthConfig
from services.auth.keys import SigningKeys
from services.auth.storage import AuditEvent, AuthStorage
from services.common import audit
from services.common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.identity import SERVICE_ACCOUNT, Principal, caller, require_user

log = logging.getLogger("confidant.auth.service_accounts")

KNOWN_SCOPES = frozenset(
    {"messaging.send", "messaging.read", "consent.read", "consent.write", "clients.read", "clients.write"}
)
MAX_NAME_LENGTH = 200
MAX_CLIENT_ID_LENGTH = 64
MAX_SECRET_LENGTH = 256
MAX_ACCOUNTS_LISTED = 500
BAD_CREDENTIALS = "The client id or secret is incorrect."
TOO_MANY = "Too many token requests for this client id. Please wait a minute and try again."
# Service accounts get an address nobody can reach; emails are unique, so it carries the client id.
EMAIL_DOMAIN = "service-accounts.invalid"
# Compared against when the client id is unknown, so both paths do the same work.
_DUMMY_HASH = hashlib.sha256(b"no such service account").digest()


@dataclass(frozen=True)
class ServiceAccount:
    service_account_id: str
    practice_id: str
    display_name: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_at: datetime
    scopes: tuple[str, ...]


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _scopes(values: Sequence[str], required: bool) -> tuple[str, ...]:
    scopes = sorted({value.strip() for value in values if value.strip()})
    unknown = [scope for scope in scopes if scope not in KNOWN_SCOPES]
    if unknown:
        raise InvalidArgument(
            f"Unknown scope {unknown[0]!r}; known scopes are {', '.join(sorted(KNOWN_SCOPES))}."
        )
    if required and not scopes:
        raise InvalidArgument("Choose at least one scope.")
    return tuple(scopes)


def _account(row: dict) -> ServiceAccount:
    return ServiceAccount(
        service_account_id=row["user_id"],
        practice_id=row["practice_id"],
        display_name=row["display_name"],
        client_id=row["client_id"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
    )


_SELECT = (
    "SELECT s.user_id::text AS user_id, s.practice_id::text AS practice_id, u.display_name, s.client_id,"
    " s.scopes, s.created_at, s.secret_hash FROM service_accounts s JOIN users u ON u.user_id = s.user_id"
)


class ServiceAccountHandlers:
    def __init__(
        self, config: AuthConfig, pool: AsyncConnectionPool, storage: AuthStorage, keys: SigningKeys
    ):
        self._config = config
        self._pool = pool
        self._storage = storage
        self._keys = keys

    @staticmethod
    def _owner() -> Principal:
        who = require_user("owner")
        if who.session_kind == "magic_link":
            raise PermissionDenied("Sign in with your email and password to do this.")
        return who

    async def create(self, display_name: str, scopes: Sequence[str]) -> tuple[ServiceAccount, str]:
        who = self._owner()
        name = " ".join(display_name.split())
        if not name:
            raise InvalidArgument("The service account's name is required.")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"The name must be at most {MAX_NAME_LENGTH} characters long.")
        granted = _scopes(scopes, required=True)
        account_id = str(uuid.uuid4())
        client_id = f"sa_{secrets.token_hex(16)}"
        secret = secrets.token_urlsafe(32)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO users (user_id, practice_id, role, email, display_name) VALUES (%s, %s, %s, %s, %s)",
                (account_id, who.practice_id, SERVICE_ACCOUNT, f"{client_id}@{EMAIL_DOMAIN}", name),
            )
            cur = await conn.execute(
                "INSERT INTO service_accounts (user_id, practice_id, client_id, secret_hash, scopes, created_by)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING created_at",
                (account_id, who.practice_id, client_id, _hash(secret), list(granted), who.subject),
            )
            (created_at,) = await cur.fetchone()
            await audit.record(
                conn,
                actor=who.subject,
                action="service_account.create",
                outcome="success",
                target=account_id,
                practice_id=who.practice_id,
                detail={"scopes": list(granted)},
            )
        log.info("service account created", extra={"fields": {"service_account_id": account_id}})
        account = ServiceAccount(account_id, who.practice_id, name, client_id, granted, created_at)
        return account, secret

    async def list(self) -> list[ServiceAccount]:
        who = self._owner()
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _SELECT
                + " WHERE s.practice_id = %s AND s.deleted_at IS NULL ORDER BY s.created_at, s.user_id"
                " LIMIT %s",
                (who.practice_id, MAX_ACCOUNTS_LISTED),
            )
            rows = await cur.fetchall()
        return [_account(row) for row in rows]

    async def delete(self, service_account_id: str) -> None:
        who = self._owner()
        try:
            account_id = str(uuid.UUID(service_account_id))
        except (ValueError, AttributeError, TypeError):
            raise InvalidArgument("The service account id is not a valid id.") from None
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE service_accounts SET deleted_at = now()"
                " WHERE user_id = %s AND practice_id = %s AND deleted_at IS NULL RETURNING user_id",
                (account_id, who.practice_id),
            )
            if await cur.fetchone() is None:
                raise NotFound("No such service account.")
            await audit.record(
                conn,
                actor=who.subject,
                action="service_account.delete",
                outcome="success",
                target=account_id,
                practice_id=who.practice_id,
            )
        log.info("service account deleted", extra={"fields": {"service_account_id": account_id}})

    async def issue_token(self, client_id: str, client_secret: str, scopes: Sequence[str]) -> IssuedToken:
        """Anyone may call this (it is how a practice system signs in): the secret is the proof."""
        via = caller().subject if _has_caller() else ""
        client_id = client_id.strip()
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH or not client_secret:
            raise Unauthenticated(BAD_CREDENTIALS)
        requested = _scopes(scopes, required=False)
        config = self._config
        attempts, _ = await self._storage.count_address_attempt(
            f"service_account:{client_id}", config.service_account_token_window_seconds
        )
        event = AuditEvent(
            actor=client_id, action="service_account.token", outcome="", detail={"via": via} if via else {}
        )
        if attempts > config.service_account_token_limit:
            await self._storage.record_audit(_with(event, outcome="throttled"))
            raise ResourceExhausted(TOO_MANY)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SELECT + " WHERE s.client_id = %s AND s.deleted_at IS NULL", (client_id,))
            row = await cur.fetchone()
        stored = bytes(row["secret_hash"]) if row else _DUMMY_HASH
        candidate = _hash(client_secret[:MAX_SECRET_LENGTH])
        if (
            not hmac.compare_digest(stored, candidate)
            or row is None
            or len(client_secret) > MAX_SECRET_LENGTH
        ):
            await self._storage.record_audit(_with(event, outcome="failure"))
            raise Unauthenticated(BAD_CREDENTIALS)
        account = _account(row)
        if any(scope not in account.scopes for scope in requested):
            await self._storage.record_audit(
                _with(event, outcome="denied", actor=account.service_account_id, practice=account.practice_id)
            )
            raise PermissionDenied("This service account was not granted every requested scope.")
        granted = requested or account.scopes
        principal = Principal(
            subject=account.service_account_id,
            role=SERVICE_ACCOUNT,
            practice_id=account.practice_id,
            scopes=frozenset(granted),
        )
        token, expires = self._keys.user_token(principal, config.service_account_token_ttl_seconds)
        await self._storage.record_audit(
            _with(
                event,
                outcome="success",
                actor=account.service_account_id,
                practice=account.practice_id,
                scopes=list(granted),
            )
        )
        return IssuedToken(token, datetime.fromtimestamp(expires, tz=UTC), granted)


def _has_caller() -> bool:
    try:
        caller()
    except Unauthenticated:
        return False
    return True


def _with(event: AuditEvent, outcome: str, actor: str = "", practice: str = "", **detail) -> AuditEvent:
    return AuditEvent(
        actor=actor or event.actor,
        action=event.action,
        outcome=outcome,
        target=actor or "",
        practice_id=practice,
        detail={**event.detail, **detail},
    )

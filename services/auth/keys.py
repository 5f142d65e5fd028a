"""Auth's signing keys for people's access tokens: kept in auth's database,
rotated without downtime, published through ListSigningKeys.

A key's life: created by a rotation (published at once), it signs from its
``activated_at`` (the activation delay lets every verifier fetch it first) until
the next key activates (its ``retired_at``); it stays published until every
token it signed has expired (``retired_at`` + the longest token lifetime +
leeway), then verifiers drop it.

At start-up auth makes sure one key is in use: it imports ``<keys_dir>/auth.key``
(kid "auth") as the first key, so tokens minted before this existed keep
working, or creates one when that file is absent.

Private keys are stored as PEM, NOT yet encrypted at rest (a later concern, with KMS).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.common.errors import PermissionDenied, Unavailable
from services.common.identity import Principal, caller, require_service
from services.common.tokens import (
    LEEWAY_SECONDS,
    USER_TOKEN_ISSUER,
    PublishedKey,
    TokenSigner,
    load_public_key_pem,
    public_key_pem,
)

log = logging.getLogger("confidant.auth.keys")

# Serialises key creation across auth replicas (start-up and rotation).
_KEYS_LOCK = 7146201
IMPORTED_KID = USER_TOKEN_ISSUER


@dataclass(frozen=True)
class SigningKeyInfo:
    kid: str
    public_key_pem: str
    activated_at: datetime
    # When no token it signed is valid any more; None while it is in use.
    not_after: datetime | None


@dataclass(frozen=True)
class _Cached:
    kid: str
    signer: TokenSigner
    activated_at: float
    retired_at: float | None


def _private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _read_key_file(path: Path | None) -> Ed25519PrivateKey | None:
    if path is None or not path.is_file():
        return None
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key.")
    return loaded


def _new_kid() -> str:
    return f"auth-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"


class SigningKeys:
    """The key ring: the signer of people's tokens, rotation, and the published set.

    Duck-types ``TokenSigner`` (``issuer``, ``user_token``) for the handlers.
    """

    issuer = USER_TOKEN_ISSUER

    def __init__(
        self,
        pool: AsyncConnectionPool,
        max_token_ttl_seconds: int,
        activation_seconds: int,
        refresh_seconds: int,
    ) -> None:
        self._pool = pool
        # Published this long after retirement: the longest token plus the verifiers' leeway.
        self._publish_after_retirement = max_token_ttl_seconds + LEEWAY_SECONDS
        self._activation_seconds = activation_seconds
        self._refresh_seconds = refresh_seconds
        self._cached: list[_Cached] = []

    # -- start-up ------------------------------------------------------------

    async def ensure_active(self, key_file: Path | None) -> None:
        """Make sure a key is in use: import ``key_file`` as the first key, or create one."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
            cur = await conn.execute("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL")
            (in_use,) = await cur.fetchone()
            if in_use:
                return
            cur = await conn.execute("SELECT 1 FROM signing_keys WHERE kid = %s", (IMPORTED_KID,))
            imported = await cur.fetchone() is not None
            loaded = None if imported else _read_key_file(key_file)
            if loaded is not None:
                key, kid, origin = loaded, IMPORTED_KID, "imported"
            else:
                key, kid, origin = Ed25519PrivateKey.generate(), _new_kid(), "created"
            await conn.execute(
                "INSERT INTO signing_keys (kid, private_key_pem, public_key_pem, activated_at)"
                " VALUES (%s, %s, %s, now())",
                (kid, _private_pem(key), public_key_pem(key.public_key())),
            )
            await audit.record(
                conn,
                actor="service:auth",
                action="signing_key.create",
                outcome="success",
                target=kid,
                detail={"origin": origin},
            )
        log.info("signing key in use", extra={"fields": {"kid": kid, "origin": origin}})

    # -- the signer ----------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the keys that may sign (another replica may have rotated)."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT kid, private_key_pem, extract(epoch FROM activated_at)::float8 AS activated_at,"
                " extract(epoch FROM retired_at)::float8 AS retired_at"
                " FROM signing_keys WHERE retired_at IS NULL OR retired_at > now()"
                " ORDER BY activated_at DESC"
            )
            rows = await cur.fetchall()
        cached = []
        for row in rows:
            key = serialization.load_pem_private_key(row["private_key_pem"].encode(), password=None)
            assert isinstance(key, Ed25519PrivateKey)
            cached.append(
                _Cached(
                    row["kid"],
                    TokenSigner(USER_TOKEN_ISSUER, key, kid=row["kid"]),
                    row["activated_at"],
                    row["retired_at"],
                )
            )
        self._cached = cached

    async def refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self.refresh()

    def current(self, now: float | None = None) -> TokenSigner:
        """The key that signs now: the newest activated one that is not retired."""
        moment = time.time() if now is None else now
        for entry in self._cached:  # newest activation first
            if entry.activated_at <= moment and (entry.retired_at is None or entry.retired_at > moment):
                return entry.signer
        raise Unavailable("No signing key is in use; please try again.")

    def user_token(self, principal: Principal, ttl_seconds: int = 300) -> tuple[str, int]:
        return self.current().user_token(principal, ttl_seconds)

    # -- rotation and publication --------------------------------------------

    async def rotate(self, actor: str) -> SigningKeyInfo:
        key = Ed25519PrivateKey.generate()
        kid = _new_kid()
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
            cur = await conn.execute("SELECT now() + make_interval(secs => %s)", (self._activation_seconds,))
            (activates,) = await cur.fetchone()
            cur = await conn.execute(
                "UPDATE signing_keys SET retired_at = %s WHERE retired_at IS NULL RETURNING kid", (activates,)
            )
            retiring = [row[0] for row in await cur.fetchall()]
            await conn.execute(
                "INSERT INTO signing_keys (kid, private_key_pem, public_key_pem, activated_at)"
                " VALUES (%s, %s, %s, %s)",
                (kid, _private_pem(key), public_key_pem(key.public_key()), activates),
            )
            await audit.record(
                conn,
                actor=actor,
                action="signing_key.rotate",
                outcome="success",
                target=kid,
                detail={"retiring": retiring},
            )
        await self.refresh()
        log.info("signing key rotated", extra={"fields": {"kid": kid, "retiring": retiring}})
        return SigningKeyInfo(kid, public_key_pem(key.public_key()), activates, None)

    async def published(self) -> list[SigningKeyInfo]:
        """Every key whose tokens may still be valid, newest first."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT kid, public_key_pem, activated_at,"
                " retired_at + make_interval(secs => %(after)s) AS not_after"
                " FROM signing_keys"
                " WHERE retired_at IS NULL OR retired_at + make_interval(secs => %(after)s) > now()"
                " ORDER BY activated_at DESC, kid",
                {"after": self._publish_after_retirement},
            )
            rows = await cur.fetchall()
        return [SigningKeyInfo(**row) for row in rows]

    async def fetch_published(self) -> list[PublishedKey]:
        """The published set for auth's own verifier (straight from the database)."""
        try:
            infos = await self.published()
        except psycopg.Error as exc:
            raise Unavailable("The signing keys cannot be read right now.") from exc
        return [
            PublishedKey(
                info.kid,
                load_public_key_pem(info.public_key_pem),
                int(info.not_after.timestamp()) if info.not_after else 0,
            )
            for info in infos
        ]


class SigningKeyHandlers:
    """Authorization for the signing-key RPCs."""

    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    async def rotate(self) -> SigningKeyInfo:
        # Internal only for now: an operator rotates through the web edge's service identity.
        who = require_service("web")
        return await self._keys.rotate(who.subject)

    async def list_published(self) -> list[SigningKeyInfo]:
        who = caller()
        if not (who.is_service or who.is_service_account):
            raise PermissionDenied("The signing keys are published to services and service accounts.")
        return await self._keys.published()

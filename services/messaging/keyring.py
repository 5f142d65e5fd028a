"""Per-practice data keys, wrapped by a key-encryption key, with rotation.

Each practice has numbered data keys (``data_keys``, migration 0003). A key is
made the first time the practice seals something; rotation adds the next
version, which then seals new bodies, while older versions stay to open what
they sealed. Only wrapped keys are stored: AWS KMS wraps them in production
(``kms.py``), the local key file in development (``LocalKeyEncryptionKey``).
Unwrapped keys are kept in memory, per (practice, version).

Version 0 is the legacy development key: the key file itself, which sealed
messages before per-practice keys (migration 0003 renumbered those rows to 0).

The idempotency digest is keyed by a subkey of the practice's version-1 data
key, so a retry is recognised whatever rotations happened in between.

The keyring keeps its own SQL (one small table) next to the key logic.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.common.errors import Unavailable
from services.messaging.config import MessagingConfig
from services.messaging.crypto import (
    KEY_BYTES,
    LEGACY_KEY_VERSION,
    NONCE_BYTES,
    DataKey,
    DecryptionError,
    SealedBody,
    body_digest,
    derive_key,
    load_data_key,
)
from services.messaging.kms import KmsKeyEncryptionKey, kms_client

log = logging.getLogger("confidant.messaging")

FIRST_VERSION = 1
ROTATE_ATTEMPTS = 3
_DIGEST_PURPOSE = b"confidant messaging body digest v1"


class KeyEncryptionKey(Protocol):
    """What wraps data keys: KMS in production, the key file in development."""

    def handles(self, kek: str) -> bool:
        """Whether this KEK can unwrap a key whose ``kek`` column says so."""

    async def new_data_key(self, practice_id: str, version: int) -> tuple[bytes, bytes, str]:
        """A fresh data key: (in the clear, wrapped, the ``kek`` name to store)."""

    async def unwrap(self, wrapped: bytes, kek: str, practice_id: str, version: int) -> bytes:
        """The data key in the clear; ``DecryptionError`` when the wrapping does not authenticate."""


class LocalKeyEncryptionKey:
    """The development KEK: a subkey of the key file wraps data keys with AES-256-GCM.

    The associated data binds the practice and version, as KMS's encryption
    context does. Its name carries a fingerprint of the key file, so a key
    wrapped by another key file is reported as such.
    """

    def __init__(self, file_key: bytes) -> None:
        self._aead = AESGCM(derive_key(file_key, b"confidant messaging key-encryption key v1"))
        fingerprint = hashlib.sha256(derive_key(file_key, b"confidant messaging kek id v1")).hexdigest()
        self.name = "local:" + fingerprint[:16]

    def handles(self, kek: str) -> bool:
        return kek == self.name

    @staticmethod
    def _aad(practice_id: str, version: int) -> bytes:
        return f"confidant messaging data key|{practice_id}|{version}".encode()

    async def new_data_key(self, practice_id: str, version: int) -> tuple[bytes, bytes, str]:
        key = secrets.token_bytes(KEY_BYTES)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return key, nonce + self._aead.encrypt(nonce, key, self._aad(practice_id, version)), self.name

    async def unwrap(self, wrapped: bytes, kek: str, practice_id: str, version: int) -> bytes:
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, self._aad(practice_id, version))
        except InvalidTag:
            raise DecryptionError("A wrapped data key did not authenticate.") from None


@dataclass(frozen=True)
class KeySources:
    """Where keys come from: the KEK that wraps new data keys, every KEK that may
    unwrap stored ones, and the legacy key (version 0) when a key file is present."""

    wrapping: KeyEncryptionKey
    unwrapping: tuple[KeyEncryptionKey, ...]
    legacy_key: bytes | None = None

    @classmethod
    def from_config(cls, config: MessagingConfig) -> KeySources:
        """KMS when a KMS key is configured, else the key file (created in development).

        With KMS, a key file that exists still opens legacy messages and keys it wrapped.
        """
        kms = None
        if config.kms_key_id:
            client = kms_client(config.aws_region, config.aws_endpoint_url, config.call_deadline_seconds)
            kms = KmsKeyEncryptionKey(client, config.kms_key_id)
        file_key = None
        if kms is None or config.data_key_file.is_file():
            create = kms is None and config.common.development
            file_key = load_data_key(config.data_key_file, create_if_missing=create)
        local = LocalKeyEncryptionKey(file_key) if file_key is not None else None
        wrapping = kms or local
        assert wrapping is not None  # the key file was loaded when there is no KMS key
        return cls(
            wrapping=wrapping,
            unwrapping=tuple(k for k in (kms, local) if k is not None),
            legacy_key=file_key,
        )


@dataclass(frozen=True)
class _StoredKey:
    version: int
    wrapped_key: bytes
    kek: str


class Keyring:
    """Seals and opens bodies with the practice's data keys; rotates them.

    The current version is re-read from the database after ``current_ttl_seconds``,
    so a rotation made by another replica is followed within that time.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        sources: KeySources,
        current_ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._sources = sources
        self._ttl = current_ttl_seconds
        self._clock = clock
        self._keys: dict[tuple[str, int], DataKey] = {}
        self._current: dict[str, tuple[int, float]] = {}  # practice -> (version, read at)
        self._digest_keys: dict[str, bytes] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._legacy = (
            DataKey(sources.legacy_key, LEGACY_KEY_VERSION) if sources.legacy_key is not None else None
        )

    # -- the interface handlers use ------------------------------------------

    async def seal(self, practice_id: str, body: str, aad: bytes) -> SealedBody:
        return (await self._current_key(practice_id)).seal(body, aad)

    async def open(self, practice_id: str, sealed: SealedBody, aad: bytes) -> str:
        return (await self._key(practice_id, sealed.key_version)).open(sealed, aad)

    async def digest(self, practice_id: str, body: str) -> bytes:
        if practice_id not in self._digest_keys:
            await self._current_key(practice_id)  # makes version 1 if the practice has no key yet
            await self._key(practice_id, FIRST_VERSION)  # remembers the digest key with it
        return body_digest(self._digest_keys[practice_id], body)

    async def rotate(self, practice_id: str, actor: str) -> int:
        """Add the practice's next data-key version (audited as ``data_key.rotate``); returns it."""
        async with self._lock(practice_id):
            for _ in range(ROTATE_ATTEMPTS):
                latest = await self._latest(practice_id)
                version = latest.version + 1 if latest else FIRST_VERSION
                plain, wrapped, kek = await self._sources.wrapping.new_data_key(practice_id, version)
                async with self._pool.connection() as conn, conn.transaction():
                    if not await self._insert(conn, practice_id, version, wrapped, kek):
                        continue  # another replica rotated at the same moment: take the next number
                    await audit.record(
                        conn,
                        actor=actor,
                        action="data_key.rotate",
                        outcome="ok",
                        target=practice_id,
                        practice_id=practice_id,
                        detail={"key_version": version, "kek": kek.split(":", 1)[0]},
                    )
                self._remember(practice_id, version, plain)
                self._current[practice_id] = (version, self._clock())
                log.info("data key rotated", extra={"fields": {"practice_id": practice_id, "version": version}})
                return version
        raise Unavailable("The data key could not be rotated; please try again.")

    # -- keys ------------------------------------------------------------------

    def _lock(self, practice_id: str) -> asyncio.Lock:
        return self._locks.setdefault(practice_id, asyncio.Lock())

    async def _current_key(self, practice_id: str) -> DataKey:
        cached = self._current.get(practice_id)
        if cached is not None and self._clock() - cached[1] < self._ttl:
            return await self._key(practice_id, cached[0])
        async with self._lock(practice_id):
            latest = await self._latest(practice_id)
            if latest is None:
                latest = await self._create_first(practice_id)
            key = await self._unwrapped(practice_id, latest)
            self._current[practice_id] = (latest.version, self._clock())
            return key

    async def _key(self, practice_id: str, version: int) -> DataKey:
        if version == LEGACY_KEY_VERSION:
            if self._legacy is None:
                raise DecryptionError("The legacy key file is not configured.")
            return self._legacy
        key = self._keys.get((practice_id, version))
        if key is not None:
            return key
        async with self._lock(practice_id):
            stored = await self._stored(practice_id, version)
            if stored is None:
                raise DecryptionError(f"The practice has no data key of version {version}.")
            return await self._unwrapped(practice_id, stored)

    def _remember(self, practice_id: str, version: int, plain: bytes) -> DataKey:
        key = DataKey(plain, version)
        self._keys[(practice_id, version)] = key
        if version == FIRST_VERSION:
            self._digest_keys[practice_id] = derive_key(plain, _DIGEST_PURPOSE)
        return key

    async def _unwrapped(self, practice_id: str, stored: _StoredKey) -> DataKey:
        key = self._keys.get((practice_id, stored.version))
        if key is None:
            key = self._remember(practice_id, stored.version, await self._unwrap(practice_id, stored))
        return key

    async def _unwrap(self, practice_id: str, stored: _StoredKey) -> bytes:
        for kek in self._sources.unwrapping:
            if kek.handles(stored.kek):
                plain = await kek.unwrap(stored.wrapped_key, stored.kek, practice_id, stored.version)
                if len(plain) != KEY_BYTES:
                    raise DecryptionError("A data key has the wrong length.")
                return plain
        raise DecryptionError(
            f"Data key version {stored.version} is wrapped by {stored.kek}, which this service does not hold."
        )

    async def _create_first(self, practice_id: str) -> _StoredKey:
        """The practice's first key; when two replicas race, both end up with the winner's."""
        plain, wrapped, kek = await self._sources.wrapping.new_data_key(practice_id, FIRST_VERSION)
        async with self._pool.connection() as conn:
            created = await self._insert(conn, practice_id, FIRST_VERSION, wrapped, kek)
        if created:
            self._remember(practice_id, FIRST_VERSION, plain)
            log.info("data key created", extra={"fields": {"practice_id": practice_id, "version": FIRST_VERSION}})
        stored = await self._latest(practice_id)
        assert stored is not None  # inserted just now, by us or by the winner
        return stored

    # -- SQL -------------------------------------------------------------------

    @staticmethod
    async def _insert(
        conn: psycopg.AsyncConnection, practice_id: str, version: int, wrapped: bytes, kek: str
    ) -> bool:
        cur = await conn.execute(
            "INSERT INTO data_keys (practice_id, version, wrapped_key, kek) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (practice_id, version) DO NOTHING RETURNING version",
            (practice_id, version, wrapped, kek),
        )
        return await cur.fetchone() is not None

    async def _latest(self, practice_id: str) -> _StoredKey | None:
        return await self._select(
            "SELECT version, wrapped_key, kek FROM data_keys WHERE practice_id = %s"
            " ORDER BY version DESC LIMIT 1",
            (practice_id,),
        )

    async def _stored(self, practice_id: str, version: int) -> _StoredKey | None:
        return await self._select(
            "SELECT version, wrapped_key, kek FROM data_keys WHERE practice_id = %s AND version = %s",
            (practice_id, version),
        )

    async def _select(self, query: str, params: tuple) -> _StoredKey | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        return _StoredKey(row[0], bytes(row[1]), row[2]) if row else None

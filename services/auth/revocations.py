"""The revocation feed: deactivating a person or deleting a service
account ends its access tokens at once, not when they expire.

Auth's database records each revocation (triggers on ``users.deactivated_at`` and
``service_accounts.deleted_at``, migration 0006). ListRevocations publishes the
recent ones to our services; each keeps them in memory
(``services.common.tokens.Revocations``) and refuses a token of a revoked subject
issued before its revocation. Auth's own verifier reads its database directly.
"""

from __future__ import annotations

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg_pool import AsyncConnectionPool

from services.common.errors import InvalidArgument, Unavailable
from services.common.identity import require_service
from services.common.tokens import LEEWAY_SECONDS, Revocation, RevocationBatch


class RevocationFeed:
    """Reads the revocations that still matter from auth's database."""

    def __init__(self, pool: AsyncConnectionPool, max_token_ttl_seconds: int, refresh_seconds: float) -> None:
        self._pool = pool
        # A token issued up to the leeway after its revocation is refused, and verifiers
        # accept a token up to the leeway after it expired: past this, nothing is left to refuse.
        self.retention_seconds = max_token_ttl_seconds + 2 * LEEWAY_SECONDS
        self.refresh_seconds = refresh_seconds

    async def since(self, after_revision: int) -> RevocationBatch:
        """The revocations after ``after_revision`` still within the retention, and the newest revision."""
        try:
            async with self._pool.connection() as conn:
                # One statement, one snapshot: the newest revision matches the rows listed.
                cur = await conn.execute(
                    "SELECT t.top, r.subject::text, extract(epoch FROM r.revoked_at)::float8, r.revision"
                    " FROM (SELECT coalesce(max(revision), 0) AS top FROM revocations) t"
                    " LEFT JOIN revocations r ON r.revision > %(after)s"
                    "  AND r.revoked_at > now() - make_interval(secs => %(retention)s)"
                    " ORDER BY r.revision",
                    {"after": after_revision, "retention": self.retention_seconds},
                )
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise Unavailable("The revocations cannot be read right now.") from exc
        return RevocationBatch(
            revocations=[Revocation(subject, at, revision) for _, subject, at, revision in rows if subject],
            revision=rows[0][0] if rows else 0,
            retention_seconds=float(self.retention_seconds),
            refresh_seconds=self.refresh_seconds,
        )


class RevocationHandlers:
    def __init__(self, feed: RevocationFeed) -> None:
        self._feed = feed

    async def list(self, after_revision: int) -> RevocationBatch:
        # Not audited: every service asks every couple of seconds, and it holds no PHI.
        require_service()
        if after_revision < 0:
            raise InvalidArgument("after_revision must not be negative.")
        return await self._feed.since(after_revision)


def _timestamp(epoch: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(round(epoch * 1_000_000))
    return stamp


class RevocationRpcs:
    """Mixed into AuthServicer; app.py attaches the handlers with ``use_revocations``."""

    _revocations: RevocationHandlers | None = None

    def use_revocations(self, handlers: RevocationHandlers) -> None:
        self._revocations = handlers

    async def ListRevocations(
        self, request: pb.ListRevocationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRevocationsResponse:
        if self._revocations is None:
            raise Unavailable("Revocations are not available.")
        batch = await self._revocations.list(request.after_revision)
        return pb.ListRevocationsResponse(
            revocations=[
                pb.Revocation(subject=r.subject, revoked_at=_timestamp(r.revoked_at), revision=r.revision)
                for r in batch.revocations
            ],
            revision=batch.revision,
            retention_seconds=int(batch.retention_seconds),
            refresh_seconds=batch.refresh_seconds,
        )

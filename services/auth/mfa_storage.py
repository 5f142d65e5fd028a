"""The SQL of two-step verification and staff administration: TOTP secrets, recovery codes, pending second-factor
sign-ins, practice security settings, staff administration and the audit trail.

Like services/auth/storage.py: one named method per query, and writes that the
audit trail must reflect record their audit rows in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.auth.storage import _USER_COLUMNS, AuditEvent, SessionRecord, User, _record, _session, _user


@dataclass(frozen=True)
class TotpCredential:
    user_id: str
    secret_sealed: bytes
    secret_nonce: bytes
    key_version: int
    confirmed: bool
    last_used_step: int


@dataclass(frozen=True)
class Pending:
    """A sign-in waiting for its second factor; ``usable`` when unused and inside its window."""

    user: User
    purpose: str  # "verify" | "enroll"
    usable: bool


@dataclass(frozen=True)
class StaffRow:
    user: User
    deactivated: bool
    totp_enabled: bool


class SecondFactorUsed(Exception):
    """The pending token, the code's step or the recovery code was used meanwhile."""


class MfaStorage:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    # -- users ------------------------------------------------------------------

    async def active_user(self, user_id: str) -> User | None:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql.SQL("SELECT {} FROM users u WHERE u.user_id = %s AND u.deactivated_at IS NULL").format(
                    _USER_COLUMNS
                ),
                (user_id,),
            )
            row = await cur.fetchone()
        return _user(row) if row else None

    async def staff_row(self, user_id: str) -> StaffRow | None:
        rows = await self._staff_query(sql.SQL("u.user_id = %s"), (user_id,))
        return rows[0] if rows else None

    async def list_staff(self, practice_id: str) -> list[StaffRow]:
        return await self._staff_query(
            sql.SQL("u.practice_id = %s AND u.role IN ('owner', 'clinician', 'team_member')"), (practice_id,)
        )

    async def _staff_query(self, where: sql.Composable, params: Sequence) -> list[StaffRow]:
        query = sql.SQL(
            "SELECT {columns}, u.deactivated_at IS NOT NULL AS deactivated,"
            " coalesce(t.confirmed_at IS NOT NULL, false) AS totp_enabled"
            " FROM users u LEFT JOIN totp_credentials t ON t.user_id = u.user_id"
            " WHERE {where} ORDER BY u.sort_name, u.user_id"
        ).format(columns=_USER_COLUMNS, where=where)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            return [StaffRow(_user(r), r["deactivated"], r["totp_enabled"]) for r in await cur.fetchall()]

    async def change_role(self, user_id: str, role: str, event: AuditEvent) -> User:
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql.SQL(
                    "WITH changed AS (UPDATE users SET role = %s WHERE user_id = %s RETURNING *)"
                    " SELECT {} FROM changed u"
                ).format(_USER_COLUMNS),
                (role, user_id),
            )
            row = await cur.fetchone()
            await _record(conn, event)
        return _user(row)

    async def deactivate(self, user_id: str, event: AuditEvent) -> int:
        """Deactivate a user and end all their sessions and pending sign-ins; return how many sessions ended."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE users SET deactivated_at = now() WHERE user_id = %s AND deactivated_at IS NULL", (user_id,)
            )
            cur = await conn.execute(
                "UPDATE sessions SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL"
                " AND expires_at > now()",
                (user_id,),
            )
            ended = cur.rowcount
            await conn.execute(
                "UPDATE second_factor_pending SET used_at = now() WHERE user_id = %s AND used_at IS NULL",
                (user_id,),
            )
            await _record(conn, replace(event, detail={**event.detail, "sessions_ended": ended}))
        return ended

    # -- practice security ----------------------------------------------------------

    async def require_mfa_for_staff(self, practice_id: str) -> bool | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT require_mfa_for_staff FROM practices WHERE practice_id = %s", (practice_id,)
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_require_mfa_for_staff(self, practice_id: str, value: bool, event: AuditEvent) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE practices SET require_mfa_for_staff = %s WHERE practice_id = %s", (value, practice_id)
            )
            await _record(conn, event)

    # -- TOTP ----------------------------------------------------------------------------

    async def totp(self, user_id: str) -> TotpCredential | None:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT user_id::text AS user_id, secret_sealed, secret_nonce, key_version,"
                " confirmed_at IS NOT NULL AS confirmed, last_used_step FROM totp_credentials WHERE user_id = %s",
                (user_id,),
            )
            row = await cur.fetchone()
        return TotpCredential(**row) if row else None

    async def begin_totp(self, user_id: str, sealed: bytes, nonce: bytes, key_version: int, event: AuditEvent) -> bool:
        """Store a new unconfirmed secret (replacing an unconfirmed one); False when TOTP is already on."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO totp_credentials (user_id, secret_sealed, secret_nonce, key_version)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed,"
                " secret_nonce = excluded.secret_nonce, key_version = excluded.key_version,"
                " created_at = now(), last_used_step = 0"
                " WHERE totp_credentials.confirmed_at IS NULL",
                (user_id, sealed, nonce, key_version),
            )
            if cur.rowcount == 0:
                return False
            await _record(conn, event)
        return True

    async def confirm_totp(
        self, user_id: str, step: int, code_hashes: Sequence[bytes], events: Sequence[AuditEvent],
        pending_hash: bytes | None = None, session_hash: bytes | None = None, absolute_seconds: int = 0,
    ) -> SessionRecord | None:
        """Turn TOTP on with fresh recovery codes; with a pending token, consume it and open the session."""
        async with self._pool.connection() as conn, conn.transaction():
            if pending_hash is not None:
                await self._consume_pending(conn, pending_hash, "enroll")
            cur = await conn.execute(
                "UPDATE totp_credentials SET confirmed_at = now(), last_used_step = %s"
                " WHERE user_id = %s AND confirmed_at IS NULL",
                (step, user_id),
            )
            if cur.rowcount == 0:
                raise SecondFactorUsed()
            await conn.execute("DELETE FROM recovery_codes WHERE user_id = %s", (user_id,))
            for code_hash in code_hashes:
                await conn.execute(
                    "INSERT INTO recovery_codes (user_id, code_hash) VALUES (%s, %s)", (user_id, code_hash)
                )
            session = None
            if session_hash is not None:
                session = await self._open_session(conn, session_hash, user_id, absolute_seconds)
            for event in events:
                await _record(conn, event)
        return session

    async def disable_totp(self, user_id: str, step: int, event: AuditEvent) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM totp_credentials WHERE user_id = %s AND confirmed_at IS NOT NULL"
                " AND last_used_step < %s",
                (user_id, step),
            )
            if cur.rowcount == 0:
                raise SecondFactorUsed()
            await conn.execute("DELETE FROM recovery_codes WHERE user_id = %s", (user_id,))
            await _record(conn, event)

    async def recovery_codes_left(self, user_id: str) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM recovery_codes WHERE user_id = %s AND used_at IS NULL", (user_id,)
            )
            (count,) = await cur.fetchone()
        return count

    async def has_recovery_code(self, user_id: str, code_hash: bytes) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM recovery_codes WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
                (user_id, code_hash),
            )
            return await cur.fetchone() is not None

    # -- pending sign-ins ------------------------------------------------------------------

    async def create_pending(self, token_hash: bytes, user_id: str, purpose: str, ttl_seconds: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO second_factor_pending (token_hash, user_id, purpose, expires_at)"
                " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (token_hash, user_id, purpose, ttl_seconds),
            )

    async def pending(self, token_hash: bytes) -> Pending | None:
        """The pending sign-in's (active) user; None when unknown or the user is deactivated."""
        query = sql.SQL(
            "SELECT {columns}, p.purpose, (p.used_at IS NULL AND p.expires_at > now()) AS usable"
            " FROM second_factor_pending p JOIN users u ON u.user_id = p.user_id"
            " WHERE p.token_hash = %s AND u.deactivated_at IS NULL"
        ).format(columns=_USER_COLUMNS)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, (token_hash,))
            row = await cur.fetchone()
        return Pending(_user(row), row["purpose"], row["usable"]) if row else None

    @staticmethod
    async def _consume_pending(conn: psycopg.AsyncConnection, token_hash: bytes, purpose: str) -> None:
        cur = await conn.execute(
            "UPDATE second_factor_pending SET used_at = now()"
            " WHERE token_hash = %s AND purpose = %s AND used_at IS NULL AND expires_at > now()",
            (token_hash, purpose),
        )
        if cur.rowcount == 0:
            raise SecondFactorUsed()

    @staticmethod
    async def _open_session(
        conn: psycopg.AsyncConnection, session_hash: bytes, user_id: str, absolute_seconds: int
    ) -> SessionRecord:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "INSERT INTO sessions (session_hash, user_id, kind, expires_at)"
            " VALUES (%s, %s, 'full', now() + make_interval(secs => %s))"
            " RETURNING kind, conversation_id, last_seen_at, expires_at, now() AS now",
            (session_hash, user_id, absolute_seconds),
        )
        return _session(await cur.fetchone())

    async def complete_sign_in(
        self, pending_hash: bytes, user_id: str, session_hash: bytes, absolute_seconds: int, event: AuditEvent,
        step: int | None = None, recovery_hash: bytes | None = None,
    ) -> SessionRecord:
        """Consume the pending token and the code (its step, or the recovery code) and open the session, at once.

        Of two concurrent uses of the same code only one matches the conditional
        UPDATE; the other raises ``SecondFactorUsed``.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await self._consume_pending(conn, pending_hash, "verify")
            if step is not None:
                cur = await conn.execute(
                    "UPDATE totp_credentials SET last_used_step = %s"
                    " WHERE user_id = %s AND confirmed_at IS NOT NULL AND last_used_step < %s",
                    (step, user_id, step),
                )
            else:
                cur = await conn.execute(
                    "UPDATE recovery_codes SET used_at = now()"
                    " WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
                    (user_id, recovery_hash),
                )
            if cur.rowcount == 0:
                raise SecondFactorUsed()
            session = await self._open_session(conn, session_hash, user_id, absolute_seconds)
            await _record(conn, event)
        return session

    async def purge_pending(self, keep_seconds: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM second_factor_pending WHERE expires_at < now() - make_interval(secs => %s)",
                (keep_seconds,),
            )

    # -- the audit trail -----------------------------------------------------------------

"""All of auth's SQL, one named method per query.

psycopg errors become domain errors here. Writes that the audit trail must
reflect take the audit event and record it in the same transaction, so an
action and its audit row exist together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.common.errors import AlreadyExists, NotFound


@dataclass(frozen=True)
class Practice:
    practice_id: str
    name: str
    # An IANA name; every time the practice and its clients see is given in it.
    time_zone: str = ""
    # How clients reach the practice: E.164 and an email address, each possibly empty.
    contact_phone: str = ""
    contact_email: str = ""


# The profile fields UpdatePractice may change, in the order the audit lists them.
PRACTICE_FIELDS = ("name", "time_zone", "contact_phone", "contact_email")


@dataclass(frozen=True)
class User:
    user_id: str
    practice_id: str
    role: str
    email: str
    display_name: str
    has_password: bool
    # Clients only, where known: "YYYY-MM-DD"; empty otherwise.
    date_of_birth: str = ""


@dataclass(frozen=True)
class SessionRecord:
    """A session as stored; ``now`` is the database clock when it was read."""

    kind: str  # "full" | "magic_link"
    conversation_id: str
    last_seen_at: datetime
    expires_at: datetime
    now: datetime


@dataclass(frozen=True)
class MagicLinkState:
    user_id: str
    practice_id: str
    conversation_id: str
    used: bool
    expired: bool


@dataclass(frozen=True)
class Redemption:
    """What happened to one redemption attempt."""

    outcome: str  # "redeemed" | "expired" | "already_used" | "unknown"
    conversation_id: str = ""
    user_id: str = ""
    user: User | None = None
    session: SessionRecord | None = None
    # The client's practice, for every outcome but "unknown" (the audit row belongs to its trail).
    practice_id: str = ""


@dataclass(frozen=True)
class Throttle:
    """An account's sign-in state: consecutive failures and whether attempts are refused now."""

    failures: int
    blocked: bool
    locked: bool
    # While blocked: the seconds until attempts are taken again (rounded up).
    seconds_left: int = 0


@dataclass(frozen=True)
class FailureOutcome:
    failures: int
    block_seconds: int  # 0: none
    locked: bool  # this failure locked the account


@dataclass(frozen=True)
class AccountNotice:
    notice_id: int
    user_id: str
    kind: str
    lock_minutes: int
    # Credentials: an invitation's or reset's link token, held only until handed to notify.
    link_token: str = ""


@dataclass(frozen=True)
class ClientEvent:
    """A row of the client-created outbox, waiting to be handed to messaging."""

    event_id: int
    practice_id: str
    client_id: str


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    action: str
    outcome: str
    target: str = ""
    practice_id: str = ""
    detail: dict = field(default_factory=dict)


_USER_COLUMNS = sql.SQL(
    "u.user_id::text AS user_id, u.practice_id::text AS practice_id, u.role, u.email, u.display_name,"
    " u.password_hash IS NOT NULL AS has_password,"
    " coalesce(to_char(u.date_of_birth, 'YYYY-MM-DD'), '') AS date_of_birth"
)
_PRACTICE_COLUMNS = "practice_id::text AS practice_id, name, time_zone, contact_phone, contact_email"


def _user(row: dict) -> User:
    return User(
        user_id=row["user_id"],
        practice_id=row["practice_id"],
        role=row["role"],
        email=row["email"],
        display_name=row["display_name"],
        has_password=row["has_password"],
        date_of_birth=row["date_of_birth"],
    )


def _session(row: dict) -> SessionRecord:
    return SessionRecord(
        kind=row["kind"],
        conversation_id=row["conversation_id"],
        last_seen_at=row["last_seen_at"],
        expires_at=row["expires_at"],
        now=row["now"],
    )


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class DirectoryQuery:
    """One page of the directory: the practice's users of ``roles`` matching every word.

    Ordered by rank (how many words match only inside a word of the name or email: 0 when
    each starts one), then name, then id. ``after`` is the previous page's last row as
    (rank, user id): the page token carries no name, the row's name is read in the same statement.
    """

    practice_id: str
    roles: Sequence[str]
    words: Sequence[str]
    after: tuple[int, str] | None
    limit: int

    def statement(self) -> tuple[sql.Composable, dict]:
        params: dict = {"practice": self.practice_id, "roles": list(self.roles), "limit": self.limit}
        match, rank_terms = [], []
        for i, word in enumerate(self.words):
            params[f"like{i}"], params[f"word{i}"] = _escape_like(word), word
            # Folded like the column, so "alex" finds "Álex" and the trigram index can serve it;
            # LIKE wildcards in the word are plain characters.
            match.append(
                sql.SQL(" AND u.search_text LIKE '%%' || fold_for_search({}) || '%%'").format(
                    sql.Placeholder(f"like{i}")
                )
            )
            rank_terms.append(
                sql.SQL("(u.search_words NOT LIKE '%%' || search_words({}) || '%%')::int").format(
                    sql.Placeholder(f"word{i}")
                )
            )
        # Without words every row has rank 0 and the (practice, role, name) index gives the order.
        if rank_terms:
            rank = sql.SQL("({})").format(sql.SQL(" + ").join(rank_terms))
            key, after_key = sql.SQL("{}, u.sort_name, u.user_id").format(rank), sql.SQL("%(after_rank)s, ")
        else:
            rank, key, after_key = sql.SQL("0"), sql.SQL("u.sort_name, u.user_id"), sql.SQL("")
        anchor, after = sql.SQL(""), sql.SQL("")
        if self.after is not None:
            params["after_rank"], params["after_user"] = self.after
            # The previous page's last row, of this practice and these roles; none: no rows.
            anchor = sql.SQL(
                " CROSS JOIN (SELECT sort_name, user_id FROM users WHERE user_id = %(after_user)s"
                " AND practice_id = %(practice)s AND role = ANY(%(roles)s)) a"
            )
            after = sql.SQL(" AND ({key}) > ({after_key}a.sort_name, a.user_id)").format(key=key, after_key=after_key)
        query = sql.SQL(
            "SELECT {columns}, {rank} AS rank FROM users u{anchor}"
            " WHERE u.practice_id = %(practice)s AND u.role = ANY(%(roles)s){match}{after}"
            " ORDER BY {key} LIMIT %(limit)s"
        ).format(
            columns=_USER_COLUMNS, rank=rank, anchor=anchor, match=sql.SQL("").join(match), after=after, key=key
        )
        return query, params


async def _queue_client_created(conn: psycopg.AsyncConnection, user: User) -> None:
    """The client-created outbox row, in the caller's transaction (see client_events.py)."""
    if user.role == "client":
        await conn.execute(
            "INSERT INTO client_events (practice_id, client_id) VALUES (%s, %s)", (user.practice_id, user.user_id)
        )


async def _record(conn: psycopg.AsyncConnection, event: AuditEvent) -> None:
    await audit.record(
        conn,
        actor=event.actor,
        action=event.action,
        outcome=event.outcome,
        target=event.target,
        practice_id=event.practice_id,
        detail=event.detail,
    )


def _is_email_taken(exc: psycopg.errors.UniqueViolation) -> bool:
    return exc.diag.constraint_name == "users_email_key"


_EMAIL_TAKEN = "An account with this email address already exists."


class AuthStorage:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    # -- audit ---------------------------------------------------------------

    async def record_audit(self, event: AuditEvent) -> None:
        async with self._pool.connection() as conn:
            await _record(conn, event)

    async def record_audits(self, events: Sequence[AuditEvent]) -> None:
        """Several rows at once (one per client a list showed), in one transaction and round trip."""
        if not events:
            return
        async with self._pool.connection() as conn:
            await audit.record_many(
                conn,
                [
                    {"actor": e.actor, "action": e.action, "outcome": e.outcome, "target": e.target,
                     "practice_id": e.practice_id, "detail": e.detail}
                    for e in events
                ],
            )

    # -- practices and users ---------------------------------------------------

    async def create_practice(
        self, practice: Practice, owner: User, owner_password_hash: str, event: AuditEvent
    ) -> tuple[Practice, User]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO practices (practice_id, name, time_zone, contact_phone, contact_email)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (practice.practice_id, practice.name, practice.time_zone, practice.contact_phone,
                     practice.contact_email),
                )
                await conn.execute(
                    "INSERT INTO users (user_id, practice_id, role, email, display_name, password_hash)"
                    " VALUES (%s, %s, 'owner', %s, %s, %s)",
                    (owner.user_id, practice.practice_id, owner.email, owner.display_name, owner_password_hash),
                )
                await _record(conn, event)
        except psycopg.errors.UniqueViolation as exc:
            if _is_email_taken(exc):
                raise AlreadyExists(_EMAIL_TAKEN) from None
            raise
        return practice, owner

    async def get_practice(self, practice_id: str) -> Practice | None:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Practice))
            await cur.execute(f"SELECT {_PRACTICE_COLUMNS} FROM practices WHERE practice_id = %s", (practice_id,))
            return await cur.fetchone()

    async def update_practice(
        self, practice_id: str, changes: dict[str, str], event: Callable[[list[str]], AuditEvent]
    ) -> Practice | None:
        """Set the profile fields in ``changes`` (names from PRACTICE_FIELDS); None when there is no such practice.

        ``event(changed)`` is the audit row, given the names of the fields whose value changed.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=class_row(Practice))
            await cur.execute(
                f"SELECT {_PRACTICE_COLUMNS} FROM practices WHERE practice_id = %s FOR UPDATE", (practice_id,)
            )
            before = await cur.fetchone()
            if before is None:
                return None
            after = replace(before, **changes)
            changed = [name for name in PRACTICE_FIELDS if getattr(before, name) != getattr(after, name)]
            if changed:
                await conn.execute(
                    sql.SQL("UPDATE practices SET {} WHERE practice_id = %s").format(
                        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changed)
                    ),
                    [*(getattr(after, name) for name in changed), practice_id],
                )
            await _record(conn, event(changed))
        return after

    async def create_user(self, user: User, password_hash: str | None, event: AuditEvent) -> User:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO users (user_id, practice_id, role, email, display_name, password_hash,"
                    " date_of_birth) VALUES (%s, %s, %s, %s, %s, %s, %s::date)",
                    (user.user_id, user.practice_id, user.role, user.email, user.display_name, password_hash,
                     user.date_of_birth or None),
                )
                await _queue_client_created(conn, user)
                await _record(conn, event)
        except psycopg.errors.UniqueViolation as exc:
            if _is_email_taken(exc):
                raise AlreadyExists(_EMAIL_TAKEN) from None
            raise
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound("This practice does not exist.") from None
        return user

    async def get_users(self, user_ids: Sequence[str]) -> list[User]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql.SQL("SELECT {} FROM users u WHERE u.user_id = ANY(%s::uuid[])").format(_USER_COLUMNS),
                (list(user_ids),),
            )
            return [_user(row) for row in await cur.fetchall()]

    async def user_credentials(self, email: str) -> tuple[User, str | None] | None:
        """The user with this (lower-cased) email and their password hash."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                # A deactivated person signs in no more than an unknown email does.
                sql.SQL(
                    "SELECT {}, u.password_hash FROM users u WHERE u.email = %s AND u.deactivated_at IS NULL"
                ).format(_USER_COLUMNS),
                (email,),
            )
            row = await cur.fetchone()
        return (_user(row), row["password_hash"]) if row else None

    async def update_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id)
            )

    async def directory_page(self, query: DirectoryQuery) -> list[tuple[User, int]] | None:
        """A page of the directory as (user, rank) pairs: one statement.

        None when ``query.after`` names nobody of the practice and roles (a forged or foreign
        page token), told apart from the end of the list by a second look only then.
        """
        statement, params = query.statement()
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(statement, params)
            rows = [(_user(row), row["rank"]) for row in await cur.fetchall()]
            if rows or query.after is None:
                return rows
            await cur.execute(
                "SELECT 1 FROM users WHERE user_id = %s AND practice_id = %s AND role = ANY(%s)",
                (query.after[1], query.practice_id, list(query.roles)),
            )
            return rows if await cur.fetchone() else None

    # -- clients -------------------------------------------------------------------

    async def update_client(
        self,
        practice_id: str,
        client_id: str,
        email: str,
        display_name: str,
        date_of_birth: str,
        event: Callable[[list[str]], AuditEvent],
    ) -> User | None:
        """Replace a client's email, name and date of birth; None when they are not a client of the practice.

        ``event(changed)`` is the audit row, given the names of the fields that changed.
        """
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT {} FROM users u WHERE u.user_id = %s AND u.practice_id = %s AND u.role = 'client'"
                        " FOR UPDATE"
                    ).format(_USER_COLUMNS),
                    (client_id, practice_id),
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                before = _user(row)
                after = replace(before, email=email, display_name=display_name, date_of_birth=date_of_birth)
                changed = [
                    name for name in ("email", "display_name", "date_of_birth")
                    if getattr(before, name) != getattr(after, name)
                ]
                if changed:
                    await cur.execute(
                        "UPDATE users SET email = %s, display_name = %s, date_of_birth = %s::date"
                        " WHERE user_id = %s",
                        (email, display_name, date_of_birth or None, client_id),
                    )
                await _record(conn, event(changed))
        except psycopg.errors.UniqueViolation as exc:
            if _is_email_taken(exc):
                raise AlreadyExists(_EMAIL_TAKEN) from None
            raise
        return after

    # -- the client-created outbox ------------------------------------------------------

    async def claim_client_events(self, limit: int, lease_seconds: int) -> list[ClientEvent]:
        """Take due client events; other relays skip them until the lease runs out."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(ClientEvent)) as cur:
            await cur.execute(
                "UPDATE client_events SET next_attempt_at = now() + make_interval(secs => %s),"
                " attempts = attempts + 1"
                " WHERE event_id IN (SELECT event_id FROM client_events"
                "   WHERE done_at IS NULL AND next_attempt_at <= now()"
                "   ORDER BY next_attempt_at, event_id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING event_id, practice_id::text AS practice_id, client_id::text AS client_id",
                (lease_seconds, limit),
            )
            return await cur.fetchall()

    async def client_event_done(self, event_id: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("UPDATE client_events SET done_at = now() WHERE event_id = %s", (event_id,))

    # -- sessions ----------------------------------------------------------------

    async def create_full_session(
        self, session_hash: bytes, user_id: str, absolute_seconds: int, event: AuditEvent
    ) -> SessionRecord:
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "INSERT INTO sessions (session_hash, user_id, kind, expires_at)"
                " VALUES (%s, %s, 'full', now() + make_interval(secs => %s))"
                " RETURNING kind, conversation_id, last_seen_at, expires_at, now() AS now",
                (session_hash, user_id, absolute_seconds),
            )
            row = await cur.fetchone()
            await _record(conn, event)
        return _session(row)

    async def touch_session(
        self, session_hash: bytes, idle_seconds: int, active: bool = True
    ) -> tuple[User, SessionRecord] | None:
        """The live session's user, after marking it active (when ``active``); None if unknown, revoked or expired.

        Full sessions end after ``idle_seconds`` without activity or at ``expires_at``;
        magic-link sessions end at ``expires_at`` whatever the activity.
        """
        query = sql.SQL(
            "WITH touched AS ("
            "  UPDATE sessions s"
            "  SET last_seen_at = CASE WHEN s.kind = 'full' AND %(active)s THEN now() ELSE s.last_seen_at END"
            "  WHERE s.session_hash = %(hash)s AND s.revoked_at IS NULL AND s.expires_at > now()"
            "    AND (s.kind <> 'full' OR s.last_seen_at > now() - make_interval(secs => %(idle)s))"
            "  RETURNING s.user_id, s.kind, s.conversation_id, s.last_seen_at, s.expires_at"
            ") SELECT {columns}, t.kind, t.conversation_id, t.last_seen_at, t.expires_at, now() AS now"
            " FROM touched t JOIN users u ON u.user_id = t.user_id"
            " WHERE u.deactivated_at IS NULL"
        ).format(columns=_USER_COLUMNS)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, {"hash": session_hash, "idle": idle_seconds, "active": active})
            row = await cur.fetchone()
        return (_user(row), _session(row)) if row else None

    async def revoke_session(self, session_hash: bytes, event: Callable[[User], AuditEvent]) -> User | None:
        """Revoke a live session; None when there was none to revoke."""
        query = sql.SQL(
            "WITH revoked AS ("
            "  UPDATE sessions SET revoked_at = now()"
            "  WHERE session_hash = %s AND revoked_at IS NULL RETURNING user_id"
            ") SELECT {columns} FROM revoked r JOIN users u ON u.user_id = r.user_id"
        ).format(columns=_USER_COLUMNS)
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, (session_hash,))
            row = await cur.fetchone()
            if row is None:
                return None
            user = _user(row)
            await _record(conn, event(user))
        return user

    # -- magic links ---------------------------------------------------------------

    async def create_magic_link(
        self, token_hash: bytes, user_id: str, conversation_id: str, ttl_seconds: int, event: AuditEvent
    ) -> datetime:
        async with self._pool.connection() as conn, conn.transaction():
            try:
                cur = await conn.execute(
                    "INSERT INTO magic_links (token_hash, user_id, conversation_id, expires_at)"
                    " VALUES (%s, %s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
                    (token_hash, user_id, conversation_id, ttl_seconds),
                )
            except psycopg.errors.ForeignKeyViolation:
                raise NotFound("This user does not exist.") from None
            (expires_at,) = await cur.fetchone()
            await _record(conn, event)
        return expires_at

    async def inspect_magic_link(self, token_hash: bytes) -> MagicLinkState | None:
        async with self._pool.connection() as conn:
            return await self._link_state(conn, token_hash)

    async def redeem_magic_link(
        self, token_hash: bytes, session_hash: bytes, event: Callable[[Redemption], AuditEvent]
    ) -> Redemption:
        """Consume a link once and open its messaging-only session, atomically.

        Of concurrent attempts exactly one matches the conditional UPDATE: the
        others wait on its row lock, then see ``used_at`` set and match nothing.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "UPDATE magic_links SET used_at = now()"
                " WHERE token_hash = %s AND used_at IS NULL AND expires_at > now()"
                " RETURNING user_id, conversation_id, expires_at",
                (token_hash,),
            )
            link = await cur.fetchone()
            if link is None:
                state = await self._link_state(conn, token_hash)
                if state is None:
                    result = Redemption("unknown")
                else:
                    outcome = "already_used" if state.used else "expired"
                    result = Redemption(
                        outcome, conversation_id=state.conversation_id, user_id=state.user_id,
                        practice_id=state.practice_id,
                    )
            else:
                await cur.execute(
                    "INSERT INTO sessions (session_hash, user_id, kind, conversation_id, expires_at)"
                    " VALUES (%s, %s, 'magic_link', %s, %s)"
                    " RETURNING kind, conversation_id, last_seen_at, expires_at, now() AS now",
                    (session_hash, link["user_id"], link["conversation_id"], link["expires_at"]),
                )
                session = _session(await cur.fetchone())
                await cur.execute(
                    sql.SQL("SELECT {} FROM users u WHERE u.user_id = %s").format(_USER_COLUMNS),
                    (link["user_id"],),
                )
                user = _user(await cur.fetchone())
                result = Redemption(
                    "redeemed", link["conversation_id"], user.user_id, user, session, practice_id=user.practice_id
                )
            await _record(conn, event(result))
        return result

    @staticmethod
    async def _link_state(conn: psycopg.AsyncConnection, token_hash: bytes) -> MagicLinkState | None:
        cur = conn.cursor(row_factory=class_row(MagicLinkState))
        await cur.execute(
            "SELECT m.user_id::text AS user_id, u.practice_id::text AS practice_id, m.conversation_id,"
            " m.used_at IS NOT NULL AS used, m.expires_at <= now() AS expired"
            " FROM magic_links m JOIN users u ON u.user_id = m.user_id WHERE m.token_hash = %s",
            (token_hash,),
        )
        return await cur.fetchone()

    # -- sign-in throttling ---------------------------------------------------------------

    async def count_address_attempt(self, client_address: str, window_seconds: int) -> tuple[int, int]:
        """Count one attempt from ``client_address`` in the current fixed window; return the
        window's total and the seconds until it ends (rounded up)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO address_attempts (client_address, window_start, attempts)"
                " VALUES (%(address)s, to_timestamp(floor(extract(epoch FROM now()) / %(window)s) * %(window)s), 1)"
                " ON CONFLICT (client_address, window_start)"
                " DO UPDATE SET attempts = address_attempts.attempts + 1"
                " RETURNING attempts,"
                " ceil(extract(epoch FROM window_start + make_interval(secs => %(window)s) - now()))::int",
                {"address": client_address, "window": window_seconds},
            )
            attempts, seconds_left = await cur.fetchone()
        return attempts, seconds_left

    async def throttle_state(self, account_key: str) -> Throttle:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT failures, coalesce(blocked_until > now(), false),"
                " locked AND coalesce(blocked_until > now(), false),"
                " greatest(ceil(extract(epoch FROM blocked_until - now())), 0)::int"
                " FROM sign_in_throttle WHERE account_key = %s",
                (account_key,),
            )
            row = await cur.fetchone()
        if row is None:
            return Throttle(0, False, False)
        failures, blocked, locked, seconds_left = row
        return Throttle(failures, blocked, locked, seconds_left if blocked else 0)

    async def record_sign_in_failure(
        self,
        account_key: str,
        block_seconds: Callable[[int], tuple[int, bool]],
        event: Callable[[FailureOutcome], list[AuditEvent]],
        notice: Callable[[FailureOutcome], AccountNotice | None],
    ) -> FailureOutcome:
        """Count one more consecutive failure and apply its delay or lock, with the audit rows.

        ``block_seconds(failures)`` says how long attempts are refused now and whether
        that is a lock; ``notice`` is the lock email to queue in the same transaction.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO sign_in_throttle (account_key, failures) VALUES (%s, 1)"
                " ON CONFLICT (account_key) DO UPDATE"
                " SET failures = sign_in_throttle.failures + 1, updated_at = now() RETURNING failures",
                (account_key,),
            )
            (failures,) = await cur.fetchone()
            seconds, locked = block_seconds(failures)
            if seconds:
                await conn.execute(
                    "UPDATE sign_in_throttle SET blocked_until = now() + make_interval(secs => %s), locked = %s"
                    " WHERE account_key = %s",
                    (seconds, locked, account_key),
                )
            outcome = FailureOutcome(failures, seconds, locked)
            queued = notice(outcome)
            if queued is not None:
                await conn.execute(
                    "INSERT INTO account_notices (user_id, kind, lock_minutes) VALUES (%s, %s, %s)",
                    (queued.user_id, queued.kind, queued.lock_minutes),
                )
            for item in event(outcome):
                await _record(conn, item)
        return outcome

    async def clear_sign_in_failures(self, account_key: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM sign_in_throttle WHERE account_key = %s", (account_key,))

    # -- account notices (the lock email's outbox) ---------------------------------------------

    async def claim_account_notices(self, limit: int, lease_seconds: int) -> list[AccountNotice]:
        """Take due notices; other relays skip them until the lease runs out."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(AccountNotice)) as cur:
            await cur.execute(
                "UPDATE account_notices SET next_attempt_at = now() + make_interval(secs => %s),"
                " attempts = attempts + 1"
                " WHERE notice_id IN (SELECT notice_id FROM account_notices"
                "   WHERE sent_at IS NULL AND next_attempt_at <= now()"
                "   ORDER BY next_attempt_at, notice_id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING notice_id, user_id::text AS user_id, kind, lock_minutes,"
                " coalesce(link_token, '') AS link_token",
                (lease_seconds, limit),
            )
            return await cur.fetchall()

    async def account_notice_sent(self, notice_id: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE account_notices SET sent_at = now(), link_token = NULL WHERE notice_id = %s", (notice_id,)
            )

    # -- housekeeping ------------------------------------------------------------------

    async def purge_expired(
        self, session_retention_seconds: int, magic_link_retention_seconds: int
    ) -> tuple[int, int]:
        """Delete sessions and links that ended long ago; return how many of each."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM sessions WHERE expires_at < now() - make_interval(secs => %(keep)s)"
                " OR revoked_at < now() - make_interval(secs => %(keep)s)",
                {"keep": session_retention_seconds},
            )
            sessions = cur.rowcount
            cur = await conn.execute(
                "DELETE FROM magic_links WHERE expires_at < now() - make_interval(secs => %s)",
                (magic_link_retention_seconds,),
            )
            return sessions, cur.rowcount

    async def purge_throttling(self, keep_seconds: int) -> None:
        """Forget failure counts untouched for ``keep_seconds`` and past blocks, old address windows,
        sent notices and relayed client events."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM sign_in_throttle WHERE updated_at < now() - make_interval(secs => %(keep)s)"
                " AND (blocked_until IS NULL OR blocked_until < now())",
                {"keep": keep_seconds},
            )
            await conn.execute(
                "DELETE FROM address_attempts WHERE window_start < now() - make_interval(secs => %s)",
                (keep_seconds,),
            )
            await conn.execute(
                "DELETE FROM account_notices WHERE sent_at < now() - make_interval(secs => %s)", (keep_seconds,)
            )
            await conn.execute(
                "DELETE FROM client_events WHERE done_at < now() - make_interval(secs => %s)", (keep_seconds,)
            )

"""All of messaging's SQL, one named method per query or transaction.

psycopg errors that mean something to the domain are turned into domain errors
(or the storage-level ``IdempotencyKeyTaken``) here; nothing above this module
writes SQL.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.common.errors import FailedPrecondition, NotFound, Unavailable
from services.messaging.crypto import SealedBody
from services.messaging.sending import CannotSend

# The advisory lock that orders event ids (see migrations/0001_init.sql).
EVENT_ID_LOCK = 7_146_101
EVENTS_CHANNEL = "messaging_events"
OUTBOX_CHANNEL = "messaging_outbox"

KIND_MESSAGE_CREATED = "message_created"
KIND_READ_UPDATED = "read_updated"
KIND_CONVERSATION_CREATED = "conversation_created"
# The participant archived the conversation or brought it back (seq: 1 archived, 0 back).
KIND_CONVERSATION_ARCHIVED = "conversation_archived"


class IdempotencyKeyTaken(Exception):
    """Another send with the same sender and idempotency key committed first."""


@dataclass(frozen=True)
class PracticeSettings:
    # Conversations that include a client.
    secure_messaging_enabled: bool = True
    auto_enable_new_clients: bool = False
    # Conversations among staff only.
    team_messaging_enabled: bool = True


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    outcome: str
    target: str = ""
    practice_id: str = ""
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Participant:
    user_id: str
    is_staff: bool
    read_seq: int


@dataclass(frozen=True)
class StoredMessage:
    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    sealed: SealedBody
    body_digest: bytes
    created_at: datetime


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    practice_id: str
    client_id: str | None
    last_activity_at: datetime
    last_seq: int
    participants: tuple[Participant, ...]
    # The read cursor of the person the conversation was loaded for.
    viewer_read_seq: int
    # Archived by that person (never, for a practice's service account).
    archived: bool = False
    # The client's own switch (False when unset; meaningless between staff).
    client_enabled: bool = False
    # The last message, still sealed: fetched with the conversation, in the same query.
    last_message: StoredMessage | None = None
    # Filled in by the handlers: the start of the last message for a participant,
    # whether a send would be accepted now, and if not why.
    preview: str = ""
    can_send: bool = False
    cannot_send_reason: CannotSend | None = None

    @property
    def unread_count(self) -> int:
        return max(0, self.last_seq - self.viewer_read_seq)

    @property
    def last_sender_id(self) -> str:
        return self.last_message.sender_id if self.last_message else ""


@dataclass(frozen=True)
class NewConversation:
    conversation_id: str
    practice_id: str
    # The client among the participants; None between staff.
    client_id: str | None
    # The sorted participant ids joined with ',' (unique per practice).
    participant_key: str
    # (user_id, is_staff) of every participant.
    participants: tuple[tuple[str, bool], ...]
    # Who made it (the CONVERSATION_CREATED event's actor).
    creator_id: str


@dataclass(frozen=True)
class NewMessage:
    message_id: str
    conversation_id: str
    practice_id: str
    sender_id: str
    sealed: SealedBody
    body_digest: bytes
    idempotency_key: str
    # A fresh id for the notification event: notify deduplicates on it.
    notification_event_id: str


@dataclass(frozen=True)
class Event:
    event_id: int
    kind: str
    conversation_id: str
    seq: int
    actor_id: str
    created_at: datetime


@dataclass(frozen=True)
class OutboxItem:
    outbox_id: int
    event_id: int
    payload: dict
    attempts: int


# Every participant in arrays, the client's switch and the last message (by its
# (conversation_id, seq) key): a page of conversations is one query, however many rows.
_CONVERSATION_JOINS = """
  CROSS JOIN LATERAL (
      SELECT array_agg(p.user_id ORDER BY p.user_id) AS user_ids,
             array_agg(p.is_staff ORDER BY p.user_id) AS staff,
             array_agg(p.read_seq ORDER BY p.user_id) AS read_seqs
        FROM participants p
       WHERE p.conversation_id = c.conversation_id
  ) people
  LEFT JOIN client_messaging cm ON cm.client_id = c.client_id AND cm.practice_id = c.practice_id
  LEFT JOIN messages lm ON lm.conversation_id = c.conversation_id AND lm.seq = c.last_seq
"""

_LAST_MESSAGE_COLUMNS = """coalesce(cm.enabled, false) AS client_enabled,
       lm.message_id::text AS lm_message_id, lm.sender_id AS lm_sender_id,
       lm.body_ciphertext AS lm_body_ciphertext, lm.nonce AS lm_nonce, lm.key_version AS lm_key_version,
       lm.body_sha256 AS lm_body_sha256, lm.created_at AS lm_created_at"""

# One conversation as seen by one participant ("me").
_CONVERSATION_SELECT = f"""
SELECT c.conversation_id::text AS conversation_id, c.practice_id, c.client_id,
       me.last_activity_at, c.last_seq, me.read_seq AS viewer_read_seq, me.archived,
       people.user_ids, people.staff, people.read_seqs,
       {_LAST_MESSAGE_COLUMNS}
  FROM participants me
  JOIN conversations c ON c.conversation_id = me.conversation_id
{_CONVERSATION_JOINS}"""

# A practice's service account reaches the practice's conversations without being a
# participant (viewer_read_seq is last_seq: nothing is "unread" to it; it archives nothing).
_PRACTICE_SELECT = f"""
SELECT c.conversation_id::text AS conversation_id, c.practice_id, c.client_id,
       c.last_activity_at, c.last_seq, c.last_seq AS viewer_read_seq, false AS archived,
       people.user_ids, people.staff, people.read_seqs,
       {_LAST_MESSAGE_COLUMNS}
  FROM conversations c
{_CONVERSATION_JOINS}"""


def _last_message(row: dict) -> StoredMessage | None:
    if row["lm_message_id"] is None:
        return None
    return _message(
        {
            "message_id": row["lm_message_id"],
            "conversation_id": row["conversation_id"],
            "seq": row["last_seq"],
            "sender_id": row["lm_sender_id"],
            "body_ciphertext": row["lm_body_ciphertext"],
            "nonce": row["lm_nonce"],
            "key_version": row["lm_key_version"],
            "body_sha256": row["lm_body_sha256"],
            "created_at": row["lm_created_at"],
        }
    )


def _conversation(row: dict) -> Conversation:
    return Conversation(
        conversation_id=row["conversation_id"],
        practice_id=row["practice_id"],
        client_id=row["client_id"],
        last_activity_at=row["last_activity_at"],
        last_seq=row["last_seq"],
        participants=tuple(
            Participant(user_id=u, is_staff=s, read_seq=r)
            for u, s, r in zip(row["user_ids"], row["staff"], row["read_seqs"], strict=True)
        ),
        viewer_read_seq=row["viewer_read_seq"],
        archived=row["archived"],
        client_enabled=row["client_enabled"],
        last_message=_last_message(row),
    )


def _message(row: dict) -> StoredMessage:
    return StoredMessage(
        message_id=row["message_id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        sealed=SealedBody(
            ciphertext=bytes(row["body_ciphertext"]),
            nonce=bytes(row["nonce"]),
            key_version=row["key_version"],
        ),
        body_digest=bytes(row["body_sha256"]),
        created_at=row["created_at"],
    )


_MESSAGE_COLUMNS = """message_id::text AS message_id, conversation_id::text AS conversation_id, seq, sender_id,
       body_ciphertext, nonce, key_version, body_sha256, created_at"""


async def _dicts(conn: psycopg.AsyncConnection, query, params) -> psycopg.AsyncCursor:
    """Run a query whose rows come back as dicts (without changing the pooled connection)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return cur


async def _record(conn: psycopg.AsyncConnection, entry: AuditEntry) -> None:
    await audit.record(
        conn,
        actor=entry.actor,
        action=entry.action,
        outcome=entry.outcome,
        target=entry.target,
        practice_id=entry.practice_id,
        detail=entry.detail,
    )


async def _notify(conn: psycopg.AsyncConnection, channel: str, payload: int) -> None:
    # Delivered when the transaction commits, never for a rolled-back one.
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, str(payload)))


def _about(client_id: str | None) -> dict:
    """The audit detail that names the client a row is about (the owner filters on it)."""
    return {"client_id": client_id} if client_id else {}


async def _insert_conversation(conn: psycopg.AsyncConnection, new: NewConversation, audit_entry: AuditEntry) -> bool:
    """The conversation, its participants, its CONVERSATION_CREATED event and its audit row, in
    the caller's transaction; False (nothing written) when these people already have one."""
    cur = await conn.execute(
        "INSERT INTO conversations (conversation_id, practice_id, client_id, participant_key)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT ON CONSTRAINT conversations_participant_key_unique DO NOTHING"
        " RETURNING last_activity_at",
        (new.conversation_id, new.practice_id, new.client_id, new.participant_key),
    )
    row = await cur.fetchone()
    if row is None:
        return False  # a concurrent open or first send made it first
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO participants (conversation_id, user_id, is_staff, last_activity_at)"
            " VALUES (%s, %s, %s, %s)",
            [(new.conversation_id, user_id, is_staff, row[0]) for user_id, is_staff in new.participants],
        )
    # Its id is drawn under the event-order lock (held to commit); with a first message, the
    # message's event comes after it, so whoever is told of the conversation finds the message.
    cur = await conn.execute(
        "INSERT INTO events (kind, conversation_id, seq, actor_id, recipient_ids)"
        " VALUES (%s, %s, 0, %s, %s) RETURNING event_id",
        (
            KIND_CONVERSATION_CREATED,
            new.conversation_id,
            new.creator_id,
            [user_id for user_id, _ in new.participants],
        ),
    )
    (event_id,) = await cur.fetchone()
    await _notify(conn, EVENTS_CHANNEL, event_id)
    await _record(
        conn,
        audit_entry_with(
            audit_entry, target=new.conversation_id, participants=len(new.participants), **_about(new.client_id)
        ),
    )
    return True


async def _append_message(conn: psycopg.AsyncConnection, new: NewMessage, audit_entry: AuditEntry) -> StoredMessage:
    """A message, in the caller's transaction: its seq, the sender's read cursor, the
    MESSAGE_CREATED event, the outbox row, the wake-ups and the audit row."""
    # Locks the conversation row: concurrent sends to it take their seqs in turn.
    cur = await conn.execute(
        "UPDATE conversations SET last_seq = last_seq + 1,"
        "   last_activity_at = greatest(last_activity_at, clock_timestamp())"
        " WHERE conversation_id = %s RETURNING last_seq, last_activity_at, client_id",
        (new.conversation_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound("No such conversation.")
    seq, created_at, client_id = row
    if client_id is not None:
        # Checked again under a share lock: a disable that commits first wins,
        # one that comes later waits for this send.
        cur = await conn.execute(
            "SELECT enabled FROM client_messaging WHERE client_id = %s FOR SHARE", (client_id,)
        )
        state = await cur.fetchone()
        if state is None or not state[0]:
            raise FailedPrecondition(CannotSend.CLIENT_DISABLED.message)
    await conn.execute(
        "INSERT INTO messages (message_id, conversation_id, seq, sender_id, body_ciphertext, nonce,"
        " key_version, body_sha256, idempotency_key, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            new.message_id,
            new.conversation_id,
            seq,
            new.sender_id,
            new.sealed.ciphertext,
            new.sealed.nonce,
            new.sealed.key_version,
            new.body_digest,
            new.idempotency_key,
            created_at,
        ),
    )
    # The sender has read their own message; everyone's list order moves, and
    # the conversation comes back for whoever had archived it.
    cur = await conn.execute(
        "UPDATE participants SET last_activity_at = %s, archived = false,"
        "   read_seq = CASE WHEN user_id = %s THEN greatest(read_seq, %s) ELSE read_seq END"
        " WHERE conversation_id = %s RETURNING user_id, is_staff",
        (created_at, new.sender_id, seq, new.conversation_id),
    )
    people = await cur.fetchall()
    cur = await conn.execute(
        "INSERT INTO events (kind, conversation_id, seq, actor_id, recipient_ids, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING event_id",
        (
            KIND_MESSAGE_CREATED,
            new.conversation_id,
            seq,
            new.sender_id,
            sorted(user_id for user_id, _ in people),
            created_at,
        ),
    )
    (event_id,) = await cur.fetchone()
    await _notify(conn, EVENTS_CHANNEL, event_id)
    recipients = [
        {"user_id": user_id, "is_client": not is_staff}
        for user_id, is_staff in sorted(people)
        if user_id != new.sender_id
    ]
    if recipients:
        cur = await conn.execute(
            "INSERT INTO outbox (event_id, payload) VALUES (%s, %s) RETURNING outbox_id",
            (
                event_id,
                Jsonb(
                    {
                        "event_id": new.notification_event_id,
                        "practice_id": new.practice_id,
                        "conversation_id": new.conversation_id,
                        "message_id": new.message_id,
                        "seq": seq,
                        "sender_id": new.sender_id,
                        "recipients": recipients,
                        "created_at": created_at.isoformat(),
                    }
                ),
            ),
        )
        (outbox_id,) = await cur.fetchone()
        await _notify(conn, OUTBOX_CHANNEL, outbox_id)
    # Last: the audit chain lock serialises appends, so hold it as briefly as possible.
    await _record(conn, audit_entry_with(audit_entry, target=new.message_id, seq=seq, **_about(client_id)))
    return StoredMessage(
        message_id=new.message_id,
        conversation_id=new.conversation_id,
        seq=seq,
        sender_id=new.sender_id,
        sealed=new.sealed,
        body_digest=new.body_digest,
        created_at=created_at,
    )


class Storage:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    # -- audit -------------------------------------------------------------

    async def record_audit(self, entry: AuditEntry) -> None:
        async with self._pool.connection() as conn:
            await _record(conn, entry)

    async def record_audits(self, entries: Sequence[AuditEntry]) -> None:
        """Several rows in one transaction (the chain lock taken once)."""
        async with self._pool.connection() as conn, conn.transaction():
            for entry in entries:
                await _record(conn, entry)

    # -- practice settings and client enablement ---------------------------

    async def practice_settings(self, practice_id: str) -> PracticeSettings:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT secure_messaging_enabled, auto_enable_new_clients, team_messaging_enabled"
                " FROM practice_settings WHERE practice_id = %s",
                (practice_id,),
            )
            row = await cur.fetchone()
        return PracticeSettings(*row) if row else PracticeSettings()

    async def save_practice_settings(
        self, practice_id: str, settings: PracticeSettings, audit_entry: AuditEntry
    ) -> PracticeSettings:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO practice_settings AS s (practice_id, secure_messaging_enabled,"
                "   auto_enable_new_clients, team_messaging_enabled, updated_by)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (practice_id) DO UPDATE SET"
                "   secure_messaging_enabled = EXCLUDED.secure_messaging_enabled,"
                "   auto_enable_new_clients = EXCLUDED.auto_enable_new_clients,"
                "   team_messaging_enabled = EXCLUDED.team_messaging_enabled,"
                "   updated_at = now(), updated_by = EXCLUDED.updated_by"
                " RETURNING secure_messaging_enabled, auto_enable_new_clients, team_messaging_enabled",
                (
                    practice_id,
                    settings.secure_messaging_enabled,
                    settings.auto_enable_new_clients,
                    settings.team_messaging_enabled,
                    audit_entry.actor,
                ),
            )
            row = await cur.fetchone()
            await _record(conn, audit_entry)
        return PracticeSettings(*row)

    async def client_messaging_enabled(self, client_id: str, practice_id: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT enabled FROM client_messaging WHERE client_id = %s AND practice_id = %s",
                (client_id, practice_id),
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def enable_client_messaging(
        self,
        client_id: str,
        practice_id: str,
        actor: str,
        *,
        only_if_new: bool = False,
        detail: dict | None = None,
    ) -> bool:
        """Turn messaging on for a client; True when it was off (or unset) before. Audited.

        ``only_if_new`` leaves a client messaging already knows (enabled or
        disabled since) as they are: the automatic enablement of a new client
        must not undo a later "disable" when auth's hook is delivered again.
        """
        if only_if_new:
            query = (
                "INSERT INTO client_messaging (client_id, practice_id, enabled, updated_by)"
                " VALUES (%s, %s, true, %s) ON CONFLICT (client_id) DO NOTHING RETURNING client_id"
            )
        else:
            query = (
                "INSERT INTO client_messaging AS m (client_id, practice_id, enabled, updated_by)"
                " VALUES (%s, %s, true, %s)"
                " ON CONFLICT (client_id) DO UPDATE SET enabled = true, practice_id = EXCLUDED.practice_id,"
                "   updated_at = now(), updated_by = EXCLUDED.updated_by"
                " WHERE NOT m.enabled OR m.practice_id <> EXCLUDED.practice_id"
                " RETURNING client_id"
            )
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(query, (client_id, practice_id, actor))
            changed = await cur.fetchone() is not None
            unchanged = "left_unchanged" if only_if_new else "already_enabled"
            await _record(
                conn,
                AuditEntry(
                    actor=actor,
                    action="client_messaging.enable",
                    outcome="enabled" if changed else unchanged,
                    target=client_id,
                    practice_id=practice_id,
                    detail={**(detail or {}), "changed": changed},
                ),
            )
        return changed

    async def disable_client_messaging(self, client_id: str, practice_id: str, actor: str) -> bool:
        """Turn messaging off for a client; True when it was on before. Audited."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE client_messaging SET enabled = false, updated_at = now(), updated_by = %s"
                " WHERE client_id = %s AND practice_id = %s AND enabled RETURNING client_id",
                (actor, client_id, practice_id),
            )
            changed = await cur.fetchone() is not None
            await _record(
                conn,
                AuditEntry(
                    actor=actor,
                    action="client_messaging.disable",
                    outcome="disabled" if changed else "already_disabled",
                    target=client_id,
                    practice_id=practice_id,
                    detail={"changed": changed},
                ),
            )
        return changed

    # -- conversations -----------------------------------------------------

    async def conversation_for(
        self, conversation_id: str, user_id: str, practice_id: str
    ) -> Conversation | None:
        """The conversation as ``user_id`` sees it, or None when they are not in it."""
        async with self._pool.connection() as conn:
            cur = await _dicts(
                conn,
                _CONVERSATION_SELECT
                + " WHERE me.conversation_id = %s AND me.user_id = %s AND c.practice_id = %s",
                (conversation_id, user_id, practice_id),
            )
            row = await cur.fetchone()
        return _conversation(row) if row else None

    async def practice_conversation(self, conversation_id: str, practice_id: str) -> Conversation | None:
        async with self._pool.connection() as conn:
            cur = await _dicts(
                conn,
                _PRACTICE_SELECT + " WHERE c.conversation_id = %s AND c.practice_id = %s",
                (conversation_id, practice_id),
            )
            row = await cur.fetchone()
        return _conversation(row) if row else None

    async def conversation_client(self, conversation_id: str, practice_id: str) -> str | None:
        """The client in one of the practice's conversations (None between staff, or when there
        is no such conversation): refused reads name the client in their audit rows too."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT client_id FROM conversations WHERE conversation_id = %s AND practice_id = %s",
                (conversation_id, practice_id),
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def practice_conversations(
        self, practice_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Conversation]:
        """A practice's conversations that have messages, newest activity first, after a keyset cursor."""
        # A conversation is listed from its first message on (OpenConversation makes empty ones).
        query = _PRACTICE_SELECT + " WHERE c.practice_id = %(practice)s AND c.last_seq > 0"
        if after is not None:
            query += " AND (c.last_activity_at, c.conversation_id) < (%(after_at)s, %(after_id)s)"
        query += " ORDER BY c.last_activity_at DESC, c.conversation_id DESC LIMIT %(limit)s"
        params = {
            "practice": practice_id,
            "after_at": after[0] if after else None,
            "after_id": uuid.UUID(after[1]) if after else None,
            "limit": limit,
        }
        async with self._pool.connection() as conn:
            cur = await _dicts(conn, query, params)
            rows = await cur.fetchall()
        return [_conversation(row) for row in rows]


    async def conversation_by_participants(
        self, practice_id: str, participant_key: str, viewer_id: str
    ) -> Conversation | None:
        async with self._pool.connection() as conn:
            cur = await _dicts(
                conn,
                _CONVERSATION_SELECT
                + " WHERE c.practice_id = %s AND c.participant_key = %s AND me.user_id = %s",
                (practice_id, participant_key, viewer_id),
            )
            row = await cur.fetchone()
        return _conversation(row) if row else None

    async def create_conversation(self, new: NewConversation, audit_entry: AuditEntry) -> bool:
        """Create the conversation of these people, empty; False if it already existed."""
        async with self._pool.connection() as conn, conn.transaction():
            return await _insert_conversation(conn, new, audit_entry)

    async def create_conversation_with_message(
        self,
        new: NewConversation,
        conversation_audit: AuditEntry,
        message: NewMessage,
        message_audit: AuditEntry,
    ) -> StoredMessage | None:
        """Create the conversation of these people with its first message, in one transaction
        (participants, CONVERSATION_CREATED then MESSAGE_CREATED, the outbox row, both audit rows).

        None, with nothing written, when the conversation already exists: a concurrent first
        send made it (this waits for that one to commit), and the message goes into theirs.
        Raises ``IdempotencyKeyTaken`` as ``insert_message`` does.
        """
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if not await _insert_conversation(conn, new, conversation_audit):
                    return None
                return await _append_message(conn, message, message_audit)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "messages_sender_idempotency_unique":
                raise IdempotencyKeyTaken() from None
            raise

    async def list_conversations(
        self,
        user_id: str,
        practice_id: str,
        limit: int,
        after: tuple[datetime, str] | None = None,
        only_conversation: str | None = None,
        archived: bool = False,
    ) -> list[Conversation]:
        """The person's archived (or other) conversations that have messages, newest activity
        first, after a keyset cursor, each with its last message (one query for the page)."""
        conditions = [
            sql.SQL("me.user_id = %(user)s"),
            sql.SQL("me.archived = %(archived)s"),
            sql.SQL("c.practice_id = %(practice)s"),
            # Listed from its first message on: nobody sees a conversation nothing was said in.
            sql.SQL("c.last_seq > 0"),
        ]
        if after is not None:
            conditions.append(
                sql.SQL("(me.last_activity_at, me.conversation_id) < (%(after_at)s, %(after_id)s)")
            )
        if only_conversation is not None:
            conditions.append(sql.SQL("me.conversation_id = %(only)s"))
        query = sql.SQL(_CONVERSATION_SELECT) + sql.SQL(" WHERE {} ").format(
            sql.SQL(" AND ").join(conditions)
        )
        query += sql.SQL(" ORDER BY me.last_activity_at DESC, me.conversation_id DESC LIMIT %(limit)s")
        params = {
            "user": user_id,
            "practice": practice_id,
            "after_at": after[0] if after else None,
            "after_id": uuid.UUID(after[1]) if after else None,
            "only": only_conversation,
            "archived": archived,
            "limit": limit,
        }
        async with self._pool.connection() as conn:
            cur = await _dicts(conn, query, params)
            rows = await cur.fetchall()
        return [_conversation(row) for row in rows]

    async def unread_summary(
        self, user_id: str, practice_id: str, only_conversation: str | None = None
    ) -> tuple[int, int]:
        """(unread messages, conversations with unread messages) for a person."""
        query = (
            "SELECT coalesce(sum(c.last_seq - p.read_seq), 0)::bigint,"
            "       count(*) FILTER (WHERE c.last_seq > p.read_seq)"
            "  FROM participants p JOIN conversations c ON c.conversation_id = p.conversation_id"
            " WHERE p.user_id = %s AND c.practice_id = %s"
        )
        params: list = [user_id, practice_id]
        if only_conversation is not None:
            query += " AND p.conversation_id = %s"
            params.append(only_conversation)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            messages, conversations = await cur.fetchone()
        return int(messages), int(conversations)

    async def recent_contacts(self, user_id: str, practice_id: str, limit: int) -> list[str]:
        """The other people in a person's conversations, most recent activity first."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT other.user_id"
                "  FROM participants me"
                "  JOIN conversations c ON c.conversation_id = me.conversation_id"
                "  JOIN participants other ON other.conversation_id = me.conversation_id"
                "   AND other.user_id <> me.user_id"
                " WHERE me.user_id = %s AND c.practice_id = %s"
                " GROUP BY other.user_id"
                " ORDER BY max(me.last_activity_at) DESC, other.user_id"
                " LIMIT %s",
                (user_id, practice_id, limit),
            )
            return [row[0] for row in await cur.fetchall()]

    async def set_archived(
        self, conversation_id: str, user_id: str, archived: bool, audit_entry: AuditEntry
    ) -> bool | None:
        """Archive (or bring back) a conversation for one participant; returns whether
        it changed, or None when they are not a participant. Audited with the change."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT p.archived, c.client_id FROM participants p"
                "  JOIN conversations c ON c.conversation_id = p.conversation_id"
                " WHERE p.conversation_id = %s AND p.user_id = %s FOR UPDATE OF p",
                (conversation_id, user_id),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            changed = row[0] != archived
            client_id = row[1]
            if changed:
                await conn.execute(
                    "UPDATE participants SET archived = %s WHERE conversation_id = %s AND user_id = %s",
                    (archived, conversation_id, user_id),
                )
                # Only the person's other tabs and devices need to know.
                cur = await conn.execute(
                    "INSERT INTO events (kind, conversation_id, seq, actor_id, recipient_ids)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING event_id",
                    (KIND_CONVERSATION_ARCHIVED, conversation_id, int(archived), user_id, [user_id]),
                )
                (event_id,) = await cur.fetchone()
                await _notify(conn, EVENTS_CHANNEL, event_id)
            await _record(conn, audit_entry_with(audit_entry, changed=changed, **_about(client_id)))
        return changed

    async def read_state(self, conversation_id: str, user_id: str) -> tuple[int, int] | None:
        """(the participant's read cursor, the conversation's last seq), or None when
        the person is not in the conversation (or it does not exist)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT p.read_seq, c.last_seq FROM participants p"
                "  JOIN conversations c ON c.conversation_id = p.conversation_id"
                " WHERE p.conversation_id = %s AND p.user_id = %s",
                (conversation_id, user_id),
            )
            row = await cur.fetchone()
        return (row[0], row[1]) if row else None

    # -- messages ----------------------------------------------------------

    async def message_by_idempotency_key(self, sender_id: str, idempotency_key: str) -> StoredMessage | None:
        async with self._pool.connection() as conn:
            cur = await _dicts(
                conn,
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = %s AND idempotency_key = %s",
                (sender_id, idempotency_key),
            )
            row = await cur.fetchone()
        return _message(row) if row else None

    async def insert_message(self, new: NewMessage, audit_entry: AuditEntry) -> StoredMessage:
        """Append a message in one transaction: its seq, the sender's read cursor, the
        MESSAGE_CREATED event, the outbox row, the wake-ups and the audit row.

        Raises ``IdempotencyKeyTaken`` when a send with the same key won the race.
        """
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await _append_message(conn, new, audit_entry)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "messages_sender_idempotency_unique":
                raise IdempotencyKeyTaken() from None
            raise

    async def read_messages(
        self, conversation_id: str, after_seq: int, limit: int, audit_entry: AuditEntry
    ) -> list[StoredMessage]:
        """Messages after a seq, ascending; the read and its audit row commit together."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await _dicts(
                conn,
                f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                " WHERE conversation_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (conversation_id, after_seq, limit),
            )
            rows = await cur.fetchall()
            await _record(conn, audit_entry_with(audit_entry, count=len(rows)))
        return [_message(row) for row in rows]

    async def mark_read(self, conversation_id: str, user_id: str, read_seq: int) -> int | None:
        """Move a participant's read cursor forward (never back, never past the last
        message); returns the cursor, or None when they are not a participant."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE participants p SET read_seq = least(%s, c.last_seq)"
                "  FROM conversations c"
                " WHERE c.conversation_id = p.conversation_id"
                "   AND p.conversation_id = %s AND p.user_id = %s AND p.read_seq < least(%s, c.last_seq)"
                " RETURNING p.read_seq",
                (read_seq, conversation_id, user_id, read_seq),
            )
            moved = await cur.fetchone()
            if moved is None:
                cur = await conn.execute(
                    "SELECT read_seq FROM participants WHERE conversation_id = %s AND user_id = %s",
                    (conversation_id, user_id),
                )
                current = await cur.fetchone()
                return current[0] if current else None
            # Only the reader's other tabs and devices need to know.
            cur = await conn.execute(
                "INSERT INTO events (kind, conversation_id, seq, actor_id, recipient_ids)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING event_id",
                (KIND_READ_UPDATED, conversation_id, moved[0], user_id, [user_id]),
            )
            (event_id,) = await cur.fetchone()
            await _notify(conn, EVENTS_CHANNEL, event_id)
        return moved[0]

    # -- events ------------------------------------------------------------

    async def event_high_water(self) -> int:
        """The highest event id below which every event has committed or rolled back.

        Writers draw event ids under a shared advisory lock held until they end;
        taking it exclusively waits for those in flight, so afterwards no id up to
        the sequence's current value can still appear. Live streams read up to here.
        """
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_ID_LOCK,))
                cur = await conn.execute("SELECT coalesce(pg_sequence_last_value('events_event_id_seq'), 0)")
                (high_water,) = await cur.fetchone()
        except psycopg.errors.LockNotAvailable:
            raise Unavailable("Live updates are busy; please reconnect.") from None
        return int(high_water)

    async def events_for(
        self,
        user_id: str,
        after_event_id: int,
        up_to_event_id: int,
        limit: int,
        only_conversation: str | None = None,
    ) -> list[Event]:
        """A person's events with after < event_id <= up_to, in id order."""
        query = (
            "SELECT event_id, kind, conversation_id::text, seq, actor_id, created_at FROM events"
            " WHERE event_id > %s AND event_id <= %s AND recipient_ids @> ARRAY[%s]::text[]"
        )
        params: list = [after_event_id, up_to_event_id, user_id]
        if only_conversation is not None:
            query += " AND conversation_id = %s"
            params.append(only_conversation)
        query += " ORDER BY event_id LIMIT %s"
        params.append(limit)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return [Event(*row) for row in await cur.fetchall()]

    # -- outbox ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def outbox_batch(self, limit: int) -> AsyncIterator[OutboxBatch]:
        """Claim due, unrelayed outbox rows (skipping rows another replica holds)
        in a transaction that commits when the block ends."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT outbox_id, event_id, payload, attempts FROM outbox"
                " WHERE relayed_at IS NULL AND next_attempt_at <= now()"
                " ORDER BY outbox_id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            )
            items = [OutboxItem(*row) for row in await cur.fetchall()]
            yield OutboxBatch(conn, items)


def audit_entry_with(entry: AuditEntry, target: str | None = None, **detail) -> AuditEntry:
    return AuditEntry(
        actor=entry.actor,
        action=entry.action,
        outcome=entry.outcome,
        target=entry.target if target is None else target,
        practice_id=entry.practice_id,
        detail={**entry.detail, **detail},
    )


class OutboxBatch:
    """Claimed outbox rows; marks are written in the claiming transaction."""

    def __init__(self, conn: psycopg.AsyncConnection, items: list[OutboxItem]) -> None:
        self._conn = conn
        self.items = items

    async def mark_relayed(self, outbox_id: int) -> None:
        await self._conn.execute("UPDATE outbox SET relayed_at = now() WHERE outbox_id = %s", (outbox_id,))

    async def postpone(self, outbox_id: int, delay_seconds: float) -> None:
        await self._conn.execute(
            "UPDATE outbox SET attempts = attempts + 1,"
            "   next_attempt_at = now() + make_interval(secs => %s)"
            " WHERE outbox_id = %s",
            (delay_seconds, outbox_id),
        )

"""All of notify's SQL, each query a named method."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.common.clock import Clock

WAKE_CHANNEL = "notify_jobs"
# The first key of the two-key advisory locks that serialise the burst rule per recipient.
_BURST_LOCK_SPACE = 54_001
# ... and the staff email interval per (staff member, conversation).
_STAFF_LOCK_SPACE = 54_002
STAFF_UNREAD = "staff_unread_email"


@dataclass(frozen=True)
class Job:
    job_id: int
    kind: str
    channel: str
    event_id: str
    practice_id: str
    conversation_id: str
    recipient_id: str
    to_address: str | None
    body: str | None
    attempts: int
    notice: str = ""
    notice_minutes: int = 0
    link_token: str = ""  # An invitation's or reset's link token
    seq: int = 0  # A staff unread email's message: its seq in the conversation (0: unknown)


@dataclass(frozen=True)
class MailboxRow:
    item_id: int
    channel: str
    to_address: str
    subject: str
    text_body: str
    html_body: str
    created_at: datetime


_JOB_COLUMNS = (
    "job_id, kind, channel, event_id, practice_id, conversation_id, recipient_id, to_address, body, attempts,"
    " notice, notice_minutes, link_token, seq"
)


class NotifyStorage:
    """Every time rule is decided against ``clock`` (a query parameter), never PostgreSQL's now()."""

    def __init__(self, pool: AsyncConnectionPool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    # -- enqueue --------------------------------------------------------------------

    async def add_message_job(
        self,
        conn: psycopg.AsyncConnection,
        *,
        dedupe_key: str,
        event_id: str,
        kind: str,
        channel: str,
        practice_id: str,
        conversation_id: str,
        recipient_id: str,
        burst_seconds: int,
    ) -> str | None:
        """Insert a job unless its dedupe key exists; return its status, or None for a duplicate.

        The job is 'coalesced' (never sent) when a job of the same kind for the same
        recipient and conversation is pending, or was sent or skipped (no consent)
        within the burst window: a burst gives one alert, whatever became of it.
        """
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            (_BURST_LOCK_SPACE, f"{recipient_id}:{conversation_id}:{kind}"),
        )
        cur = await conn.execute(
            "INSERT INTO notification_jobs (dedupe_key, event_id, kind, channel, practice_id, conversation_id,"
            " recipient_id, created_at, next_attempt_at, status)"
            " SELECT %(key)s, %(event)s, %(kind)s, %(channel)s, %(practice)s, %(conversation)s, %(recipient)s,"
            "  %(now)s, %(now)s,"
            "  CASE WHEN EXISTS (SELECT 1 FROM notification_jobs"
            "    WHERE recipient_id = %(recipient)s AND conversation_id = %(conversation)s AND kind = %(kind)s"
            "      AND status IN ('pending', 'sent', 'skipped')"
            "      AND created_at > %(now)s - make_interval(secs => %(burst)s))"
            "  THEN 'coalesced' ELSE 'pending' END"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING status",
            {
                "key": dedupe_key, "event": event_id, "kind": kind, "channel": channel, "practice": practice_id,
                "conversation": conversation_id, "recipient": recipient_id, "burst": burst_seconds,
                "now": self._clock.now(),
            },
        )
        row = await cur.fetchone()
        return row[0] if row else None

    async def add_staff_unread_job(
        self,
        conn: psycopg.AsyncConnection,
        *,
        dedupe_key: str,
        event_id: str,
        practice_id: str,
        conversation_id: str,
        recipient_id: str,
        seq: int,
        due_at: datetime,
    ) -> bool:
        """Queue one staff member's delayed email about one message; False for a repeated dedupe key.

        Every message gets its own job (so reading an earlier message does not cancel the
        email about a later one); the worker sends at most one per conversation per interval.
        """
        cur = await conn.execute(
            "INSERT INTO notification_jobs (dedupe_key, event_id, kind, channel, practice_id, conversation_id,"
            " recipient_id, seq, created_at, next_attempt_at, status)"
            " VALUES (%s, %s, %s, 'email', %s, %s, %s, %s, %s, %s, 'pending')"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (dedupe_key, event_id, STAFF_UNREAD, practice_id, conversation_id, recipient_id, seq,
             self._clock.now(), due_at),
        )
        return await cur.fetchone() is not None

    async def add_sms_reply_job(self, conn: psycopg.AsyncConnection, dedupe_key: str, to: str, body: str) -> bool:
        """Queue a consent reply; False when one with this dedupe key was queued before."""
        now = self._clock.now()
        cur = await conn.execute(
            "INSERT INTO notification_jobs (dedupe_key, kind, channel, to_address, body, created_at,"
            " next_attempt_at, status)"
            " VALUES (%s, 'sms_reply', 'sms', %s, %s, %s, %s, 'pending')"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (dedupe_key, to, body, now, now),
        )
        return await cur.fetchone() is not None

    async def add_account_notice_job(
        self, conn: psycopg.AsyncConnection, dedupe_key: str, user_id: str, notice: str, minutes: int,
        link_token: str = "",
    ) -> bool:
        """Queue an account notice email; False when one with this dedupe key was queued before."""
        now = self._clock.now()
        cur = await conn.execute(
            "INSERT INTO notification_jobs (dedupe_key, kind, channel, recipient_id, notice, notice_minutes,"
            " link_token, created_at, next_attempt_at, status)"
            " VALUES (%s, 'account_notice', 'email', %s, %s, %s, %s, %s, %s, 'pending')"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (dedupe_key, user_id, notice, minutes, link_token, now, now),
        )
        return await cur.fetchone() is not None

    async def wake_workers(self, conn: psycopg.AsyncConnection) -> None:
        """Delivered when the transaction commits."""
        await conn.execute("SELECT pg_notify(%s, '')", (WAKE_CHANNEL,))

    # -- the worker -----------------------------------------------------------------

    async def claim_due_jobs(self, limit: int, lease_seconds: float) -> list[Job]:
        """Take up to ``limit`` due jobs; other workers skip them until the lease runs out."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(Job)) as cur:
            await cur.execute(
                "UPDATE notification_jobs SET next_attempt_at = %(now)s + make_interval(secs => %(lease)s)"
                " WHERE job_id IN (SELECT job_id FROM notification_jobs"
                "   WHERE status = 'pending' AND next_attempt_at <= %(now)s"
                "   ORDER BY next_attempt_at, job_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_JOB_COLUMNS}",
                {"now": self._clock.now(), "lease": lease_seconds, "limit": limit},
            )
            return await cur.fetchall()

    async def finish_job(
        self, job: Job, status: str, *, last_error: str = "", actor: str = "service:notify",
        covers_through_seq: int = 0,
    ) -> None:
        """Record a job's final outcome (sent, skipped, failed or cancelled) with its audit row.

        ``covers_through_seq`` (staff unread emails): the other pending jobs of the same staff
        member and conversation up to that seq are settled with it — 'coalesced' into a sent
        email, 'cancelled' with a read one.
        """
        async with self.transaction() as conn:
            await conn.execute(
                "UPDATE notification_jobs SET status = %s, last_error = %s, attempts = attempts + 1,"
                " sent_at = CASE WHEN %s = 'sent' THEN %s END,"
                " link_token = ''"
                " WHERE job_id = %s AND status = 'pending'",
                (status, last_error, status, self._clock.now(), job.job_id),
            )
            covered = 0
            if job.kind == STAFF_UNREAD and covers_through_seq > 0 and status in ("sent", "cancelled"):
                cur = await conn.execute(
                    "UPDATE notification_jobs SET status = %s"
                    " WHERE kind = %s AND recipient_id = %s AND conversation_id = %s AND status = 'pending'"
                    "   AND job_id <> %s AND seq <= %s AND (seq > 0 OR %s = 'sent')",
                    ("coalesced" if status == "sent" else "cancelled", STAFF_UNREAD, job.recipient_id,
                     job.conversation_id, job.job_id, covers_through_seq, status),
                )
                covered = cur.rowcount
            await audit.record(
                conn, actor=actor, action=f"notification.{job.kind}", outcome=status,
                target=job.recipient_id or f"job:{job.job_id}", practice_id=job.practice_id,
                detail={"job_id": job.job_id, "conversation_id": job.conversation_id, "event_id": job.event_id,
                        **({"error": last_error} if last_error else {}), **({"covered": covered} if covered else {})},
            )

    async def retry_job_later(self, job: Job, delay_seconds: float, last_error: str) -> None:
        """Try again after ``delay_seconds``; a staff email's reservation of its interval is let go."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE notification_jobs SET attempts = attempts + 1, last_error = %s, sent_at = NULL,"
                " next_attempt_at = %s + make_interval(secs => %s)"
                " WHERE job_id = %s AND status = 'pending'",
                (last_error, self._clock.now(), delay_seconds, job.job_id),
            )

    async def reserve_staff_email(self, job: Job, interval_seconds: int, busy_retry_seconds: float) -> str:
        """Take the (staff member, conversation) pair's email interval for ``job``, or postpone the job.

        Returns 'reserved' (this job may email; its sent_at marks the reservation),
        'deferred' (an email went out less than an interval ago: the job waits for the
        window to reopen; or another worker is sending one: it looks again shortly), or
        'gone' (the job was settled meanwhile, e.g. covered by another email).
        """
        now = self._clock.now()
        async with self.transaction() as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (_STAFF_LOCK_SPACE, f"{job.recipient_id}:{job.conversation_id}"),
            )
            cur = await conn.execute(
                "SELECT status, sent_at FROM notification_jobs"
                " WHERE recipient_id = %s AND conversation_id = %s AND kind = %s AND job_id <> %s"
                "   AND sent_at IS NOT NULL AND status IN ('sent', 'pending')"
                " ORDER BY sent_at DESC LIMIT 1",
                (job.recipient_id, job.conversation_id, STAFF_UNREAD, job.job_id),
            )
            latest = await cur.fetchone()
            later = None
            if latest and latest[0] == "pending":
                later = now + timedelta(seconds=busy_retry_seconds)
            elif latest and latest[1] + timedelta(seconds=interval_seconds) > now:
                later = latest[1] + timedelta(seconds=interval_seconds)
            if later is not None:
                cur = await conn.execute(
                    "UPDATE notification_jobs SET next_attempt_at = %s WHERE job_id = %s AND status = 'pending'",
                    (later, job.job_id),
                )
                return "deferred" if cur.rowcount else "gone"
            cur = await conn.execute(
                "UPDATE notification_jobs SET sent_at = %s WHERE job_id = %s AND status = 'pending'",
                (now, job.job_id),
            )
            return "reserved" if cur.rowcount else "gone"

    # -- the development mailbox ----------------------------------------------------

    async def add_to_mailbox(self, channel: str, to: str, subject: str, text_body: str, html_body: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO mailbox (channel, to_address, subject, text_body, html_body)"
                " VALUES (%s, %s, %s, %s, %s)",
                (channel, to, subject, text_body, html_body),
            )

    async def list_mailbox(self, limit: int, to_address: str | None) -> list[MailboxRow]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(MailboxRow)) as cur:
            await cur.execute(
                "SELECT item_id, channel, to_address, subject, text_body, html_body, created_at FROM mailbox"
                " WHERE (%(to)s::text IS NULL OR to_address = %(to)s) ORDER BY item_id DESC LIMIT %(limit)s",
                {"to": to_address, "limit": limit},
            )
            return await cur.fetchall()

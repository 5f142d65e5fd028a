"""All of notify's SQL, each query a named method."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
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
# ... and the pairing of a client's invitation with a message alert, per recipient.
_PAIR_LOCK_SPACE = 54_003
STAFF_UNREAD = "staff_unread_email"
MESSAGE_EMAIL = "message_email"
# What a job covered by the combined email says (its status is 'coalesced').
SENT_TOGETHER = "sent together with the message alert"
# What a held job says while it waits for its partner (its status stays 'pending').
HOLD_FOR_INVITATION = "waiting for the Client Portal invitation, to send both in one email"
HOLD_FOR_ALERT = "waiting for a message alert, to send both in one email"
_INVITATION = "kind = 'account_notice' AND notice = 'invitation'"


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
    message_id: str = ""  # The message an alert is about ('' for notices and older jobs)
    claim_id: uuid.UUID | None = None  # The lease this worker holds on the job
    created_at: datetime | None = None

    @property
    def is_invitation(self) -> bool:
        return self.kind == "account_notice" and self.notice == "invitation"


@dataclass(frozen=True)
class Pairing:
    """What the worker does with a client's message alert or invitation (``pair_alert_and_invitation``).

    'together': send one email for both (``partner`` is now leased to this worker too);
    'alone': send it by itself; 'held': postponed to wait for its partner; 'gone': no longer
    this worker's (settled, or taken by another worker's pairing).
    """

    outcome: str
    partner: Job | None = None


@dataclass(frozen=True)
class MailboxRow:
    item_id: int
    channel: str
    to_address: str
    subject: str
    text_body: str
    html_body: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    """One alert as staff see it (ListDeliveryStatus)."""

    message_id: str
    recipient_id: str
    channel: str
    kind: str
    status: str
    feedback: str
    last_error: str
    attempts: int
    updated_at: datetime


@dataclass(frozen=True)
class FeedbackResult:
    suppressed: int
    jobs: int  # jobs the event matched by the provider's message id
    repeated: bool  # this feedback_id was recorded before: nothing changed now


_JOB_COLUMNS = (
    "job_id, kind, channel, event_id, practice_id, conversation_id, recipient_id, to_address, body, attempts,"
    " notice, notice_minutes, link_token, seq, message_id, claim_id, created_at"
)
# Alerts about messages (what ListDeliveryStatus shows).
MESSAGE_KINDS = ("message_email", "message_sms", STAFF_UNREAD)
# Credential notices lose their link when they finish, so a failed one cannot be sent again.
_NOT_REQUEUEABLE = "NOT (kind = 'account_notice' AND notice IN ('invitation', 'password_reset'))"


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
        message_id: str = "",
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
            " recipient_id, message_id, created_at, updated_at, next_attempt_at, status)"
            " SELECT %(key)s, %(event)s, %(kind)s, %(channel)s, %(practice)s, %(conversation)s, %(recipient)s,"
            "  %(message)s, %(now)s, %(now)s, %(now)s,"
            "  CASE WHEN EXISTS (SELECT 1 FROM notification_jobs"
            "    WHERE recipient_id = %(recipient)s AND conversation_id = %(conversation)s AND kind = %(kind)s"
            "      AND status IN ('pending', 'sent', 'skipped')"
            "      AND created_at > %(now)s - make_interval(secs => %(burst)s))"
            "  THEN 'coalesced' ELSE 'pending' END"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING status",
            {
                "key": dedupe_key, "event": event_id, "kind": kind, "channel": channel, "practice": practice_id,
                "conversation": conversation_id, "recipient": recipient_id, "burst": burst_seconds,
                "message": message_id, "now": self._clock.now(),
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
        message_id: str = "",
    ) -> bool:
        """Queue one staff member's delayed email about one message; False for a repeated dedupe key.

        Every message gets its own job (so reading an earlier message does not cancel the
        email about a later one); the worker sends at most one per conversation per interval.
        """
        cur = await conn.execute(
            "INSERT INTO notification_jobs (dedupe_key, event_id, kind, channel, practice_id, conversation_id,"
            " recipient_id, message_id, seq, created_at, updated_at, next_attempt_at, status)"
            " VALUES (%s, %s, %s, 'email', %s, %s, %s, %s, %s, %s, %s, %s, 'pending')"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (dedupe_key, event_id, STAFF_UNREAD, practice_id, conversation_id, recipient_id, message_id, seq,
             self._clock.now(), self._clock.now(), due_at),
        )
        return await cur.fetchone() is not None

    async def add_sms_reply_job(self, conn: psycopg.AsyncConnection, dedupe_key: str, to: str, body: str) -> bool:
        """Queue a consent reply; False when one with this dedupe key was queued before."""
        now = self._clock.now()
        cur = await conn.execute(
            "INSERT INTO notification_jobs (dedupe_key, kind, channel, to_address, body, created_at, updated_at,"
            " next_attempt_at, status)"
            " VALUES (%s, 'sms_reply', 'sms', %s, %s, %s, %s, %s, 'pending')"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (dedupe_key, to, body, now, now, now),
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
            " link_token, created_at, updated_at, next_attempt_at, status)"
            " VALUES (%s, 'account_notice', 'email', %s, %s, %s, %s, %s, %s, %s, 'pending')"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING job_id",
            (dedupe_key, user_id, notice, minutes, link_token, now, now, now),
        )
        return await cur.fetchone() is not None

    async def wake_workers(self, conn: psycopg.AsyncConnection) -> None:
        """Delivered when the transaction commits."""
        await conn.execute("SELECT pg_notify(%s, '')", (WAKE_CHANNEL,))

    # -- the worker -----------------------------------------------------------------

    async def claim_due_jobs(self, limit: int, lease_seconds: float, paused_channels: Sequence[str] = ()) -> list[Job]:
        """Lease up to ``limit`` due jobs (not of ``paused_channels``) to this worker.

        Other workers skip them until the lease runs out: a worker that dies leaves its
        jobs to another after the lease. Only the holder of the claim settles a job.
        """
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(Job)) as cur:
            await cur.execute(
                "UPDATE notification_jobs SET next_attempt_at = %(now)s + make_interval(secs => %(lease)s),"
                "  claim_id = %(claim)s"
                " WHERE job_id IN (SELECT job_id FROM notification_jobs"
                "   WHERE status = 'pending' AND next_attempt_at <= %(now)s AND channel <> ALL(%(paused)s)"
                "   ORDER BY next_attempt_at, job_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_JOB_COLUMNS}",
                {"now": self._clock.now(), "lease": lease_seconds, "limit": limit, "claim": uuid.uuid4(),
                 "paused": list(paused_channels)},
            )
            return await cur.fetchall()

    async def finish_job(
        self, job: Job, status: str, *, last_error: str = "", actor: str = "service:notify",
        covers_through_seq: int = 0, transport: str = "", provider_message_id: str | None = None,
    ) -> bool:
        """Record a job's final outcome (sent, skipped, suppressed, failed or cancelled) with its audit row.

        One short transaction, right after the provider took the email: a crash before it
        commits is the one window in which a job is sent again (after its lease). False when
        the job was no longer ours (settled, or its lease lapsed and another worker claimed it).

        ``covers_through_seq`` (staff unread emails): the other pending jobs of the same staff
        member and conversation up to that seq are settled with it — 'coalesced' into a sent
        email, 'cancelled' with a read one.
        """
        now = self._clock.now()
        async with self.transaction() as conn:
            cur = await conn.execute(
                "UPDATE notification_jobs SET status = %s, last_error = %s, attempts = attempts + 1,"
                " sent_at = CASE WHEN %s = 'sent' THEN %s END, updated_at = %s,"
                " transport = COALESCE(NULLIF(%s, ''), transport),"
                " provider_message_id = COALESCE(%s, provider_message_id), link_token = ''"
                " WHERE job_id = %s AND status = 'pending' AND claim_id IS NOT DISTINCT FROM %s"
                " RETURNING practice_id",
                (status, last_error, status, now, now, transport, provider_message_id, job.job_id, job.claim_id),
            )
            settled = await cur.fetchone()
            if settled is None:
                return False
            covered = 0
            if job.kind == STAFF_UNREAD and covers_through_seq > 0 and status in ("sent", "cancelled"):
                cur = await conn.execute(
                    "UPDATE notification_jobs SET status = %s, updated_at = %s"
                    " WHERE kind = %s AND recipient_id = %s AND conversation_id = %s AND status = 'pending'"
                    "   AND job_id <> %s AND seq <= %s AND (seq > 0 OR %s = 'sent')",
                    ("coalesced" if status == "sent" else "cancelled", now, STAFF_UNREAD, job.recipient_id,
                     job.conversation_id, job.job_id, covers_through_seq, status),
                )
                covered = cur.rowcount
            # The recipient is the target: a client's alerts and notices are found under the client.
            # The practice as stored now (an account notice learns it when its recipient is looked up).
            await audit.record(
                conn, actor=actor, action=f"notification.{job.kind}", outcome=status,
                target=job.recipient_id or f"job:{job.job_id}", practice_id=settled[0],
                detail={"job_id": job.job_id, "conversation_id": job.conversation_id, "event_id": job.event_id,
                        **({"transport": transport} if transport else {}),
                        **({"error": last_error} if last_error else {}), **({"covered": covered} if covered else {})},
            )
        return True

    async def note_practice(self, job: Job, practice_id: str) -> None:
        """An account notice's practice, learnt from its recipient (auth's notices name only the user):
        its audit rows then show in the practice owner's trail."""
        if job.practice_id or not practice_id:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE notification_jobs SET practice_id = %s WHERE job_id = %s AND practice_id = ''",
                (practice_id, job.job_id),
            )

    # -- a client's invitation and message alert in one email -----------------------------

    async def pair_alert_and_invitation(
        self, job: Job, *, practice_id: str, window_seconds: int, lease_seconds: float, await_invitation: bool
    ) -> Pairing:
        """Decide, under the recipient's lock, whether ``job`` (a client's message alert or Client
        Portal invitation) goes with its partner, alone, or waits for one.

        The partner is the recipient's pending job of the other kind (of the recipient's practice,
        ``practice_id``) created within ``window_seconds`` of this one, and not being sent by another worker (a job being sent
        has ``sent_at`` set, as staff emails reserve their interval, until its lease lapses). It is
        leased to this worker (its claim id replaced: whoever held it before now finds it gone).
        Without one, an invitation waits until ``window_seconds`` after it was created; so does an
        alert when ``await_invitation`` (the client has no password) and it is the client's first
        alert and no invitation of theirs has come yet. Otherwise the job is marked as being sent.
        """
        now = self._clock.now()
        async with self.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PAIR_LOCK_SPACE, job.recipient_id))
            cur = await conn.execute(
                "SELECT created_at FROM notification_jobs"
                " WHERE job_id = %s AND status = 'pending' AND claim_id IS NOT DISTINCT FROM %s FOR UPDATE",
                (job.job_id, job.claim_id),
            )
            row = await cur.fetchone()
            if row is None:
                return Pairing("gone")
            created_at = row[0]
            partner_kind = (
                f"{_INVITATION} AND link_token <> '' AND practice_id IN ('', %(practice)s)" if job.kind == MESSAGE_EMAIL
                else "kind = 'message_email' AND practice_id = %(practice)s"
            )
            async with conn.cursor(row_factory=class_row(Job)) as rows:
                await rows.execute(
                    f"SELECT {_JOB_COLUMNS} FROM notification_jobs"
                    f" WHERE recipient_id = %(recipient)s AND {partner_kind} AND status = 'pending'"
                    "   AND job_id <> %(job)s"
                    "   AND created_at BETWEEN %(created)s - make_interval(secs => %(window)s)"
                    "                      AND %(created)s + make_interval(secs => %(window)s)"
                    "   AND (sent_at IS NULL OR next_attempt_at <= %(now)s)"
                    " ORDER BY created_at, job_id LIMIT 1 FOR UPDATE",
                    {"recipient": job.recipient_id, "job": job.job_id, "created": created_at,
                     "window": window_seconds, "now": now, "practice": practice_id},
                )
                partner = await rows.fetchone()
            if partner is not None:
                await conn.execute(
                    "UPDATE notification_jobs SET claim_id = %s, sent_at = %s,"
                    " next_attempt_at = %s + make_interval(secs => %s) WHERE job_id = %s",
                    (job.claim_id, now, now, lease_seconds, partner.job_id),
                )
                await self._mark_sending(conn, job, now)
                return Pairing("together", replace(partner, claim_id=job.claim_id))
            hold_until = created_at + timedelta(seconds=window_seconds)
            wait = now < hold_until and (job.is_invitation or (await_invitation and await self._first_alert(conn, job)))
            if wait:
                await conn.execute(
                    "UPDATE notification_jobs SET next_attempt_at = %s, last_error = %s, sent_at = NULL,"
                    " updated_at = %s WHERE job_id = %s",
                    (hold_until, HOLD_FOR_ALERT if job.is_invitation else HOLD_FOR_INVITATION, now, job.job_id),
                )
                return Pairing("held")
            await self._mark_sending(conn, job, now)
            return Pairing("alone")

    @staticmethod
    async def _mark_sending(conn: psycopg.AsyncConnection, job: Job, now: datetime) -> None:
        await conn.execute("UPDATE notification_jobs SET sent_at = %s WHERE job_id = %s", (now, job.job_id))

    @staticmethod
    async def _first_alert(conn: psycopg.AsyncConnection, job: Job) -> bool:
        """No earlier message alert and no invitation for the recipient: one may be on its way
        (enabling a client with no password invites them just before the first message)."""
        cur = await conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM notification_jobs WHERE recipient_id = %s"
            f"   AND (({_INVITATION}) OR (kind = 'message_email' AND job_id < %s)))",
            (job.recipient_id, job.job_id),
        )
        return (await cur.fetchone())[0]

    async def release_partner(self, partner: Job, delay_seconds: float) -> None:
        """The combined email did not go: the partner is due again by itself (no worker holds it)."""
        now = self._clock.now()
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE notification_jobs SET claim_id = NULL, sent_at = NULL,"
                " next_attempt_at = %s + make_interval(secs => %s), updated_at = %s"
                " WHERE job_id = %s AND status = 'pending' AND claim_id IS NOT DISTINCT FROM %s",
                (now, delay_seconds, now, partner.job_id, partner.claim_id),
            )

    async def finish_together(self, job: Job, partner: Job, *, transport: str, provider_message_id: str,
                              actor: str = "service:notify") -> bool:
        """The combined email went: in one transaction, the alert is 'sent' (with the provider's id,
        so feedback and delivery status find it) and the invitation 'coalesced' into it, each with
        its audit row. False when ``job`` was no longer this worker's."""
        alert, invitation = (job, partner) if job.kind == MESSAGE_EMAIL else (partner, job)
        now = self._clock.now()
        settled: dict[int, str] = {}
        async with self.transaction() as conn:
            cur = await conn.execute(
                "UPDATE notification_jobs SET status = 'sent', last_error = '', attempts = attempts + 1, sent_at = %s,"
                " updated_at = %s, transport = %s, provider_message_id = %s"
                " WHERE job_id = %s AND status = 'pending' AND claim_id IS NOT DISTINCT FROM %s RETURNING practice_id",
                (now, now, transport, provider_message_id, alert.job_id, alert.claim_id),
            )
            if (row := await cur.fetchone()) is not None:
                settled[alert.job_id] = row[0]
            cur = await conn.execute(
                "UPDATE notification_jobs SET status = 'coalesced', last_error = %s, attempts = attempts + 1,"
                " sent_at = %s, updated_at = %s, transport = %s, link_token = '',"
                " practice_id = CASE WHEN practice_id = '' THEN %s ELSE practice_id END"
                " WHERE job_id = %s AND status = 'pending' AND claim_id IS NOT DISTINCT FROM %s RETURNING practice_id",
                (SENT_TOGETHER, now, now, transport, alert.practice_id, invitation.job_id, invitation.claim_id),
            )
            if (row := await cur.fetchone()) is not None:
                settled[invitation.job_id] = row[0]
            if alert.job_id in settled:
                await audit.record(
                    conn, actor=actor, action=f"notification.{alert.kind}", outcome="sent", target=alert.recipient_id,
                    practice_id=settled[alert.job_id],
                    detail={"job_id": alert.job_id, "conversation_id": alert.conversation_id,
                            "event_id": alert.event_id, "transport": transport, "with_invitation": invitation.job_id},
                )
            if invitation.job_id in settled:
                await audit.record(
                    conn, actor=actor, action=f"notification.{invitation.kind}", outcome="coalesced",
                    target=invitation.recipient_id, practice_id=settled[invitation.job_id],
                    detail={"job_id": invitation.job_id, "transport": transport, "sent_with": alert.job_id},
                )
        return job.job_id in settled

    async def retry_job_later(self, job: Job, delay_seconds: float, last_error: str, *, counts: bool = True) -> None:
        """Try again after ``delay_seconds``; a staff email's reservation of its interval is let go.

        ``counts=False``: the job was not at fault (its provider is down) and keeps its attempts.
        """
        now = self._clock.now()
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE notification_jobs SET attempts = attempts + %s, last_error = %s, sent_at = NULL,"
                " next_attempt_at = %s + make_interval(secs => %s), updated_at = %s"
                " WHERE job_id = %s AND status = 'pending' AND claim_id IS NOT DISTINCT FROM %s",
                (1 if counts else 0, last_error, now, delay_seconds, now, job.job_id, job.claim_id),
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

    async def record_audits(self, *, actor: str, action: str, outcome: str, target: str = "", practice_id: str = "",
                            details: Sequence[dict]) -> None:
        """One audit row per detail (e.g. one per client a read concerns), in one transaction."""
        async with self.transaction() as conn:
            for detail in details:
                await audit.record(conn, actor=actor, action=action, outcome=outcome, target=target,
                                   practice_id=practice_id, detail=detail)

    # -- suppression and provider feedback ---------------------------------------------

    async def suppression_reason(self, address: str) -> str | None:
        """'bounce' or 'complaint' when the address is on the suppression list, else None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT reason FROM suppressed_addresses WHERE address = %s",
                                     (address.strip().lower(),))
            row = await cur.fetchone()
            return row[0] if row else None

    async def record_feedback(
        self, *, feedback_id: str, kind: str, provider_message_id: str, addresses: Sequence[str],
        permanent: bool, actor: str,
    ) -> FeedbackResult:
        """Apply one provider event once: suppress addresses (a permanent bounce, a complaint) and
        mark the job it is about (matched by the provider's message id) delivered or bounced."""
        now = self._clock.now()
        async with self.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO delivery_feedback (feedback_id, kind, provider_message_id, permanent, received_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (feedback_id) DO NOTHING RETURNING feedback_id",
                (feedback_id, kind, provider_message_id, permanent, now),
            )
            if await cur.fetchone() is None:
                cur = await conn.execute("SELECT suppressed FROM delivery_feedback WHERE feedback_id = %s",
                                         (feedback_id,))
                return FeedbackResult(suppressed=(await cur.fetchone())[0], jobs=0, repeated=True)
            suppressed = 0
            if kind == "complaint" or (kind == "bounce" and permanent):
                reason = "complaint" if kind == "complaint" else "bounce"
                for address in sorted({a.strip().lower() for a in addresses}):
                    cur = await conn.execute(
                        "INSERT INTO suppressed_addresses (address, reason, feedback_id, created_at)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (address) DO NOTHING",
                        (address, reason, feedback_id, now),
                    )
                    suppressed += cur.rowcount
            jobs: list[tuple] = []
            if provider_message_id:
                # A bounce outranks a delivery report; a complaint comes after delivery.
                feedback = {"delivery": "delivered", "bounce": "bounced", "complaint": "complained"}[kind]
                cur = await conn.execute(
                    "UPDATE notification_jobs SET feedback = %s, updated_at = %s"
                    " WHERE provider_message_id = %s AND status = 'sent'"
                    "   AND NOT (feedback = 'bounced' AND %s = 'delivered')"
                    " RETURNING job_id, practice_id, recipient_id",
                    (feedback, now, provider_message_id, feedback),
                )
                jobs = await cur.fetchall()
            await conn.execute("UPDATE delivery_feedback SET suppressed = %s WHERE feedback_id = %s",
                               (suppressed, feedback_id))
            # About the person the email went to (a client's bounce is found under the client).
            recipients = {recipient for _, _, recipient in jobs if recipient}
            await audit.record(
                conn, actor=actor, action=f"delivery.{kind}", outcome="recorded",
                target=recipients.pop() if len(recipients) == 1 else f"feedback:{feedback_id}",
                practice_id=jobs[0][1] if jobs else "",
                detail={"feedback_id": feedback_id, "job_ids": [job_id for job_id, _, _ in jobs],
                        "suppressed": suppressed, "permanent": permanent},
            )
        return FeedbackResult(suppressed=suppressed, jobs=len(jobs), repeated=False)

    # -- delivery status and requeueing -------------------------------------------------

    async def list_deliveries(
        self, practice_id: str, conversation_id: str, message_ids: Sequence[str]
    ) -> list[DeliveryRow]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(DeliveryRow)) as cur:
            await cur.execute(
                "SELECT message_id, recipient_id, channel, kind, status, feedback, last_error, attempts, updated_at"
                " FROM notification_jobs"
                " WHERE conversation_id = %(conversation)s AND practice_id = %(practice)s AND kind = ANY(%(kinds)s)"
                "   AND (cardinality(%(messages)s::text[]) = 0 OR message_id = ANY(%(messages)s::text[]))"
                " ORDER BY job_id",
                {"conversation": conversation_id, "practice": practice_id, "kinds": list(MESSAGE_KINDS),
                 "messages": list(message_ids)},
            )
            return await cur.fetchall()

    async def requeue_failed(self, practice_id: str | None, job_ids: Sequence[int], actor: str) -> list[int]:
        """Failed jobs (of the practice, or any for an operator) pending again with their attempts reset."""
        now = self._clock.now()
        async with self.transaction() as conn:
            cur = await conn.execute(
                "UPDATE notification_jobs SET status = 'pending', attempts = 0, last_error = '',"
                " next_attempt_at = %(now)s, updated_at = %(now)s, claim_id = NULL"
                " WHERE status = 'failed' AND (%(practice)s::text IS NULL OR practice_id = %(practice)s)"
                "   AND (cardinality(%(ids)s::bigint[]) = 0 OR job_id = ANY(%(ids)s::bigint[]))"
                f"  AND {_NOT_REQUEUEABLE}"
                " RETURNING job_id, practice_id, recipient_id",
                {"now": now, "practice": practice_id, "ids": list(job_ids)},
            )
            rows = sorted(await cur.fetchall())
            requeued = [job_id for job_id, _, _ in rows]
            # One row per practice and recipient, so each shows in its practice's trail under the
            # person (a client's requeued alerts under the client); one row when nothing was requeued.
            groups: dict[tuple[str, str], list[int]] = {}
            for job_id, job_practice, recipient in rows:
                groups.setdefault((job_practice, recipient), []).append(job_id)
            for (job_practice, recipient), ids in sorted(groups.items()) or [((practice_id or "", ""), [])]:
                await audit.record(
                    conn, actor=actor, action="notification.requeue", outcome="requeued", target=recipient,
                    practice_id=job_practice,
                    detail={"job_ids": ids[:500], "requeued": len(requeued), "asked": len(job_ids)},
                )
            if requeued:
                await self.wake_workers(conn)
        return requeued

    async def queue_stats(self) -> tuple[int, float]:
        """(pending jobs, age in seconds of the oldest job that is due now, 0 when none is)."""
        now = self._clock.now()
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM %s - min(next_attempt_at) FILTER"
                "   (WHERE next_attempt_at <= %s)), 0)"
                " FROM notification_jobs WHERE status = 'pending'",
                (now, now),
            )
            pending, age = await cur.fetchone()
            return int(pending), max(0.0, float(age))

    # -- clients' notification settings -----------------------------------------------

    async def is_discreet(self, client_id: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT discreet FROM client_notification_settings WHERE client_id = %s",
                                     (client_id,))
            row = await cur.fetchone()
            return bool(row and row[0])

    async def read_client_settings(self, client_id: str, practice_id: str, actor: str) -> bool:
        """The client's discreet flag, with the audit row of the read."""
        async with self.transaction() as conn:
            cur = await conn.execute("SELECT discreet FROM client_notification_settings WHERE client_id = %s",
                                     (client_id,))
            row = await cur.fetchone()
            await audit.record(conn, actor=actor, action="client_notification_settings.read", outcome="ok",
                               target=client_id, practice_id=practice_id)
            return bool(row and row[0])

    async def save_client_settings(self, client_id: str, practice_id: str, discreet: bool, actor: str) -> bool:
        now = self._clock.now()
        async with self.transaction() as conn:
            cur = await conn.execute(
                "SELECT discreet FROM client_notification_settings WHERE client_id = %s FOR UPDATE", (client_id,))
            before = await cur.fetchone()
            await conn.execute(
                "INSERT INTO client_notification_settings (client_id, practice_id, discreet, updated_by, updated_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id) DO UPDATE"
                " SET discreet = EXCLUDED.discreet, updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                (client_id, practice_id, discreet, actor, now),
            )
            await audit.record(
                conn, actor=actor, action="client_notification_settings.update", outcome="ok", target=client_id,
                practice_id=practice_id,
                detail={"discreet": discreet, "was": bool(before and before[0])},
            )
        return discreet

    # -- the development mailbox ----------------------------------------------------

    async def add_to_mailbox(
        self, channel: str, to: str, subject: str, text_body: str, html_body: str, sender: str = ""
    ) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO mailbox (channel, to_address, subject, text_body, html_body, sender)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING item_id",
                (channel, to, subject, text_body, html_body, sender),
            )
            return (await cur.fetchone())[0]

    async def list_mailbox(self, limit: int, to_address: str | None) -> list[MailboxRow]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(MailboxRow)) as cur:
            await cur.execute(
                "SELECT item_id, channel, to_address, subject, text_body, html_body, created_at FROM mailbox"
                " WHERE (%(to)s::text IS NULL OR to_address = %(to)s) ORDER BY item_id DESC LIMIT %(limit)s",
                {"to": to_address, "limit": limit},
            )
            return await cur.fetchall()

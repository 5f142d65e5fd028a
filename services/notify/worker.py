"""The delivery worker: claims due notification jobs and delivers them.

It wakes on every enqueue (LISTEN on ``notify_jobs``; enqueue sends pg_notify
when it commits) and polls as well, so a missed wake-up costs at most one poll
interval. Jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, so any
number of notify replicas share the queue. Everything a job needs is fetched at
send time: the email address and practice name from auth, the magic link (its
15 minutes run from sending) and, for texts, consent asked right before sending.

A staff unread email is due some minutes after its message. When it is due the
worker first takes the (staff member, conversation) pair's email interval (or
postpones the job until it reopens), then asks messaging whether the person has
read the message: if so the job is cancelled; if messaging cannot answer, the
job is retried later for as long as it takes (never sent blindly, never dropped).

"Now" comes from the injected clock. A test's ManualClock runs ``drain`` each
time it advances, so due work is done when ``advance`` returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2 as messaging_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc

from services.notify import render
from services.notify.config import NotifyConfig
from services.notify.storage import STAFF_UNREAD, WAKE_CHANNEL, Job, NotifyStorage
from services.notify.transports import Sms, Transport

log = logging.getLogger("confidant.notify.worker")

NO_CONSENT = "no consent"
DEFAULT_LINK_MINUTES = 15
# Answers from our own services that retrying will not change.
_PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


class PermanentFailure(Exception):
    """The job cannot succeed however often it is retried; the message is an id-only reason."""


class Skip(Exception):
    """The job must not be delivered (e.g. no SMS consent); the message is the reason."""


def _describe(exc: BaseException) -> str:
    """A short reason for last_error: codes and class names, never addresses or texts."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"rpc {exc.code().name}"
    if isinstance(exc, PermanentFailure | Skip):
        return str(exc)
    return type(exc).__name__


class Deliverer:
    """Turns one job into one email or text."""

    def __init__(
        self,
        config: NotifyConfig,
        auth: auth_grpc.AuthServiceStub,
        consent: consent_grpc.ConsentServiceStub,
        transport: Transport,
    ) -> None:
        self._config = config
        self._auth = auth
        self._consent = consent
        self._transport = transport

    async def deliver(self, job: Job) -> None:
        if job.kind == "message_email":
            await self._message_email(job)
        elif job.kind == "message_sms":
            await self._message_sms(job)
        elif job.kind == "account_notice":
            await self._account_notice(job)
        elif job.kind == STAFF_UNREAD:
            await self._staff_unread_email(job)
        elif job.kind == "sms_reply":
            await self._transport.send_sms(Sms(to=job.to_address or "", body=job.body or ""))
        else:
            raise PermanentFailure(f"unknown kind {job.kind}")

    async def _message_email(self, job: Job) -> None:
        user = await self._recipient(job)
        if not user.email:
            raise PermanentFailure("recipient has no email address")
        practice_name = await self._practice_name(job.practice_id)
        link = await self._auth.CreateMagicLink(
            auth_pb.CreateMagicLinkRequest(user_id=job.recipient_id, conversation_id=job.conversation_id)
        )
        minutes = DEFAULT_LINK_MINUTES
        if link.HasField("expires_at"):
            # Against the wall clock, as auth minted the link: display only, not a rule of ours.
            remaining = (link.expires_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
            minutes = max(1, round(remaining / 60))
        email = render.message_email(
            user.email, practice_name, render.magic_link_url(self._config.public_url, link.token), minutes
        )
        await self._transport.send_email(email)

    async def _staff_unread_email(self, job: Job) -> None:
        user = await self._recipient(job)
        if user.role == auth_pb.ROLE_CLIENT:
            raise PermanentFailure("recipient is not staff")
        if not user.email:
            raise PermanentFailure("recipient has no email address")
        link = render.conversation_url(self._config.public_url, job.conversation_id)
        await self._transport.send_email(render.staff_unread_email(user.email, link))

    async def _account_notice(self, job: Job) -> None:
        if job.notice not in ("locked", "invitation", "password_reset"):
            raise PermanentFailure(f"unknown notice {job.notice}")
        user = await self._recipient(job, same_practice=False)
        if not user.email:
            raise PermanentFailure("recipient has no email address")
        if job.notice == "locked":
            await self._transport.send_email(render.account_locked_email(user.email, job.notice_minutes))
            return
        # Invitations and password resets.
        if not job.link_token:
            raise PermanentFailure("notice has no link")
        practice_name = await self._practice_name(user.practice_id)
        url = render.credential_link_url(self._config.public_url, job.link_token)
        is_client = user.role == auth_pb.ROLE_CLIENT
        if job.notice == "invitation":
            email = render.invitation_email(user.email, practice_name, url, is_client=is_client)
        else:
            email = render.password_reset_email(user.email, practice_name, url)
        await self._transport.send_email(email)

    async def _message_sms(self, job: Job) -> None:
        # Asked right before sending, never cached: a STOP a second ago must count.
        answer = await self._consent.CheckSmsAllowed(consent_pb.CheckSmsAllowedRequest(client_id=job.recipient_id))
        if not answer.allowed or not answer.phone_number:
            raise Skip(NO_CONSENT)
        await self._recipient(job)
        practice_name = await self._practice_name(job.practice_id)
        await self._transport.send_sms(render.message_sms(answer.phone_number, practice_name))

    async def _recipient(self, job: Job, same_practice: bool = True) -> auth_pb.User:
        try:
            reply = await self._auth.GetUsers(auth_pb.GetUsersRequest(user_ids=[job.recipient_id]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise PermanentFailure("recipient not found") from exc
            raise
        for user in reply.users:
            if user.user_id == job.recipient_id:
                if same_practice and user.practice_id != job.practice_id:
                    raise PermanentFailure("recipient is not in the practice")
                return user
        raise PermanentFailure("recipient not found")

    async def _practice_name(self, practice_id: str) -> str:
        reply = await self._auth.GetPractice(auth_pb.GetPracticeRequest(practice_id=practice_id))
        return reply.practice.name


class Worker:
    def __init__(
        self,
        config: NotifyConfig,
        storage: NotifyStorage,
        deliverer: Deliverer,
        messaging: messaging_grpc.MessagingServiceStub,
    ) -> None:
        self._config = config
        self._storage = storage
        self._deliverer = deliverer
        self._messaging = messaging
        # One batch at a time per worker: the poll loop and a test clock's drain never overlap.
        self._batch = asyncio.Lock()

    async def run(self) -> None:
        """The background loop: drain due jobs, then sleep until woken or the poll interval ends."""
        async with await psycopg.AsyncConnection.connect(self._config.common.database_url, autocommit=True) as listen:
            await listen.execute(f"LISTEN {WAKE_CHANNEL}")
            while True:
                handled = await self.run_once()
                if handled >= self._config.batch_size:
                    continue  # more may be due
                async for _ in listen.notifies(timeout=self._config.poll_interval_seconds, stop_after=1):
                    pass

    async def run_once(self) -> int:
        """Claim one batch of due jobs and deliver them; return how many were handled.

        Staff emails of the same person and conversation are handled one after the
        other, so the first one's email (or the read cursor it found) settles the rest.
        """
        async with self._batch:
            jobs = await self._storage.claim_due_jobs(self._config.batch_size, self._config.claim_lease_seconds)
            lanes: dict[tuple, list[Job]] = {}
            for job in jobs:
                key = (job.recipient_id, job.conversation_id) if job.kind == STAFF_UNREAD else (job.job_id,)
                lanes.setdefault(key, []).append(job)
            if lanes:
                await asyncio.gather(*(self._handle_in_order(lane) for lane in lanes.values()))
            return len(jobs)

    async def drain(self) -> None:
        """Handle every job due now (each handled job is finished or pushed into the future)."""
        while await self.run_once():
            pass

    async def _handle_in_order(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            await self._handle(job)

    async def _handle(self, job: Job) -> None:
        fields = {"job_id": job.job_id, "kind": job.kind, "attempt": job.attempts + 1}
        covers_through_seq = 0
        try:
            if job.kind == STAFF_UNREAD:
                covers_through_seq = await self._staff_unread_check(job, fields)
                if covers_through_seq is None:
                    return
            await self._deliverer.deliver(job)
        except Skip as exc:
            await self._storage.finish_job(job, "skipped", last_error=str(exc))
            log.info("notification skipped", extra={"fields": {**fields, "reason": str(exc)}})
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(job, exc, fields)
            return
        await self._storage.finish_job(job, "sent", covers_through_seq=covers_through_seq)
        log.info("notification sent", extra={"fields": fields})

    async def _staff_unread_check(self, job: Job, fields: dict) -> int | None:
        """Decide a due staff email: the conversation's last seq when it should go now, else None.

        None means the job was settled or postponed here: deferred to the pair's next
        email window, cancelled because the message was read, or retried because
        messaging did not answer.
        """
        outcome = await self._storage.reserve_staff_email(
            job, self._config.staff_email_interval_seconds, self._config.claim_lease_seconds
        )
        if outcome != "reserved":
            log.info("staff email deferred", extra={"fields": {**fields, "outcome": outcome}})
            return None
        try:
            state = await self._messaging.GetReadState(
                messaging_pb.GetReadStateRequest(conversation_id=job.conversation_id, user_id=job.recipient_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                await self._storage.finish_job(job, "cancelled", last_error="conversation not found")
                log.info("staff email cancelled", extra={"fields": {**fields, "reason": "conversation not found"}})
            elif exc.code() in _PERMANENT_CODES:
                await self._failed(job, exc, fields)
            else:
                # Never send without knowing it is unread, never drop: ask again later.
                delay = self._backoff(job.attempts + 1, self._config.retry_max_seconds)
                await self._storage.retry_job_later(job, delay, _describe(exc))
                log.info("staff email waits for messaging", extra={"fields": {
                    **fields, "reason": _describe(exc), "retry_in_s": delay}})
            return None
        # A job from before messaging reported seqs asks: is anything in the conversation unread?
        seq = job.seq or state.last_seq
        if not state.participant or state.read_seq >= seq:
            reason = "read" if state.participant else "not a participant"
            await self._storage.finish_job(
                job, "cancelled", last_error=reason, covers_through_seq=state.read_seq if state.participant else 0
            )
            log.info("staff email cancelled", extra={"fields": {**fields, "reason": reason}})
            return None
        return max(state.last_seq, seq)

    def _backoff(self, attempts: int, cap: float | None = None) -> float:
        delay = self._config.retry_base_seconds * 2 ** min(attempts - 1, 30)
        return min(delay, cap) if cap is not None else delay

    async def _failed(self, job: Job, exc: Exception, fields: dict) -> None:
        reason = _describe(exc)
        permanent = isinstance(exc, PermanentFailure) or (
            isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PERMANENT_CODES
        )
        attempts = job.attempts + 1
        if permanent or attempts >= self._config.max_attempts:
            await self._storage.finish_job(job, "failed", last_error=reason)
            log.warning("notification failed", extra={"fields": {**fields, "reason": reason}})
            return
        delay = self._backoff(attempts)
        await self._storage.retry_job_later(job, delay, reason)
        log.info("notification retry", extra={"fields": {**fields, "reason": reason, "retry_in_s": delay}})

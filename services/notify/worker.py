"""The delivery worker: claims due notification jobs and delivers them.

It wakes on every enqueue (LISTEN on ``notify_jobs``; enqueue sends pg_notify
when it commits) and polls as well, so a missed wake-up costs at most one poll
interval. Jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, so any
number of notify replicas share the queue. Everything a job needs is fetched at
send time: the email address and practice name from auth, the magic link (its
15 minutes run from sending) and, for texts, consent asked right before sending.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc

from services.notify import render
from services.notify.config import NotifyConfig
from services.notify.storage import WAKE_CHANNEL, Job, NotifyStorage
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
            remaining = (link.expires_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
            minutes = max(1, round(remaining / 60))
        email = render.message_email(
            user.email, practice_name, render.magic_link_url(self._config.public_url, link.token), minutes
        )
        await self._transport.send_email(email)

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
    def __init__(self, config: NotifyConfig, storage: NotifyStorage, deliverer: Deliverer) -> None:
        self._config = config
        self._storage = storage
        self._deliverer = deliverer

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
        """Claim one batch of due jobs and deliver them; return how many were handled."""
        jobs = await self._storage.claim_due_jobs(self._config.batch_size, self._config.claim_lease_seconds)
        if jobs:
            await asyncio.gather(*(self._handle(job) for job in jobs))
        return len(jobs)

    async def _handle(self, job: Job) -> None:
        fields = {"job_id": job.job_id, "kind": job.kind, "attempt": job.attempts + 1}
        try:
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
        await self._storage.finish_job(job, "sent")
        log.info("notification sent", extra={"fields": fields})

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
        delay = self._config.retry_base_seconds * 2 ** (attempts - 1)
        await self._storage.retry_job_later(job, delay, reason)
        log.info("notification retry", extra={"fields": {**fields, "reason": reason, "retry_in_s": delay}})

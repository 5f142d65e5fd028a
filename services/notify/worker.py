"""The delivery worker: claims due notification jobs and delivers them.

It wakes on every enqueue (LISTEN on ``notify_jobs``; enqueue sends pg_notify
when it commits) and polls as well, so a missed wake-up costs at most one poll
interval. Everything a job needs is fetched at send time: the email address and
practice name from auth, the magic link (its 15 minutes run from sending), the
client's discreet setting and, for texts, consent asked right before sending.

Exactly once. Jobs are deduplicated when enqueued (per event, recipient and
channel) and *leased* when claimed (``FOR UPDATE SKIP LOCKED`` sets a claim id
and pushes the job's due time out by the lease): another worker takes a job
only after its lease, so a worker that dies leaves its jobs to the others, and
only the claim's holder settles a job. Each job is marked sent, with the
provider's message id, in one short transaction right after the provider took
it. The residual window, stated honestly: a crash after the provider accepted an
email and before that commit sends that one email again after the lease
(at-least-once there, for at most one batch of jobs per crash). Provider calls
time out well inside the lease (the configuration insists), so a slow provider
does not let two live workers send the same job.

Failures. A provider's permanent refusal (a rejected or invalid address, an SMTP
5xx) fails the job at once with a PHI-free reason. Throttling, 5xx and
connection errors are retried with exponential backoff and full jitter, up to
max_attempts. A provider outage must not burn every job's attempts: the first
transient failure opens the channel's breaker, the channel's jobs are not
claimed while it is open, and failures while it is tripped (the provider is
down, not the job) defer jobs without counting an attempt; the first success
closes it, so a backlog drains by itself when the provider returns. An address
on the suppression list (a permanent bounce, a complaint) is not sent to and the
job is recorded as suppressed.

One email instead of two. Enabling a client who has no password invites them (auth's
notice) just before the clinician's first message alerts them (messaging's relay): the two
reach notify within a second, in either order. A client's invitation therefore waits up to
``invitation_hold_seconds`` for a message alert, and a client's first alert while they have
no password (and no invitation has come) waits as long for the invitation; whichever of the
pair is handled second sends one email carrying both, records the alert as sent and settles
the invitation as covered by it, in one transaction. The pairing is decided under a lock per
recipient and leases the partner to the same claim, so the lease rules above hold for both;
if the email does not go, the partner is let go to be sent (or paired) again.

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
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2 as messaging_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc

from services.common.clock import Clock
from services.notify import render
from services.notify.config import NotifyConfig
from services.notify.handlers import NO_CONSENT
from services.notify.metrics import NotifyMetrics
from services.notify.storage import MESSAGE_EMAIL, STAFF_UNREAD, WAKE_CHANNEL, Job, NotifyStorage
from services.notify.transports import Email, ProviderError, Sms, TransientError, Transports

log = logging.getLogger("confidant.notify.worker")

DEFAULT_LINK_MINUTES = 15
NO_SMS_TRANSPORT = "texts are not sent by this deployment"
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


class Suppressed(Exception):
    """The address is on the suppression list; the message is the reason (no address)."""


class Held(Exception):
    """The job was postponed to wait for its partner (an invitation for an alert, or the reverse)."""


class Gone(Exception):
    """The job is no longer this worker's: settled meanwhile, or taken into another's combined email."""


def _describe(exc: BaseException) -> str:
    """A short reason for last_error: codes and class names, never addresses or texts."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"rpc {exc.code().name}"
    if isinstance(exc, ProviderError):
        return exc.reason
    if isinstance(exc, PermanentFailure | Skip | Suppressed):
        return str(exc)
    return type(exc).__name__


def full_jitter(base: float, cap: float, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt - 1, 30)))


class Breaker:
    """One channel's provider health, decided on the injected clock.

    Closed while the provider takes messages. A transient failure opens it for a
    jittered, growing pause (the channel's jobs are not claimed meanwhile); after the
    pause a batch probes the provider, and the first success closes it.
    """

    def __init__(self, clock: Clock, base: float, cap: float) -> None:
        self._clock = clock
        self._base = base
        self._cap = cap
        self.failures = 0
        self.resume_at: datetime | None = None

    def is_open(self) -> bool:
        return self.resume_at is not None and self._clock.now() < self.resume_at

    def seconds_left(self) -> float:
        if self.resume_at is None:
            return 0.0
        return max(0.0, (self.resume_at - self._clock.now()).total_seconds())

    def record_failure(self) -> bool:
        """Note a transient failure; True when the provider was working until now (the job is to blame)."""
        first = self.failures == 0
        self.failures += 1
        pause = full_jitter(self._base, self._cap, self.failures)
        self.resume_at = self._clock.now() + timedelta(seconds=pause)
        return first

    def record_success(self) -> None:
        self.failures = 0
        self.resume_at = None


@dataclass(frozen=True)
class Receipt:
    """A provider took the message: which transport, and the id it gave."""

    transport: str
    provider_message_id: str
    # The job the same email covered (a client's invitation with their message alert, or the reverse).
    together: Job | None = None


class Outbound:
    """One channel's way out: its transport's call, timed, with the channel's breaker."""

    def __init__(self, transport: str, send: Callable[[object], Awaitable[str]], breaker: Breaker,
                 metrics: NotifyMetrics) -> None:
        self.transport = transport
        self._send = send
        self.breaker = breaker
        self._latency = metrics.send_seconds.labels(transport=transport)

    async def send(self, item: Email | Sms) -> Receipt:
        started = time.perf_counter()
        try:
            provider_message_id = await self._send(item)
        except TransientError as exc:
            exc.outage = not self.breaker.record_failure()
            raise
        finally:
            self._latency.observe(time.perf_counter() - started)
        self.breaker.record_success()
        return Receipt(self.transport, provider_message_id)


class Deliverer:
    """Turns one job into one email or text."""

    def __init__(
        self,
        config: NotifyConfig,
        auth: auth_grpc.AuthServiceStub,
        consent: consent_grpc.ConsentServiceStub,
        transports: Transports,
        storage: NotifyStorage,
        clock: Clock,
        metrics: NotifyMetrics,
        renderer: render.Renderer,
    ) -> None:
        self._config = config
        self._auth = auth
        self._consent = consent
        self._storage = storage
        self._render = renderer
        base, cap = config.retry_base_seconds, config.retry_max_seconds
        self.email = Outbound(transports.email.name, transports.email.send_email, Breaker(clock, base, cap), metrics)
        self.sms = (
            Outbound(transports.sms.name, transports.sms.send_sms, Breaker(clock, base, cap), metrics)
            if transports.sms is not None else None
        )

    def breakers(self) -> dict[str, Breaker]:
        found = {"email": self.email.breaker}
        if self.sms is not None:
            found["sms"] = self.sms.breaker
        return found

    async def deliver(self, job: Job) -> Receipt:
        if job.kind == "message_email":
            return await self._message_email(job)
        if job.kind == "message_sms":
            return await self._message_sms(job)
        if job.kind == "account_notice":
            return await self._account_notice(job)
        if job.kind == STAFF_UNREAD:
            return await self._staff_unread_email(job)
        if job.kind == "sms_reply":
            return await self._text(Sms(to=job.to_address or "", body=job.body or ""))
        raise PermanentFailure(f"unknown kind {job.kind}")

    async def _message_email(self, job: Job) -> Receipt:
        user = await self._recipient(job)
        address = await self._email_address(user)
        brand = await self._brand(user)
        partner = await self._pair(job, user)
        if partner is not None:
            return await self._together(job, partner, user, address, brand)
        url, minutes, ends_at = await self._magic_link(job)
        return await self.email.send(self._render.message_email(address, brand, url, minutes, ends_at))

    async def _magic_link(self, alert: Job) -> tuple[str, int, datetime | None]:
        """A quick sign-in link minted now (its window runs from sending): the URL, its minutes, its end."""
        link = await self._auth.CreateMagicLink(
            auth_pb.CreateMagicLinkRequest(user_id=alert.recipient_id, conversation_id=alert.conversation_id)
        )
        minutes, ends_at = DEFAULT_LINK_MINUTES, None
        if link.HasField("expires_at"):
            # Against the wall clock, as auth minted the link: display only, not a rule of ours.
            ends_at = link.expires_at.ToDatetime(tzinfo=UTC)
            minutes = max(1, round((ends_at - datetime.now(UTC)).total_seconds() / 60))
        return render.magic_link_url(self._config.public_url, link.token), minutes, ends_at

    async def _pair(self, job: Job, user: auth_pb.User) -> Job | None:
        """The job's partner for a combined email, or None to send it alone; raises Held or Gone.

        A client with no password may be about to receive their invitation: their first alert waits for it.
        """
        if self._config.invitation_hold_seconds <= 0:
            return None
        pairing = await self._storage.pair_alert_and_invitation(
            job, practice_id=user.practice_id, window_seconds=self._config.invitation_hold_seconds,
            lease_seconds=self._config.claim_lease_seconds,
            await_invitation=job.kind == MESSAGE_EMAIL and not user.has_password,
        )
        if pairing.outcome == "held":
            raise Held()
        if pairing.outcome == "gone":
            raise Gone()
        return pairing.partner

    async def _together(self, job: Job, partner: Job, user: auth_pb.User, address: str,
                        brand: render.Branding) -> Receipt:
        """One email for a client's message alert and Client Portal invitation."""
        alert, invitation = (job, partner) if job.kind == MESSAGE_EMAIL else (partner, job)
        try:
            url, minutes, ends_at = await self._magic_link(alert)
            invitation_url = render.credential_link_url(self._config.public_url, invitation.link_token)
            email = self._render.message_and_invitation_email(address, brand, url, minutes, invitation_url, ends_at)
            receipt = await self.email.send(email)
        except BaseException:
            # Not sent: the partner goes back to the queue, to be sent (or paired) by itself.
            await asyncio.shield(self._storage.release_partner(partner, self._config.retry_base_seconds))
            raise
        return replace(receipt, together=partner)

    async def _staff_unread_email(self, job: Job) -> Receipt:
        user = await self._recipient(job)
        if user.role == auth_pb.ROLE_CLIENT:
            raise PermanentFailure("recipient is not staff")
        address = await self._email_address(user)
        link = render.conversation_url(self._config.public_url, job.conversation_id)
        return await self.email.send(self._render.staff_unread_email(address, await self._brand(user), link))

    async def _account_notice(self, job: Job) -> Receipt:
        if job.notice not in ("locked", "invitation", "password_reset"):
            raise PermanentFailure(f"unknown notice {job.notice}")
        user = await self._recipient(job, same_practice=False)
        # auth's notices name only the user: the practice, for the audit trail, comes from auth now.
        await self._storage.note_practice(job, user.practice_id)
        address = await self._email_address(user)
        brand = await self._brand(user)
        is_client = user.role == auth_pb.ROLE_CLIENT
        if job.notice == "locked":
            recipient = "client" if is_client else "owner" if user.role == auth_pb.ROLE_OWNER else "staff"
            return await self.email.send(
                self._render.account_locked_email(address, brand, job.notice_minutes, recipient=recipient))
        # Invitations and password resets.
        if not job.link_token:
            raise PermanentFailure("notice has no link")
        url = render.credential_link_url(self._config.public_url, job.link_token)
        if job.notice == "invitation":
            if is_client:
                partner = await self._pair(job, user)
                if partner is not None:
                    return await self._together(job, partner, user, address, brand)
            email = self._render.invitation_email(address, brand, url, is_client=is_client)
        else:
            email = self._render.password_reset_email(address, brand, url)
        return await self.email.send(email)

    async def _message_sms(self, job: Job) -> Receipt:
        if self.sms is None:
            raise Skip(NO_SMS_TRANSPORT)
        # Asked right before sending, never cached: a STOP a second ago must count.
        answer = await self._consent.CheckSmsAllowed(consent_pb.CheckSmsAllowedRequest(client_id=job.recipient_id))
        if not answer.allowed or not answer.phone_number:
            raise Skip(NO_CONSENT)
        user = await self._recipient(job)
        return await self._text(self._render.message_sms(answer.phone_number, await self._brand(user)))

    async def _text(self, sms: Sms) -> Receipt:
        if self.sms is None:
            raise Skip(NO_SMS_TRANSPORT)
        return await self.sms.send(sms)

    async def _email_address(self, user: auth_pb.User) -> str:
        """The user's address, unless it is on the suppression list (checked before any link is minted)."""
        if not user.email:
            raise PermanentFailure("recipient has no email address")
        reason = await self._storage.suppression_reason(user.email)
        if reason == "bounce":
            raise Suppressed("the address is on the suppression list: an earlier email bounced")
        if reason is not None:
            raise Suppressed("the address is on the suppression list: the recipient reported an email as spam")
        return user.email

    async def _brand(self, user: auth_pb.User) -> render.Branding:
        """Who the email is from: the practice (its name, contact and time zone), or (a discreet
        client's) a neutral name."""
        discreet = user.role == auth_pb.ROLE_CLIENT and await self._storage.is_discreet(user.user_id)
        practice = await self._practice(user.practice_id) if user.practice_id else auth_pb.Practice()
        return render.branding(
            self._config.sender_name, self._config.discreet_sender_name, practice.name, discreet,
            contact_phone=practice.contact_phone, contact_email=practice.contact_email,
            time_zone=practice.time_zone,
        )

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

    async def _practice(self, practice_id: str) -> auth_pb.Practice:
        reply = await self._auth.GetPractice(auth_pb.GetPracticeRequest(practice_id=practice_id))
        return reply.practice


class Worker:
    def __init__(
        self,
        config: NotifyConfig,
        storage: NotifyStorage,
        deliverer: Deliverer,
        messaging: messaging_grpc.MessagingServiceStub,
        metrics: NotifyMetrics,
    ) -> None:
        self._config = config
        self._storage = storage
        self._deliverer = deliverer
        self._messaging = messaging
        self._attempts = metrics.attempts
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
        other, so the first one's email (or the read cursor it found) settles the rest;
        so are a person's invitation and message alerts (one email may cover both).
        """
        async with self._batch:
            paused = [channel for channel, breaker in self._deliverer.breakers().items() if breaker.is_open()]
            jobs = await self._storage.claim_due_jobs(
                self._config.batch_size, self._config.claim_lease_seconds, paused)
            lanes: dict[tuple, list[Job]] = {}
            invited = {job.recipient_id for job in jobs if job.is_invitation}
            for job in jobs:
                if job.kind == STAFF_UNREAD:
                    key: tuple = (job.recipient_id, job.conversation_id)
                elif job.kind in (MESSAGE_EMAIL, "account_notice") and job.recipient_id in invited:
                    # A client's invitation and alert may make one email: one after the other.
                    key = ("invited", job.recipient_id)
                else:
                    key = (job.job_id,)
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
            receipt = await self._deliverer.deliver(job)
        except Held:
            log.info("notification held for its partner", extra={"fields": fields})
            return
        except Gone:
            log.info("notification settled elsewhere", extra={"fields": fields})
            return
        except Skip as exc:
            await self._settle(job, "skipped", fields, last_error=str(exc))
            return
        except Suppressed as exc:
            await self._settle(job, "suppressed", fields, last_error=str(exc))
            return
        except ProviderError as exc:
            await self._provider_failed(job, exc, fields)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(job, exc, fields)
            return
        if receipt.together is not None:
            await self._settle_together(job, receipt, {**fields, "transport": receipt.transport})
            return
        await self._settle(job, "sent", {**fields, "transport": receipt.transport},
                           covers_through_seq=covers_through_seq, transport=receipt.transport,
                           provider_message_id=receipt.provider_message_id)

    async def _settle_together(self, job: Job, receipt: Receipt, fields: dict) -> None:
        """One email went for a client's alert and invitation: the alert sent, the invitation covered."""
        partner = receipt.together
        assert partner is not None
        if await self._storage.finish_together(job, partner, transport=receipt.transport,
                                               provider_message_id=receipt.provider_message_id):
            self._attempts.labels(channel=job.channel, outcome="sent").inc()
            log.info("notification sent", extra={"fields": {**fields, "together_with": partner.job_id}})
        else:
            log.warning("notification lease lost", extra={"fields": {**fields, "outcome": "sent"}})

    async def _settle(self, job: Job, status: str, fields: dict, **outcome) -> None:
        """Finish the job (if it is still ours), count the attempt and log it (ids and reasons only)."""
        if await self._storage.finish_job(job, status, **outcome):
            self._attempts.labels(channel=job.channel, outcome=status).inc()
            reason = {"reason": outcome["last_error"]} if outcome.get("last_error") else {}
            log_at = log.warning if status == "failed" else log.info
            log_at(f"notification {status}", extra={"fields": {**fields, **reason}})
        else:
            # Its lease lapsed and another worker took it (a very slow send): that worker settles it.
            log.warning("notification lease lost", extra={"fields": {**fields, "outcome": status}})

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
                await self._settle(job, "cancelled", fields, last_error="conversation not found")
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
            await self._settle(job, "cancelled", fields, last_error=reason,
                               covers_through_seq=state.read_seq if state.participant else 0)
            return None
        return max(state.last_seq, seq)

    def _backoff(self, attempts: int, cap: float | None = None) -> float:
        delay = self._config.retry_base_seconds * 2 ** min(attempts - 1, 30)
        return min(delay, cap) if cap is not None else delay

    async def _provider_failed(self, job: Job, exc: ProviderError, fields: dict) -> None:
        """A provider did not take it: fail (permanent, or out of attempts), retry with jitter, or wait out an outage."""
        reason = exc.reason
        if not exc.permanent and getattr(exc, "outage", False):
            # The provider is down, not this job: no attempt counted, back when the breaker closes.
            breaker = self._deliverer.breakers().get(job.channel)
            delay = breaker.seconds_left() if breaker else self._config.retry_base_seconds
            await self._storage.retry_job_later(job, delay, reason, counts=False)
            self._attempts.labels(channel=job.channel, outcome="deferred").inc()
            log.info("notification waits for its provider", extra={"fields": {
                **fields, "reason": reason, "retry_in_s": round(delay, 3)}})
            return
        attempts = job.attempts + 1
        if exc.permanent or attempts >= self._config.max_attempts:
            await self._settle(job, "failed", fields, last_error=reason)
            return
        delay = full_jitter(self._config.retry_base_seconds, self._config.retry_max_seconds, attempts)
        await self._storage.retry_job_later(job, delay, reason)
        self._attempts.labels(channel=job.channel, outcome="retry").inc()
        log.info("notification retry", extra={"fields": {**fields, "reason": reason, "retry_in_s": round(delay, 3)}})

    async def _failed(self, job: Job, exc: Exception, fields: dict) -> None:
        reason = _describe(exc)
        permanent = isinstance(exc, PermanentFailure) or (
            isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PERMANENT_CODES
        )
        attempts = job.attempts + 1
        if permanent or attempts >= self._config.max_attempts:
            await self._settle(job, "failed", fields, last_error=reason)
            return
        delay = self._backoff(attempts)
        await self._storage.retry_job_later(job, delay, reason)
        self._attempts.labels(channel=job.channel, outcome="retry").inc()
        log.info("notification retry", extra={"fields": {**fields, "reason": reason, "retry_in_s": delay}})

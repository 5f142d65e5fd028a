"""Notify's domain logic and authorization: enqueueing jobs, delivery status and provider
feedback, requeueing, clients' discreet alerts, and the development mailbox."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import phonenumbers
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

from services.common.clock import Clock
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.common.identity import Principal, caller, require_service, require_staff, require_user
from services.notify.config import NotifyConfig
from services.notify.storage import HOLD_FOR_INVITATION, SENT_TOGETHER, DeliveryRow, MailboxRow, NotifyStorage

log = logging.getLogger("confidant.notify")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Ten SMS segments; consent replies are far shorter.
MAX_SMS_BODY = 1600
ACCOUNT_NOTICES = frozenset({"locked", "invitation", "password_reset"})
# Notices that carry a credential link.
LINK_NOTICES = frozenset({"invitation", "password_reset"})
MAX_LINK_TOKEN = 256
MAX_DEDUPE_KEY = 200
DEFAULT_LOCK_MINUTES = 15
MAX_LOCK_MINUTES = 7 * 24 * 60
MAILBOX_DEV_ONLY = "The development mailbox exists only in development mode."
MAX_STATUS_MESSAGES = 500
MAX_REQUEUE_IDS = 1000
MAX_FEEDBACK_ID = 200
MAX_FEEDBACK_ADDRESSES = 50
MAX_ADDRESS = 320
FEEDBACK_KINDS = frozenset({"bounce", "complaint", "delivery"})
# Internal services that may requeue any practice's failed jobs (operators use the CLI).
REQUEUE_SERVICES = ("web",)
NO_SUCH_CLIENT = "No such client in your practice."
# What a worker writes as last_error when it does not text a client (see worker.NO_CONSENT).
NO_CONSENT = "no consent"


@dataclass(frozen=True)
class Delivery:
    """One alert's state as staff see it: queued, sent, delivered, bounced, suppressed, failed, not_needed."""

    row: DeliveryRow
    state: str
    detail: str


@dataclass(frozen=True)
class Recipient:
    user_id: str
    is_client: bool


# A new message to a client gives one email and one text (when consent allows).
_CLIENT_JOBS = (("message_email", "email"), ("message_sms", "sms"))
CLIENT_ALERT_KINDS = frozenset(kind for kind, _ in _CLIENT_JOBS)


class NotifyHandlers:
    def __init__(
        self, config: NotifyConfig, storage: NotifyStorage, clock: Clock, auth: auth_grpc.AuthServiceStub | None = None
    ) -> None:
        self._config = config
        self._storage = storage
        self._clock = clock
        # Asked whether a client belongs to the caller's practice (discreet settings).
        self._auth = auth

    async def enqueue_message_notifications(
        self,
        *,
        event_id: str,
        practice_id: str,
        conversation_id: str,
        recipients: Sequence[Recipient],
        sender_id: str = "",
        seq: int = 0,
        created_at: datetime | None = None,
        message_id: str = "",
    ) -> int:
        """Create the jobs for one new-message event; a repeated event id creates nothing.

        Clients get an email (and a text) at once, one per burst. Staff members get a
        delayed email, due ``staff_unread_delay_seconds`` after the message was sent, that
        the worker cancels if they have read it by then. Returns how many jobs were created
        now (coalesced ones included: they record the burst but are never sent).
        """
        require_service("messaging")
        for name, value in (("event_id", event_id), ("practice_id", practice_id),
                            ("conversation_id", conversation_id)):
            if not value.strip():
                raise InvalidArgument(f"{name} is required.")
        if any(not r.user_id.strip() for r in recipients):
            raise InvalidArgument("Every recipient needs a user_id.")
        if seq < 0:
            raise InvalidArgument("seq cannot be negative.")
        message_id = message_id.strip()
        if len(message_id) > MAX_DEDUPE_KEY:
            raise InvalidArgument(f"message_id must be at most {MAX_DEDUPE_KEY} characters long.")
        # The delay runs from the message (never from the future, whatever messaging's clock says).
        now = self._clock.now()
        sent_at = min(created_at, now) if created_at is not None else now
        staff_due = sent_at + timedelta(seconds=self._config.staff_unread_delay_seconds)
        created = coalesced = 0
        async with self._storage.transaction() as conn:
            # The sender is never notified of their own message.
            staff = sorted({r.user_id for r in recipients if not r.is_client and r.user_id != sender_id})
            for recipient in staff:
                created += await self._storage.add_staff_unread_job(
                    conn,
                    dedupe_key=f"{event_id}:{recipient}:staff_email",
                    event_id=event_id,
                    practice_id=practice_id,
                    conversation_id=conversation_id,
                    recipient_id=recipient,
                    seq=seq,
                    due_at=staff_due,
                    message_id=message_id,
                )
            due_now = 0
            for recipient in sorted({r.user_id for r in recipients if r.is_client and r.user_id != sender_id}):
                for kind, channel in _CLIENT_JOBS:
                    status = await self._storage.add_message_job(
                        conn,
                        dedupe_key=f"{event_id}:{recipient}:{channel}",
                        event_id=event_id,
                        kind=kind,
                        channel=channel,
                        practice_id=practice_id,
                        conversation_id=conversation_id,
                        recipient_id=recipient,
                        burst_seconds=self._config.burst_seconds,
                        message_id=message_id,
                    )
                    if status is not None:
                        created += 1
                        coalesced += status == "coalesced"
                        due_now += status == "pending"
            if due_now:
                await self._storage.wake_workers(conn)
        log.info("message notifications enqueued", extra={"fields": {
            "event_id": event_id, "conversation_id": conversation_id, "created": created, "coalesced": coalesced,
            "staff": len(staff)}})
        return created

    async def send_sms_reply(self, to_number: str, body: str, in_reply_to: str) -> bool:
        """Queue a consent confirmation or help text; a repeated ``in_reply_to`` queues nothing more."""
        require_service("web")
        to = _e164(to_number)
        if not body.strip():
            raise InvalidArgument("The reply text is empty.")
        if len(body) > MAX_SMS_BODY:
            raise InvalidArgument(f"The reply text is longer than {MAX_SMS_BODY} characters.")
        dedupe_key = f"reply:{in_reply_to}" if in_reply_to.strip() else f"reply:uuid:{uuid.uuid4()}"
        async with self._storage.transaction() as conn:
            created = await self._storage.add_sms_reply_job(conn, dedupe_key, to, body)
            if created:
                await self._storage.wake_workers(conn)
        # Queued either now or by the first call with the same in_reply_to.
        return True

    async def send_account_notice(
        self, user_id: str, kind: str, dedupe_key: str, lock_minutes: int, link_token: str = ""
    ) -> bool:
        """Queue an email to an account's owner about their account; a repeated dedupe key queues nothing more."""
        require_service("auth")
        try:
            user_id = str(uuid.UUID(user_id))
        except (ValueError, AttributeError):
            raise InvalidArgument("user_id must be a user id.") from None
        if kind not in ACCOUNT_NOTICES:
            raise InvalidArgument("Choose the kind of account notice.")
        dedupe_key = dedupe_key.strip()
        if not dedupe_key:
            raise InvalidArgument("dedupe_key is required.")
        if len(dedupe_key) > MAX_DEDUPE_KEY:
            raise InvalidArgument(f"dedupe_key must be at most {MAX_DEDUPE_KEY} characters long.")
        if not 0 <= lock_minutes <= MAX_LOCK_MINUTES:
            raise InvalidArgument(f"lock_minutes must be between 0 and {MAX_LOCK_MINUTES}.")
        # Invitations and resets carry their link's token (URL-safe base64).
        link_token = link_token.strip() if kind in LINK_NOTICES else ""
        if kind in LINK_NOTICES and (
            not link_token or len(link_token) > MAX_LINK_TOKEN
            or not all(c.isascii() and (c.isalnum() or c in "-_") for c in link_token)
        ):
            raise InvalidArgument("link_token is required for invitations and password resets.")
        async with self._storage.transaction() as conn:
            created = await self._storage.add_account_notice_job(
                conn, f"account_notice:{dedupe_key}", user_id, kind, lock_minutes or DEFAULT_LOCK_MINUTES,
                link_token=link_token,
            )
            if created:
                await self._storage.wake_workers(conn)
        if created:
            log.info("account notice enqueued", extra={"fields": {"user_id": user_id, "notice": kind}})
        return True

    async def list_mailbox(self, page_size: int, to_address: str) -> list[MailboxRow]:
        require_service("web")
        if not self._config.common.development:
            raise FailedPrecondition(MAILBOX_DEV_ONLY)
        if page_size < 0:
            raise InvalidArgument("page_size cannot be negative.")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return await self._storage.list_mailbox(limit, to_address.strip() or None)


    # -- delivery status, provider feedback, requeueing ---------------------------------

    async def list_delivery_status(self, conversation_id: str, message_ids: Sequence[str]) -> list[Delivery]:
        """Each alert about the conversation's messages (of the caller's practice): one per message,
        recipient and channel. Which clients were alerted is about them: the read is audited."""
        who = require_staff()
        conversation_id = conversation_id.strip()
        if not conversation_id:
            raise InvalidArgument("conversation_id is required.")
        if len(message_ids) > MAX_STATUS_MESSAGES:
            raise InvalidArgument(f"Ask for at most {MAX_STATUS_MESSAGES} messages at a time.")
        wanted = list(dict.fromkeys(m.strip() for m in message_ids if m.strip()))
        rows = await self._storage.list_deliveries(who.practice_id, conversation_id, wanted)
        # Named by client (the recipients of clients' alerts), so the read is found under each.
        clients = sorted({row.recipient_id for row in rows if row.kind in CLIENT_ALERT_KINDS})
        await self._storage.record_audits(
            actor=who.subject, action="delivery_status.read", outcome="ok", target=conversation_id,
            practice_id=who.practice_id,
            details=[{"messages": len(wanted), "deliveries": len(rows), **({"client_id": c} if c else {})}
                     for c in clients or [""]],
        )
        return [Delivery(row, *delivery_state(row)) for row in rows]

    async def record_delivery_feedback(
        self, feedback_id: str, kind: str, provider_message_id: str, addresses: Sequence[str], permanent: bool
    ) -> int:
        """A provider's event, authenticated by the web edge; the same feedback_id has one effect.
        Returns how many addresses it put on the suppression list."""
        who = require_service("web")
        feedback_id = feedback_id.strip()
        if not feedback_id:
            raise InvalidArgument("feedback_id is required.")
        if len(feedback_id) > MAX_FEEDBACK_ID:
            raise InvalidArgument(f"feedback_id must be at most {MAX_FEEDBACK_ID} characters long.")
        if kind not in FEEDBACK_KINDS:
            raise InvalidArgument("Choose the kind of feedback: bounce, complaint or delivery.")
        if len(addresses) > MAX_FEEDBACK_ADDRESSES:
            raise InvalidArgument(f"Give at most {MAX_FEEDBACK_ADDRESSES} addresses.")
        cleaned = []
        for raw in addresses:
            address = raw.strip().lower()
            if not address or "@" not in address or len(address) > MAX_ADDRESS or any(c.isspace() for c in address):
                raise InvalidArgument("Every address must be an email address.")
            cleaned.append(address)
        provider_message_id = provider_message_id.strip()
        if len(provider_message_id) > MAX_FEEDBACK_ID:
            raise InvalidArgument(f"provider_message_id must be at most {MAX_FEEDBACK_ID} characters long.")
        if not provider_message_id and not cleaned:
            raise InvalidArgument("Feedback needs the provider's message id or the addresses it is about.")
        result = await self._storage.record_feedback(
            feedback_id=feedback_id, kind=kind, provider_message_id=provider_message_id, addresses=cleaned,
            permanent=permanent, actor=who.subject,
        )
        log.info("delivery feedback", extra={"fields": {
            "kind": kind, "permanent": permanent, "suppressed": result.suppressed, "jobs": result.jobs,
            "repeated": result.repeated}})
        return result.suppressed

    async def requeue_failed_jobs(self, job_ids: Sequence[int]) -> int:
        """Failed jobs pending again with their attempts reset: the practice owner (full session)
        for the practice's jobs, or a named internal service for any."""
        who = caller()
        if who.is_service:
            require_service(*REQUEUE_SERVICES)
            practice_id = None
        else:
            who = require_user("owner")
            if who.session_kind != "full":
                raise PermissionDenied("Sign in with your password to send failed alerts again.")
            practice_id = who.practice_id
        if len(job_ids) > MAX_REQUEUE_IDS:
            raise InvalidArgument(f"Give at most {MAX_REQUEUE_IDS} job ids.")
        if any(job_id <= 0 for job_id in job_ids):
            raise InvalidArgument("Job ids are positive numbers.")
        requeued = await self._storage.requeue_failed(practice_id, sorted(set(job_ids)), actor=who.subject)
        log.info("failed jobs requeued", extra={"fields": {"requeued": len(requeued), "asked": len(job_ids)}})
        return len(requeued)

    # -- clients' discreet alerts ---------------------------------------------------------

    async def get_client_settings(self, client_id: str) -> tuple[str, bool]:
        who = require_staff()
        client_id = await self._check_client(who, client_id)
        return client_id, await self._storage.read_client_settings(client_id, who.practice_id, who.subject)

    async def set_client_settings(self, client_id: str, discreet: bool) -> tuple[str, bool]:
        who = require_staff()
        client_id = await self._check_client(who, client_id)
        saved = await self._storage.save_client_settings(client_id, who.practice_id, discreet, who.subject)
        log.info("client notification settings saved", extra={"fields": {"client_id": client_id,
                                                                          "discreet": saved}})
        return client_id, saved

    async def _check_client(self, staff: Principal, client_id: str) -> str:
        """The client must exist, be a client and belong to the caller's practice (asked of auth)."""
        client_id = client_id.strip()
        if not client_id:
            raise InvalidArgument("client_id is required.")
        if self._auth is None:
            raise Unavailable("Client details cannot be checked right now; please try again.")
        try:
            reply = await self._auth.GetUsers(auth_pb.GetUsersRequest(user_ids=[client_id]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound(NO_SUCH_CLIENT) from None
            log.warning("auth lookup failed", extra={"fields": {"code": exc.code().name}})
            raise Unavailable("Client details cannot be checked right now; please try again.") from None
        for user in reply.users:
            if user.user_id == client_id and user.role == auth_pb.ROLE_CLIENT and user.practice_id == staff.practice_id:
                return client_id
        raise NotFound(NO_SUCH_CLIENT)


def delivery_state(row: DeliveryRow) -> tuple[str, str]:
    """(state, detail) of one job as staff see it; details are fixed words and error codes, never PHI."""
    if row.status == "pending":
        if row.last_error == HOLD_FOR_INVITATION:
            return "queued", "waiting a moment for the client's Client Portal invitation, to send both in one email"
        if row.attempts:
            return "queued", f"waiting to try again after a temporary failure ({row.last_error})"
        return "queued", "waiting to be sent"
    if row.status == "sent":
        if row.feedback == "bounced":
            return "bounced", "the address bounced; later emails to it are suppressed"
        if row.feedback == "complained":
            return "delivered", "delivered, then reported as spam; later emails to the address are suppressed"
        if row.feedback == "delivered":
            return "delivered", "the provider reported delivery"
        return "sent", "the provider accepted it"
    if row.status == "suppressed":
        return "suppressed", row.last_error
    if row.status == "skipped":
        if row.last_error == NO_CONSENT:
            return "suppressed", "the client has not agreed to text messages or replied STOP"
        return "suppressed", row.last_error
    if row.status == "failed":
        return "failed", f"gave up: {row.last_error}"
    if row.status == "coalesced":
        if row.last_error == SENT_TOGETHER:
            return "not_needed", SENT_TOGETHER
        return "not_needed", "an earlier alert covers this burst of messages"
    if row.last_error == "read":
        return "not_needed", "read before the email was due"
    return "not_needed", row.last_error or "not needed"


def _e164(raw: str) -> str:
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidArgument("to_number must be a phone number in E.164 form (+12125550101).") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidArgument("to_number must be a phone number in E.164 form (+12125550101).")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

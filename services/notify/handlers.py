"""Notify's domain logic and authorization: enqueueing jobs and the development mailbox."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers

from services.common.clock import Clock
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.identity import require_service
from services.notify.config import NotifyConfig
from services.notify.storage import MailboxRow, NotifyStorage

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


@dataclass(frozen=True)
class Recipient:
    user_id: str
    is_client: bool


# A new message to a client gives one email and one text (when consent allows).
_CLIENT_JOBS = (("message_email", "email"), ("message_sms", "sms"))


class NotifyHandlers:
    def __init__(self, config: NotifyConfig, storage: NotifyStorage, clock: Clock) -> None:
        self._config = config
        self._storage = storage
        self._clock = clock

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


def _e164(raw: str) -> str:
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidArgument("to_number must be a phone number in E.164 form (+12125550101).") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidArgument("to_number must be a phone number in E.164 form (+12125550101).")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

"""POST /webhooks/ses: Amazon SES delivery feedback (bounces, complaints, deliveries) through SNS.

SES publishes its events to an SNS topic, and SNS posts them here. The envelope is verified
exactly as for inbound SMS (services/web/sns_envelope.py) against its own allow-list,
CONFIDANT_WEB_SES_TOPIC_ARNS (unset: the route does not exist). The SNS Message is SES's
JSON, in either of its two shapes: an identity's feedback notification
(``notificationType``) or a configuration set's event (``eventType``). A bounce, complaint
or delivery goes to notify.RecordDeliveryFeedback, keyed by the SNS MessageId so a
redelivered message has one effect; notify suppresses the address on a permanent bounce or
a complaint, and later alerts to it are not sent. Other SES events (Send, Open, ...) are
acknowledged and ignored. Logs carry ids, kinds and counts, never an address.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parseaddr

from aiohttp import web
from confidant.notify.v1 import notify_service_pb2 as notify_pb

from services.web import sns_envelope
from services.web.inbound_sms import SNS_FETCHER
from services.web.resources import BACKENDS, CONFIG
from services.web.sns_signature import HttpsFetcher, SnsVerifier

log = logging.getLogger("confidant.web.ses")

SES_PATH = "/webhooks/ses"
SES_VERIFIER = web.AppKey("ses_verifier", SnsVerifier)
# SES sends a message to at most 50 recipients, so its feedback names at most 50.
MAX_ADDRESSES = 50

_KINDS = {"Bounce": notify_pb.FEEDBACK_KIND_BOUNCE, "Complaint": notify_pb.FEEDBACK_KIND_COMPLAINT,
          "Delivery": notify_pb.FEEDBACK_KIND_DELIVERY}


class Malformed(ValueError):
    """The notification is not SES feedback we can read (400); the reason carries no content."""


@dataclass(frozen=True)
class Feedback:
    kind: int  # notify_pb.FeedbackKind
    provider_message_id: str
    addresses: tuple[str, ...]
    permanent: bool


def _addresses(entries: object, field_name: str | None) -> tuple[str, ...]:
    """Addresses from SES's recipient lists: objects with ``emailAddress`` (bounces, complaints)
    or plain strings (deliveries); "Name <address>" is reduced to the address."""
    if not isinstance(entries, list) or len(entries) > MAX_ADDRESSES:
        raise Malformed("recipients")
    out = []
    for entry in entries:
        raw = entry.get(field_name) if field_name and isinstance(entry, dict) else entry
        address = parseaddr(raw)[1] if isinstance(raw, str) else ""
        if "@" not in address:
            raise Malformed("recipient address")
        out.append(address)
    return tuple(out)


def parse(message: str) -> Feedback | None:
    """SES's event from an SNS Message; None for an event that is not feedback (acknowledged,
    ignored). Raises ``Malformed``."""
    try:
        event = json.loads(message)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(event, dict):
        raise Malformed("not an object")
    kind = event.get("eventType") or event.get("notificationType")
    if not isinstance(kind, str) or not kind:
        raise Malformed("no event type")
    if kind not in _KINDS:
        return None
    mail = event.get("mail")
    message_id = mail.get("messageId") if isinstance(mail, dict) else None
    if not isinstance(message_id, str) or not message_id.strip():
        raise Malformed("no mail.messageId")
    detail = event.get(kind.lower())
    if not isinstance(detail, dict):
        raise Malformed(f"no {kind.lower()} object")
    if kind == "Bounce":
        bounce_type = detail.get("bounceType")
        if not isinstance(bounce_type, str):
            raise Malformed("no bounceType")
        # "Transient" and "Undetermined" bounces may go through later: they suppress nothing.
        return Feedback(_KINDS[kind], message_id.strip(), _addresses(detail.get("bouncedRecipients"), "emailAddress"),
                        permanent=bounce_type == "Permanent")
    if kind == "Complaint":
        return Feedback(_KINDS[kind], message_id.strip(),
                        _addresses(detail.get("complainedRecipients"), "emailAddress"), permanent=False)
    return Feedback(_KINDS[kind], message_id.strip(), _addresses(detail.get("recipients", []), None), permanent=False)


def _refuse(status: int, text: str, reason: str) -> web.Response:
    log.info("ses feedback refused", extra={"fields": {"status": status, "reason": reason}})
    return web.Response(status=status, text=text)


async def ses_webhook(request: web.Request) -> web.Response:
    try:
        message = await sns_envelope.verified_notification(request, request.app[SES_VERIFIER], log)
    except sns_envelope.Refusal as refusal:
        return _refuse(refusal.status, refusal.text, refusal.reason)
    if message is None:  # a subscription message, handled
        return web.Response(text="OK")
    try:
        feedback = parse(message["Message"])
    except Malformed as exc:
        return _refuse(400, "The notification is not an Amazon SES event.", str(exc))
    if feedback is None:
        log.info("ses event ignored", extra={"fields": {"sns_message_id": message["MessageId"]}})
        return web.Response(text="OK")
    reply = await request.app[BACKENDS].notify.RecordDeliveryFeedback(
        notify_pb.RecordDeliveryFeedbackRequest(
            feedback_id=message["MessageId"], kind=feedback.kind,
            provider_message_id=feedback.provider_message_id, addresses=feedback.addresses,
            permanent=feedback.permanent,
        )
    )
    log.info("ses feedback", extra={"fields": {
        "sns_message_id": message["MessageId"], "kind": notify_pb.FeedbackKind.Name(feedback.kind),
        "permanent": feedback.permanent, "addresses": len(feedback.addresses), "suppressed": reply.suppressed}})
    return web.Response(text="OK")


async def ses_verifier(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: SES's own verifier (its own topic allow-list and certificate cache), with the
    injected certificate fetcher if one was set, else the real one."""
    injected = app.get(SNS_FETCHER)
    fetcher = injected or HttpsFetcher()
    app[SES_VERIFIER] = SnsVerifier(fetcher, app[CONFIG].ses_topic_arns)
    yield
    if injected is None:
        await fetcher.close()

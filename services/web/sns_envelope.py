"""The SNS envelope every SNS webhook of the web edge shares: read, check, verify, confirm.

/webhooks/sms/sns (inbound SMS) and /webhooks/ses (SES delivery feedback) both receive
Amazon SNS HTTP(S) messages. Before either looks at what a Notification carries, the
body must be an SNS message of a known type, authentic (services/web/sns_signature.py:
certificate URL host rule before any fetch, cached certificate, signature, topic
allow-list), and a SubscriptionConfirmation is confirmed here. A request that fails is
answered with the ``Refusal``'s status and nothing else happens.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from services.web import sns_signature
from services.web.sns_signature import SnsRefused, SnsUnavailable, SnsVerifier

# Fields every SNS message carries; without them it is malformed (400). The signature's own
# fields are the verifier's: a message without them is unauthenticated (403).
REQUIRED = ("Type", "MessageId", "TopicArn", "Message", "Timestamp")
TYPES = (sns_signature.NOTIFICATION, sns_signature.SUBSCRIPTION_CONFIRMATION, sns_signature.UNSUBSCRIBE_CONFIRMATION)


class Refusal(Exception):
    """Answer ``status`` with ``text``; ``reason`` is for logs and carries no message content."""

    def __init__(self, status: int, text: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.text, self.reason = status, text, reason


async def verified_notification(request: web.Request, verifier: SnsVerifier, log: logging.Logger) -> dict | None:
    """The request's authentic SNS Notification; None for a subscription message, which is
    handled here (answer 200). Raises ``Refusal`` (400 malformed, 403 unauthenticated, 503 when
    the certificate cannot be fetched now, so that SNS retries)."""
    try:
        message = json.loads(await request.read())
    except ValueError:  # also UnicodeDecodeError
        raise Refusal(400, "The body is not an SNS message.", "not JSON") from None
    if not isinstance(message, dict) or not all(isinstance(message.get(k), str) for k in REQUIRED):
        raise Refusal(400, "The body is not an SNS message.", "fields missing")
    kind = message["Type"]
    if kind not in TYPES or request.headers.get("x-amz-sns-message-type", kind) != kind:
        raise Refusal(400, "Unknown SNS message type.", "type")
    try:
        await verifier.verify(message)
        if kind == sns_signature.SUBSCRIPTION_CONFIRMATION:
            await verifier.confirm_subscription(message)
    except SnsRefused as exc:
        raise Refusal(403, "The message could not be authenticated.", str(exc)) from None
    except SnsUnavailable as exc:
        raise Refusal(503, "The message cannot be verified right now.", f"fetch failed: {exc}") from None
    if kind != sns_signature.NOTIFICATION:
        # Confirmed above, or (an unsubscribe) only noted: we never subscribe again by ourselves.
        log.info("sns subscription message", extra={"fields": {"sns_message_id": message["MessageId"], "type": kind}})
        return None
    return message

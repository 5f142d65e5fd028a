"""Inbound SMS at the web edge: the SMS providers' webhooks and the one path every reply takes.

- POST /webhooks/sms/sns: Amazon SNS HTTP(S) notifications carrying two-way SMS
  (services/web/sns_signature.py verifies them); on while CONFIDANT_WEB_SNS_TOPIC_ARNS is set.
- POST /webhooks/sms/twilio: a Twilio-compatible webhook, signed with X-Twilio-Signature
  (services/web/twilio_signature.py); on while CONFIDANT_WEB_TWILIO_AUTH_TOKEN is set.
- The development mailbox's "reply as the client's phone" (services/web/devmailbox.py).

All three end in ``receive``: consent applies the reply (STOP, START, HELP, ...), and the
confirmation or help text it returns goes out through notify. Nothing reaches ``receive``
before the request is authenticated; a request that is not gets 403 (malformed: 400) and
changes nothing. Logs carry ids and outcomes, never numbers or message text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.notify.v1 import notify_service_pb2 as notify_pb

from services.web import sns_envelope, twilio_signature
from services.web.resources import BACKENDS, CONFIG, Backends
from services.web.sns_signature import Fetcher, HttpsFetcher, SnsVerifier

log = logging.getLogger("confidant.web.sms")

SNS_PATH = "/webhooks/sms/sns"
TWILIO_PATH = "/webhooks/sms/twilio"

# Set before start-up to fetch SNS certificates some other way (tests serve a test CA's).
SNS_FETCHER = web.AppKey("sns_fetcher", Fetcher)
SNS_VERIFIER = web.AppKey("sns_verifier", SnsVerifier)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
FORM = "application/x-www-form-urlencoded"
# The two-way SMS payload SNS carries in a Notification's Message.
_SMS_FIELDS = ("originationNumber", "destinationNumber", "messageBody", "inboundMessageId")


async def receive(backends: Backends, *, from_number: str, body: str, message_id: str, provider: str,
                  to_number: str = "") -> consent_pb.ReceiveInboundSmsResponse:
    """A client's text, already authenticated: consent applies it, notify sends its reply.

    The reply names the inbound message (provider and id), so a retried delivery, which
    consent answers with the same reply, never texts twice.
    """
    inbound = await backends.consent.ReceiveInboundSms(
        consent_pb.ReceiveInboundSmsRequest(from_number=from_number, body=body, provider_message_id=message_id,
                                            provider=provider, to_number=to_number)
    )
    if inbound.reply_text:
        await backends.notify.SendSmsReply(
            notify_pb.SendSmsReplyRequest(to_number=inbound.reply_to or from_number, body=inbound.reply_text,
                                          in_reply_to=f"{provider}:{message_id}")
        )
    log.info("inbound sms", extra={"fields": {"provider": provider, "message_id": message_id,
                                               "action": consent_pb.InboundAction.Name(inbound.action),
                                               "replied": bool(inbound.reply_text)}})
    return inbound


def _refuse(status: int, text: str, provider: str, reason: str) -> web.Response:
    log.info("inbound sms refused", extra={"fields": {"provider": provider, "status": status, "reason": reason}})
    return web.Response(status=status, text=text)


# ---------------------------------------------------------------- Amazon SNS


async def sns_webhook(request: web.Request) -> web.Response:
    try:
        message = await sns_envelope.verified_notification(request, request.app[SNS_VERIFIER], log)
    except sns_envelope.Refusal as refusal:
        return _refuse(refusal.status, refusal.text, "sns", refusal.reason)
    if message is None:  # a subscription message, handled
        return web.Response(text="OK")
    try:
        sms = json.loads(message["Message"])
    except ValueError:
        sms = None
    if not isinstance(sms, dict) or not all(isinstance(sms.get(k), str) for k in _SMS_FIELDS) \
            or not sms["originationNumber"] or not sms["inboundMessageId"]:
        return _refuse(400, "The notification is not an inbound SMS.", "sns", "not two-way SMS")
    await receive(request.app[BACKENDS], from_number=sms["originationNumber"], body=sms["messageBody"],
                  message_id=sms["inboundMessageId"], provider="sns", to_number=sms["destinationNumber"])
    return web.Response(text="OK")


async def sns_verifier(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the verifier and its certificate cache, with the real fetcher unless one was set."""
    injected = app.get(SNS_FETCHER)
    fetcher = injected or HttpsFetcher()
    app[SNS_VERIFIER] = SnsVerifier(fetcher, app[CONFIG].sns_topic_arns)
    yield
    if injected is None:
        await fetcher.close()


# ---------------------------------------------------------------- Twilio


async def twilio_webhook(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if request.content_type != FORM:
        return _refuse(415, "Twilio posts application/x-www-form-urlencoded.", "twilio", "content type")
    try:
        form = await request.post()
    except ValueError:
        return _refuse(400, "The form could not be read.", "twilio", "form")
    params = [(name, value) for name, value in form.items() if isinstance(value, str)]
    # The URL Twilio was given: our public address, and the path and query exactly as received.
    url = config.public_url + request.raw_path
    if not twilio_signature.valid(config.twilio_auth_token, url, params, request.headers.get("X-Twilio-Signature", "")):
        return _refuse(403, "The request could not be authenticated.", "twilio", "bad signature")
    from_number, sid = str(form.get("From", "")), str(form.get("MessageSid", ""))
    if not from_number or not sid or not isinstance(form.get("Body", ""), str):
        return _refuse(400, "From and MessageSid are required.", "twilio", "fields missing")
    await receive(request.app[BACKENDS], from_number=from_number, body=str(form.get("Body", "")), message_id=sid,
                  provider="twilio", to_number=str(form.get("To", "")))
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


"""The development mailbox: what notify "sent", readable and clickable, and a way
to reply to a text message as the client's phone would. Registered only in
development mode, so in production these paths are plain 404s."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.notify.v1 import notify_service_pb2 as notify_pb

from services.web import templates
from services.web.errors import HttpError
from services.web.presenters import iso, when
from services.web.resources import BACKENDS

log = logging.getLogger("confidant.web.mailbox")

PAGE_SIZE = 200
CHANNELS = {notify_pb.CHANNEL_EMAIL: "email", notify_pb.CHANNEL_SMS: "sms"}


async def _items(request: web.Request, to: str = "") -> list[notify_pb.MailboxItem]:
    # Web's own service token: the mailbox belongs to no person.
    reply = await request.app[BACKENDS].notify.ListMailbox(
        notify_pb.ListMailboxRequest(page_size=PAGE_SIZE, to_address=to)
    )
    return list(reply.items)


async def mailbox_json(request: web.Request) -> web.Response:
    items = await _items(request, request.query.get("to", "").strip())
    return web.json_response(
        {
            "items": [
                {
                    "item_id": item.item_id,
                    "channel": CHANNELS.get(item.channel, "unknown"),
                    "to": item.to_address,
                    "subject": item.subject,
                    "text": item.text_body,
                    "html": item.html_body,
                    "created_at": iso(item.created_at),
                }
                for item in items
            ]
        }
    )


async def mailbox_page(request: web.Request) -> web.Response:
    items = await _items(request, request.query.get("to", "").strip())
    emails = [
        {"to": i.to_address, "subject": i.subject, "text": i.text_body, "created": when(i.created_at)}
        for i in items
        if i.channel == notify_pb.CHANNEL_EMAIL
    ]
    texts = [
        {"item_id": i.item_id, "to": i.to_address, "text": i.text_body, "created": when(i.created_at)}
        for i in items
        if i.channel == notify_pb.CHANNEL_SMS
    ]
    notice = "Reply sent." if request.query.get("sent") == "1" else ""
    return web.Response(text=templates.mailbox_page(emails=emails, texts=texts, notice=notice),
                        content_type="text/html")


async def sms_reply(request: web.Request) -> web.Response:
    """Play the client's phone: the reply goes to consent like an inbound SMS webhook would."""
    form = await request.post()
    from_number = str(form.get("from_number", "")).strip()
    body = str(form.get("body", ""))
    if not from_number or not body.strip():
        raise HttpError(400, "Both the From number and the Reply text are needed.")
    backends = request.app[BACKENDS]
    provider_message_id = f"dev-{uuid.uuid4()}"
    inbound = await backends.consent.ReceiveInboundSms(
        consent_pb.ReceiveInboundSmsRequest(from_number=from_number, body=body, provider_message_id=provider_message_id)
    )
    if inbound.reply_text:
        await backends.notify.SendSmsReply(
            notify_pb.SendSmsReplyRequest(
                to_number=inbound.reply_to or from_number, body=inbound.reply_text, in_reply_to=provider_message_id
            )
        )
    log.info("development sms reply", extra={"fields": {"action": consent_pb.InboundAction.Name(inbound.action)}})
    raise web.HTTPSeeOther("/dev/mailbox?sent=1")

"""The development mailbox: what notify "sent", readable and clickable, and a way
to reply to a text message as the client's phone would. Registered only in
development mode, so in production these paths are plain 404s."""

from __future__ import annotations

import uuid

from aiohttp import web
from confidant.notify.v1 import notify_service_pb2 as notify_pb

from services.web import inbound_sms
from services.web.errors import HttpError
from services.web.presenters import iso, when
from services.web.rendering import render
from services.web.resources import BACKENDS

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
    return render(request, "dev/mailbox.html", {"emails": emails, "texts": texts, "notice": notice})


async def sms_reply(request: web.Request) -> web.Response:
    """Play the client's phone: the reply takes the providers' webhook path (inbound_sms.receive).

    Its authentication is the mailbox's own: the route exists only in development mode, and the
    CSRF middleware lets only same-origin POSTs through.
    """
    form = await request.post()
    from_number = str(form.get("from_number", "")).strip()
    body = str(form.get("body", ""))
    if not from_number or not body.strip():
        raise HttpError(400, "Both the From number and the Reply text are needed.")
    await inbound_sms.receive(request.app[BACKENDS], from_number=from_number, body=body,
                              message_id=f"dev-{uuid.uuid4()}", provider="development")
    raise web.HTTPSeeOther("/dev/mailbox?sent=1")

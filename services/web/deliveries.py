"""Where the alerts about a staff member's messages to a client are: the thread's status lines.

GET /api/conversations/{id}/deliveries (staff): messaging's GetConversation first, which
decides whether the person may see the conversation (404 otherwise) and names its client;
then notify's ListDeliveryStatus (staff of the practice; audited, so the page asks when a
thread opens and once after a send, never in a tight loop). Only the client's alerts are
shown, as one short line per message in words ("Email sent", "Delivered", "Bounced", ...).
Nothing here is PHI: states, fixed reasons and ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.notify.v1 import notify_service_pb2 as notify_pb

from services.web.errors import HttpError
from services.web.presenters import iso
from services.web.resources import BACKENDS
from services.web.session import Person, api

# The thread asks about its latest 50 of the person's messages; the ids travel in the URL.
MAX_MESSAGE_IDS = 100
MAX_ID_LENGTH = 64

_STATES = {
    notify_pb.DELIVERY_STATE_QUEUED: "queued",
    notify_pb.DELIVERY_STATE_SENT: "sent",
    notify_pb.DELIVERY_STATE_DELIVERED: "delivered",
    notify_pb.DELIVERY_STATE_BOUNCED: "bounced",
    notify_pb.DELIVERY_STATE_SUPPRESSED: "suppressed",
    notify_pb.DELIVERY_STATE_FAILED: "failed",
    notify_pb.DELIVERY_STATE_NOT_NEEDED: "not_needed",
}
_CHANNELS = {notify_pb.CHANNEL_EMAIL: "email", notify_pb.CHANNEL_SMS: "sms"}

# The client's email alert, in the words staff read under their message.
EMAIL_WORDS = {
    "queued": "Queued",
    "sent": "Email sent",
    "delivered": "Delivered",
    "bounced": "Bounced",
    "suppressed": "Not sent: address suppressed",
    "failed": "Failed",
    "not_needed": "No email needed: an earlier alert covers it",
}
# Texts are mentioned only when one went out (or should have): a client without a number or
# consent gets none, and saying so under every message would be noise.
SMS_WORDS = {
    "queued": "Text queued",
    "sent": "Text sent",
    "delivered": "Text delivered",
    "failed": "Text failed",
}


def status_line(deliveries: Iterable[dict]) -> str:
    """One message's line: the email's state, then the text's when there is one worth saying."""
    email = sms = ""
    for d in deliveries:
        if d["channel"] == "email":
            email = EMAIL_WORDS.get(d["state"], email)
        elif d["channel"] == "sms":
            sms = SMS_WORDS.get(d["state"], sms)
    return " · ".join(part for part in (email, sms) if part)


def _message_ids(request: web.Request) -> list[str]:
    """?message_ids=a,b,c (optional): only these messages."""
    raw = request.query.get("message_ids", "")
    ids = [i.strip() for i in raw.split(",") if i.strip()]
    if len(ids) > MAX_MESSAGE_IDS or any(len(i) > MAX_ID_LENGTH for i in ids):
        raise HttpError(400, f"Ask for at most {MAX_MESSAGE_IDS} message ids at a time.")
    return ids


@api(staff_only=True)
async def list_deliveries(request: web.Request, person: Person) -> web.Response:
    """{"deliveries": [...], "status": {message_id: "Email sent", ...}} for the conversation's client."""
    conversation_id = request.match_info["conversation_id"]
    ids = _message_ids(request)
    backends = request.app[BACKENDS]
    conversation = (await backends.messaging.GetConversation(
        msg_pb.GetConversationRequest(conversation_id=conversation_id), metadata=person.metadata
    )).conversation
    if not conversation.client_id:  # between staff: their alerts are their own business
        return web.json_response({"deliveries": [], "status": {}})
    reply = await backends.notify.ListDeliveryStatus(
        notify_pb.ListDeliveryStatusRequest(conversation_id=conversation.conversation_id, message_ids=ids),
        metadata=person.metadata,
    )
    deliveries = [
        {
            "message_id": d.message_id,
            "channel": _CHANNELS.get(d.channel, "unknown"),
            "state": _STATES.get(d.state, "unknown"),
            "detail": d.detail,
            "attempts": d.attempts,
            "updated_at": iso(d.updated_at),
        }
        for d in reply.deliveries
        if d.recipient_id == conversation.client_id
    ]
    by_message: dict[str, list[dict]] = {}
    for d in deliveries:
        by_message.setdefault(d["message_id"], []).append(d)
    status = {mid: line for mid, items in by_message.items() if (line := status_line(items))}
    return web.json_response({"deliveries": deliveries, "status": status})

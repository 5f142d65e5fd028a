"""The JSON API behind the Secure Messages panel and the Client Portal.

Every call goes to the owning service with the signed-in person's access token;
the services decide what the person may do. The edge only shapes the answers
(one batched name lookup per request) and checks the obvious (JSON, types).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb

from services.web.errors import HttpError
from services.web.presenters import (
    client_json,
    conversation_json,
    message_json,
    person_json,
    user_json,
    users_by_id,
)
from services.web.resources import BACKENDS, CONFIG
from services.web.session import Person, api

CONVERSATIONS_PAGE_SIZE = 50
MESSAGES_PAGE_SIZE = 200
DIRECTORY_PAGE_SIZE = 20
RECENT_PAGE_SIZE = 10
# How far back "recently messaged" reaches when ordering search results.
RECENT_SEARCH_SIZE = 50
CLIENTS_PAGE_SIZE = 25
MAX_QUERY_LENGTH = 100
MAX_PAGE_TOKEN_LENGTH = 512
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
_TRUE, _FALSE = frozenset({"1", "true", "yes"}), frozenset({"", "0", "false", "no"})


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, "The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise HttpError(400, "The request body must be a JSON object.")
    return body


def non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise HttpError(400, f"{name} must be a whole number.")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HttpError(400, f"{name} must be a whole number.") from None
    if number < 0:
        raise HttpError(400, f"{name} must not be negative.")
    return number


def query_flag(request: web.Request, name: str) -> bool:
    """A yes/no query parameter (?archived=1); anything else is a 400."""
    value = request.query.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise HttpError(400, f"{name} must be true or false.")


def page_token(request: web.Request) -> str:
    token = request.query.get("page_token", "")
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise HttpError(400, "page_token is not a page token from this list.")
    return token


def search_query(request: web.Request) -> str:
    query = " ".join(request.query.get("q", "").split())
    if len(query) > MAX_QUERY_LENGTH:
        raise HttpError(400, f"A search can be at most {MAX_QUERY_LENGTH} characters.")
    return query


def profile_fields(body: dict[str, Any]) -> tuple[str, str]:
    """A client's name and email from a JSON body: both required, trimmed, of sane length."""
    name, email = body.get("display_name"), body.get("email")
    if not isinstance(name, str) or not " ".join(name.split()):
        raise HttpError(400, "Enter the client's name.")
    if not isinstance(email, str) or not email.strip():
        raise HttpError(400, "Enter the client's email address.")
    name, email = " ".join(name.split()), email.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise HttpError(400, f"A name can be at most {MAX_NAME_LENGTH} characters.")
    if len(email) > MAX_EMAIL_LENGTH:
        raise HttpError(400, f"An email address can be at most {MAX_EMAIL_LENGTH} characters.")
    return name, email


@api
async def me(request: web.Request, person: Person) -> web.Response:
    config = request.app[CONFIG]
    body = person_json(person)
    body["message_max_length"] = (
        config.staff_message_max_length if person.is_staff else config.client_message_max_length
    )
    return web.json_response(body)


@api
async def list_conversations(request: web.Request, person: Person) -> web.Response:
    """One page of the person's conversations, newest activity first (?archived=1: the archived ones;
    ?page_size= up to 50; ?page_token= from the page before)."""
    archived = query_flag(request, "archived")
    size = non_negative_int(request.query.get("page_size", CONVERSATIONS_PAGE_SIZE), "page_size")
    if not 1 <= size <= CONVERSATIONS_PAGE_SIZE:
        raise HttpError(400, f"page_size must be between 1 and {CONVERSATIONS_PAGE_SIZE}.")
    backends = request.app[BACKENDS]
    reply = await backends.messaging.ListConversations(
        msg_pb.ListConversationsRequest(page_size=size, page_token=page_token(request), archived=archived),
        metadata=person.metadata,
    )
    users = await users_by_id(backends, person, (p.user_id for c in reply.conversations for p in c.participants))
    return web.json_response(
        {
            "conversations": [conversation_json(c, users, person) for c in reply.conversations],
            "next_page_token": reply.next_page_token,
        }
    )


@api(staff_only=True)
async def open_conversation(request: web.Request, person: Person) -> web.Response:
    body = await json_body(request)
    ids = body.get("participant_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise HttpError(400, "participant_ids must be a non-empty list of user ids.")
    backends = request.app[BACKENDS]
    reply = await backends.messaging.OpenConversation(
        msg_pb.OpenConversationRequest(participant_ids=ids), metadata=person.metadata
    )
    users = await users_by_id(backends, person, (p.user_id for p in reply.conversation.participants))
    return web.json_response(
        {"conversation": conversation_json(reply.conversation, users, person), "created": reply.created},
        status=201 if reply.created else 200,
    )


@api
async def get_conversation(request: web.Request, person: Person) -> web.Response:
    backends = request.app[BACKENDS]
    reply = await backends.messaging.GetConversation(
        msg_pb.GetConversationRequest(conversation_id=request.match_info["conversation_id"]), metadata=person.metadata
    )
    users = await users_by_id(backends, person, (p.user_id for p in reply.conversation.participants))
    return web.json_response({"conversation": conversation_json(reply.conversation, users, person)})


@api
async def archive_conversation(request: web.Request, person: Person) -> web.Response:
    """Archive (or bring back) a conversation for this person only."""
    body = await json_body(request)
    archived = body.get("archived", True)
    if not isinstance(archived, bool):
        raise HttpError(400, "archived must be true or false.")
    reply = await request.app[BACKENDS].messaging.ArchiveConversation(
        msg_pb.ArchiveConversationRequest(conversation_id=request.match_info["conversation_id"], archived=archived),
        metadata=person.metadata,
    )
    return web.json_response({"conversation_id": request.match_info["conversation_id"], "archived": reply.archived})


@api
async def list_messages(request: web.Request, person: Person) -> web.Response:
    after_seq = non_negative_int(request.query.get("after_seq", "0"), "after_seq")
    backends = request.app[BACKENDS]
    reply = await backends.messaging.ListMessages(
        msg_pb.ListMessagesRequest(
            conversation_id=request.match_info["conversation_id"], after_seq=after_seq, page_size=MESSAGES_PAGE_SIZE
        ),
        metadata=person.metadata,
    )
    users = await users_by_id(backends, person, (m.sender_id for m in reply.messages))
    return web.json_response({"messages": [message_json(m, users, person) for m in reply.messages]})


@api
async def send_message(request: web.Request, person: Person) -> web.Response:
    body = await json_body(request)
    text, key = body.get("body"), body.get("idempotency_key")
    if not isinstance(text, str):
        raise HttpError(400, "body must be the message text.")
    if not isinstance(key, str) or not key:
        raise HttpError(400, "idempotency_key is required, so that a retried send never makes a second message.")
    backends = request.app[BACKENDS]
    reply = await backends.messaging.SendMessage(
        msg_pb.SendMessageRequest(conversation_id=request.match_info["conversation_id"], body=text, idempotency_key=key),
        metadata=person.metadata,
    )
    users = {person.user_id: person.user}
    return web.json_response(
        {"message": message_json(reply.message, users, person), "created": reply.created},
        status=201 if reply.created else 200,
    )


@api
async def mark_read(request: web.Request, person: Person) -> web.Response:
    body = await json_body(request)
    seq = non_negative_int(body.get("seq", body.get("read_seq")), "seq")
    reply = await request.app[BACKENDS].messaging.MarkRead(
        msg_pb.MarkReadRequest(conversation_id=request.match_info["conversation_id"], read_seq=seq),
        metadata=person.metadata,
    )
    return web.json_response({"read_seq": reply.read_seq})


@api
async def unread(request: web.Request, person: Person) -> web.Response:
    reply = await request.app[BACKENDS].messaging.GetUnreadSummary(
        msg_pb.GetUnreadSummaryRequest(), metadata=person.metadata
    )
    return web.json_response(
        {"unread_messages": reply.unread_messages, "unread_conversations": reply.unread_conversations}
    )


@api(staff_only=True)
async def directory(request: web.Request, person: Person) -> web.Response:
    """New Message's search: the practice's clients and staff, people recently messaged first."""
    query = search_query(request)
    if not query:
        return web.json_response({"users": []})
    backends = request.app[BACKENDS]
    found, recent = await asyncio.gather(
        backends.auth.SearchDirectory(
            auth_pb.SearchDirectoryRequest(query=query, page_size=DIRECTORY_PAGE_SIZE), metadata=person.metadata
        ),
        backends.messaging.ListRecentContacts(
            msg_pb.ListRecentContactsRequest(page_size=RECENT_SEARCH_SIZE), metadata=person.metadata
        ),
    )
    rank = {uid: n for n, uid in enumerate(recent.user_ids)}
    users = [u for u in found.users if u.user_id != person.user_id]
    # sorted() is stable: among the rest, auth's order (its best matches first) stays.
    users.sort(key=lambda u: rank.get(u.user_id, len(rank)))
    return web.json_response({"users": [{**user_json(u, person), "recent": u.user_id in rank} for u in users]})


@api(staff_only=True)
async def recent_contacts(request: web.Request, person: Person) -> web.Response:
    backends = request.app[BACKENDS]
    reply = await backends.messaging.ListRecentContacts(
        msg_pb.ListRecentContactsRequest(page_size=RECENT_PAGE_SIZE), metadata=person.metadata
    )
    ids = [uid for uid in reply.user_ids if uid != person.user_id]
    users = await users_by_id(backends, person, ids)
    return web.json_response({"users": [user_json(users[uid], person) for uid in ids if uid in users]})


@api(staff_only=True)
async def client_messaging(request: web.Request, person: Person) -> web.Response:
    """GET: is secure messaging on for this client? POST ({"enabled": true|false}, default true): turn it on or off."""
    client_id = request.match_info["client_id"]
    messaging = request.app[BACKENDS].messaging
    if request.method == "POST":
        enabled = (await json_body(request)).get("enabled", True) if request.body_exists else True
        if not isinstance(enabled, bool):
            raise HttpError(400, "enabled must be true or false.")
        if enabled:
            reply = await messaging.EnableClientMessaging(
                msg_pb.EnableClientMessagingRequest(client_id=client_id), metadata=person.metadata
            )
        else:
            reply = await messaging.DisableClientMessaging(
                msg_pb.DisableClientMessagingRequest(client_id=client_id), metadata=person.metadata
            )
    else:
        reply = await messaging.GetClientMessaging(
            msg_pb.GetClientMessagingRequest(client_id=client_id), metadata=person.metadata
        )
    return web.json_response({"client_id": client_id, "enabled": reply.enabled})



@api(staff_only=True)
async def list_clients(request: web.Request, person: Person) -> web.Response:
    """The Clients list: the practice's clients in name order, optionally searched, a page at a time."""
    reply = await request.app[BACKENDS].auth.ListClients(
        auth_pb.ListClientsRequest(query=search_query(request), page_size=CLIENTS_PAGE_SIZE,
                                   page_token=page_token(request)),
        metadata=person.metadata,
    )
    return web.json_response(
        {"clients": [client_json(c) for c in reply.clients], "next_page_token": reply.next_page_token}
    )


@api(staff_only=True)
async def create_client(request: web.Request, person: Person) -> web.Response:
    name, email = profile_fields(await json_body(request))
    reply = await request.app[BACKENDS].auth.CreateClient(
        auth_pb.CreateClientRequest(display_name=name, email=email), metadata=person.metadata
    )
    return web.json_response({"client": client_json(reply.client)}, status=201)

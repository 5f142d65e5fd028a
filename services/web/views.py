"""HTML pages: sign-in, the staff home with its Secure Messages panel, the quick
sign-in landing, the Client Portal, and the health endpoints."""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from grpc_health.v1 import health_pb2

from services.web.errors import from_rpc_error
from services.web.presenters import conversation_title, message_json, preview_sender, users_by_id, when
from services.web.rendering import has_unread, render, render_portal, render_staff
from services.web.resources import BACKENDS, CONFIG
from services.web.session import (
    SESSION_ENDED_MESSAGE,
    Person,
    clear_session_cookie,
    client_page,
    current,
    end_previous_session,
    is_safe_next,
    session_ended,
    set_session_cookie,
    staff_page,
)

log = logging.getLogger("confidant.web")

WRONG_CREDENTIALS = "Email or password is incorrect."
# Enough of a thread for a page; older messages are a later issue's "load more".
THREAD_PAGE_SIZE = 200


def see_other(location: str) -> web.Response:
    """A 303 as a response object (for redirects that also set or clear the cookie)."""
    return web.Response(status=303, headers={"Location": location})


# ---------------------------------------------------------------- health


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    """Ready when every service's gRPC health check says SERVING."""
    backends = request.app[BACKENDS]

    async def check(name: str) -> bool:
        try:
            reply = await backends.health[name].Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    names = sorted(backends.health)
    results = await asyncio.gather(*(check(name) for name in names))
    down = [name for name, ok in zip(names, results, strict=True) if not ok]
    if down:
        return web.Response(text="not ready: " + ", ".join(down), status=503)
    return web.Response(text="ready")


# ---------------------------------------------------------------- sign-in / sign-out

PASSWORD_SAVED_MESSAGE = "Your password is saved. Sign in with it and your authentication code."


def _sign_in_form(request: web.Request, portal: bool) -> web.Response:
    next_path = request.query.get("next", "")
    # "ended": sent here because the session ended (idle, its end, a quick link's window); say so.
    ended = request.query.get("ended") == "1" or session_ended(request)
    notice = SESSION_ENDED_MESSAGE if ended else ""
    if request.query.get("password_saved") == "1":
        notice = PASSWORD_SAVED_MESSAGE
    return sign_in_page(request, portal=portal, next_path=next_path if is_safe_next(next_path) else "",
                        notice=notice)


def sign_in_page(request: web.Request, *, portal: bool, next_path: str = "", error: str = "", email: str = "",
                 notice: str = "", status: int = 200) -> web.Response:
    """The sign-in form (staff, or the Client Portal's); ``next_path`` must already be safe."""
    return render(request, "account/sign_in.html",
                  {"portal": portal, "next_path": next_path, "error": error, "email": email,
                   "notice": "" if error else notice}, status)


async def sign_in_form(request: web.Request) -> web.Response:
    return _sign_in_form(request, portal=False)


async def portal_sign_in_form(request: web.Request) -> web.Response:
    return _sign_in_form(request, portal=True)


def landing_for(user: auth_pb.User) -> str:
    return "/portal" if user.role == auth_pb.ROLE_CLIENT else "/"


async def sign_in(request: web.Request) -> web.Response:
    form = await request.post()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    next_path = str(form.get("next", ""))
    portal = str(form.get("portal", "")) == "1" or next_path.startswith("/portal")
    safe_next = next_path if is_safe_next(next_path) else ""

    def again(message: str, status: int) -> web.Response:
        return sign_in_page(request, portal=portal, next_path=safe_next, error=message, email=email, status=status)

    if not email or not password:
        return again(WRONG_CREDENTIALS, 401)
    auth = request.app[BACKENDS].auth
    try:
        reply = await auth.SignIn(
            auth_pb.SignInRequest(email=email, password=password, client_address=request.remote or "")
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
                          grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
            return again(WRONG_CREDENTIALS, 401)
        error = from_rpc_error(exc)
        return again(error.message, error.status)
    if reply.second_factor_required:
        from services.web import security_views  # here: security_views imports this module

        return await security_views.second_factor_step(request, reply, safe_next)
    await end_previous_session(request, reply.session_token)
    response = see_other(safe_next or landing_for(reply.user))
    set_session_cookie(request, response, reply.session_token)
    return response


async def sign_out(request: web.Request) -> web.Response:
    person = current(request)
    cookie = request.cookies.get(request.app[CONFIG].session_cookie_name)
    if cookie:
        try:
            await request.app[BACKENDS].auth.SignOut(auth_pb.SignOutRequest(session_token=cookie))
        except grpc.aio.AioRpcError as exc:
            # An unknown or already-ended session is signed out already.
            if exc.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.INVALID_ARGUMENT):
                raise
    response = see_other("/portal/sign-in" if person is not None and person.is_client else "/sign-in")
    clear_session_cookie(request, response)
    return response


# ---------------------------------------------------------------- staff


@staff_page
async def staff_home(request: web.Request, person: Person) -> web.Response:
    return await render_staff(request, person, "staff/home.html", {})


# ---------------------------------------------------------------- quick sign-in link


def _portal_sign_in(conversation_id: str) -> str:
    if conversation_id:
        return f"/portal/sign-in?next=/portal/conversations/{conversation_id}"
    return "/portal/sign-in"


async def magic_link_landing(request: web.Request) -> web.Response:
    """GET never consumes the link (mail scanners follow links): it only offers "View message"."""
    token = request.match_info["token"]
    try:
        reply = await request.app[BACKENDS].auth.InspectMagicLink(auth_pb.InspectMagicLinkRequest(token=token))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            raise web.HTTPSeeOther("/portal/sign-in") from None
        raise
    if reply.outcome == auth_pb.MAGIC_LINK_OUTCOME_VALID:
        return render(request, "portal/magic_link.html", {"token": token, "practice": ""})
    if reply.outcome in (auth_pb.MAGIC_LINK_OUTCOME_EXPIRED, auth_pb.MAGIC_LINK_OUTCOME_ALREADY_USED):
        raise web.HTTPSeeOther(_portal_sign_in(reply.conversation_id))
    raise web.HTTPSeeOther("/portal/sign-in")


async def magic_link_redeem(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    try:
        reply = await request.app[BACKENDS].auth.RedeemMagicLink(
            auth_pb.RedeemMagicLinkRequest(token=token, client_address=request.remote or "")
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            raise web.HTTPSeeOther("/portal/sign-in") from None
        raise
    if reply.outcome == auth_pb.MAGIC_LINK_OUTCOME_REDEEMED and reply.session_token:
        # The link's person replaces whoever was signed in on this browser (never a mix of both).
        await end_previous_session(request, reply.session_token)
        response = see_other(f"/portal/conversations/{reply.conversation_id}")
        set_session_cookie(request, response, reply.session_token)
        return response
    if reply.outcome in (auth_pb.MAGIC_LINK_OUTCOME_EXPIRED, auth_pb.MAGIC_LINK_OUTCOME_ALREADY_USED):
        raise web.HTTPSeeOther(_portal_sign_in(reply.conversation_id))
    raise web.HTTPSeeOther("/portal/sign-in")


# ---------------------------------------------------------------- client portal


def preview_text(conversation: msg_pb.Conversation, users: dict, person: Person) -> str:
    """The last message's start, with who wrote it when that is not already the title (you, or in a group)."""
    said_by = conversation.last_sender_id == person.user_id or len(conversation.participants) > 2
    sender = preview_sender(conversation, users, person) if said_by else ""
    return f"{sender}: {conversation.preview}" if sender and conversation.preview else conversation.preview


@client_page
async def portal_home(request: web.Request, person: Person) -> web.Response:
    if person.magic_link and person.session.conversation_id:
        # A quick sign-in reaches its own conversation only.
        raise web.HTTPSeeOther(f"/portal/conversations/{person.session.conversation_id}")
    backends = request.app[BACKENDS]
    listing, unread = await asyncio.gather(
        backends.messaging.ListConversations(msg_pb.ListConversationsRequest(page_size=50), metadata=person.metadata),
        has_unread(request, person),
    )
    conversations = list(listing.conversations)
    if len(conversations) == 1:
        raise web.HTTPSeeOther(f"/portal/conversations/{conversations[0].conversation_id}")
    users = await users_by_id(backends, person, (p.user_id for c in conversations for p in c.participants))
    rows = [
        {
            "conversation_id": c.conversation_id,
            "title": conversation_title(c, users, person),
            "unread_count": c.unread_count,
            "last_activity": when(c.last_activity_at),
            "preview": preview_text(c, users, person),
        }
        for c in conversations
    ]
    return await render_portal(request, person, "portal/home.html", {"title": "Secure Messages", "conversations": rows},
                               unread=unread)


@client_page
async def portal_conversation(request: web.Request, person: Person) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    backends = request.app[BACKENDS]
    got = await backends.messaging.GetConversation(
        msg_pb.GetConversationRequest(conversation_id=conversation_id), metadata=person.metadata
    )
    conversation = got.conversation
    after = max(0, conversation.last_seq - THREAD_PAGE_SIZE)
    listing, unread = await asyncio.gather(
        backends.messaging.ListMessages(
            msg_pb.ListMessagesRequest(conversation_id=conversation_id, after_seq=after, page_size=THREAD_PAGE_SIZE),
            metadata=person.metadata,
        ),
        has_unread(request, person),
    )
    users = await users_by_id(backends, person, (p.user_id for p in conversation.participants))
    messages = []
    for message in listing.messages:
        item = message_json(message, users, person)
        messages.append({**item, "sender": "You" if item["mine"] else item["sender_name"],
                         "created_at": when(message.created_at)})
    context = {
        "title": "Secure Messages",
        "conversation_id": conversation_id,
        "thread_title": conversation_title(conversation, users, person),
        "messages": messages,
        "max_length": request.app[CONFIG].client_message_max_length,
        "idempotency_key": str(uuid.uuid4()),
        "can_send": conversation.can_send,
    }
    return await render_portal(request, person, "portal/thread.html", context, unread=unread)


@client_page
async def portal_send(request: web.Request, person: Person) -> web.Response:
    """The composer without JavaScript: a plain form post, then back to the thread."""
    conversation_id = request.match_info["conversation_id"]
    form = await request.post()
    await request.app[BACKENDS].messaging.SendMessage(
        msg_pb.SendMessageRequest(
            conversation_id=conversation_id,
            body=str(form.get("body", "")),
            idempotency_key=str(form.get("idempotency_key", "")) or str(uuid.uuid4()),
        ),
        metadata=person.metadata,
    )
    raise web.HTTPSeeOther(f"/portal/conversations/{conversation_id}")

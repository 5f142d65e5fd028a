"""The signed-in person: session cookie -> auth.AuthenticateSession -> ``request[PERSON]``.

The cookie holds auth's opaque session token. Every request that needs a person
asks auth (with web's service token) who it belongs to; auth enforces idle and
absolute expiry and magic-link windows, and returns a short-lived access token
that the edge forwards to the other services on the person's behalf.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import grpc
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.common import convert
from services.common.clients import bearer
from services.common.identity import STAFF_ROLES
from services.web.errors import HttpError
from services.web.resources import BACKENDS, CONFIG, Backends

log = logging.getLogger("confidant.web")

ROLE_LABELS = {"owner": "Clinician", "clinician": "Clinician", "team_member": "Team member", "client": "Client"}

# Codes with which auth says "this session token is no good" (rather than "auth is down").
_NO_SESSION = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


def role_name(user: auth_pb.User) -> str:
    return convert.role_name(user.role)


@dataclass(frozen=True)
class Person:
    user: auth_pb.User
    session: auth_pb.Session
    session_token: str
    access_token: str
    # Unix seconds.
    access_expires_at: float
    session_expires_at: float

    @property
    def user_id(self) -> str:
        return self.user.user_id

    @property
    def role(self) -> str:
        return role_name(self.user)

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def is_client(self) -> bool:
        return self.role == "client"

    @property
    def magic_link(self) -> bool:
        return self.session.kind == auth_pb.SESSION_KIND_MAGIC_LINK

    @property
    def metadata(self):
        """gRPC metadata for a call made on this person's behalf."""
        return bearer(self.access_token)

    def access_seconds_left(self) -> float:
        return self.access_expires_at - time.time()

    def session_seconds_left(self) -> float:
        """Until the session's end as known now (idle expiry may come sooner); inf when unknown."""
        return self.session_expires_at - time.time() if self.session_expires_at else float("inf")


def _seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9


async def authenticate(backends: Backends, session_token: str, background: bool = False) -> Person | None:
    """The person behind a session token, or None when the session is unknown or over.

    ``background``: the person did nothing (a stream renewing its token, an automatic
    refresh), so this does not keep the session from its idle timeout.
    """
    try:
        reply = await backends.auth.AuthenticateSession(
            auth_pb.AuthenticateSessionRequest(session_token=session_token, background=background)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _NO_SESSION:
            return None
        raise
    return Person(
        user=reply.user,
        session=reply.session,
        session_token=session_token,
        access_token=reply.access_token,
        access_expires_at=_seconds(reply.access_token_expires_at) or time.time() + 60,
        session_expires_at=_seconds(reply.session.expires_at),
    )


PERSON = web.RequestKey("person", object)
# Set when the request carried a session cookie that is no longer valid: the response clears it.
CLEAR_COOKIE = web.RequestKey("clear_cookie", bool)

# What a person whose session is over (idle, absolute end, quick-link window, sign-out
# elsewhere) reads: on the sign-in page they are sent to, and in the API's 401.
SESSION_ENDED_MESSAGE = "You were signed out because your session ended. Please sign in again."
SIGN_IN_MESSAGE = "Please sign in."

# The SMS providers' webhooks: no person, no cookie; each request is authenticated by its signature.
WEBHOOK_PREFIX = "/webhooks/"
# Paths that never need the person (no call to auth for them).
_ANONYMOUS_PREFIXES = ("/static/", "/healthz", "/readyz", "/dev/", "/m/", WEBHOOK_PREFIX)


# Set by the page's script on requests the person did not make (refreshing the dot).
BACKGROUND_HEADER = "X-Confidant-Background"


def is_background(request: web.Request) -> bool:
    """Requests that are not the person's activity: the event stream and automatic refreshes."""
    return request.path == "/api/events" or request.headers.get(BACKGROUND_HEADER) == "1"


@web.middleware
async def session_middleware(request: web.Request, handler):
    request[PERSON] = None
    cookie = request.cookies.get(request.app[CONFIG].session_cookie_name)
    if cookie and not request.path.startswith(_ANONYMOUS_PREFIXES):
        person = await authenticate(request.app[BACKENDS], cookie, background=is_background(request))
        request[PERSON] = person
        if person is None:
            request[CLEAR_COOKIE] = True
    return await handler(request)


@web.middleware
async def stale_cookie_middleware(request: web.Request, handler):
    """Clear a cookie whose session is over (outside the error middleware, so error pages clear it too)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if request.get(CLEAR_COOKIE):
            clear_session_cookie(request, exc)
        raise
    if request.get(CLEAR_COOKIE) and not response.prepared:
        if request.app[CONFIG].session_cookie_name not in response.cookies:
            clear_session_cookie(request, response)
    return response


def current(request: web.Request) -> Person | None:
    return request[PERSON]


def session_ended(request: web.Request) -> bool:
    """The request carried a session cookie, but its session is over."""
    return bool(request.get(CLEAR_COOKIE))


def session_cookie_options(config) -> dict:
    """The attributes of the session cookie (``__Host-`` names need Secure, Path=/ and no Domain)."""
    return {"path": "/", "httponly": True, "samesite": "Lax", "secure": config.secure_cookies}


def set_session_cookie(request: web.Request, response: web.StreamResponse, session_token: str) -> None:
    config = request.app[CONFIG]
    response.set_cookie(config.session_cookie_name, session_token, **session_cookie_options(config))


async def end_previous_session(request: web.Request, new_session_token: str) -> None:
    """At sign-in (password or quick link): revoke the session this browser held before.

    The new session's cookie replaces the old one; the old session must not live on
    server-side where anyone holding a copy of that cookie could still use it.
    """
    old = request.cookies.get(request.app[CONFIG].session_cookie_name)
    if not old or old == new_session_token:
        return
    try:
        await request.app[BACKENDS].auth.SignOut(auth_pb.SignOutRequest(session_token=old))
    except grpc.aio.AioRpcError as exc:
        # Already over or unknown: nothing to revoke. Anything else must not block the new sign-in.
        if exc.code() not in _NO_SESSION:
            log.warning("could not end the previous session", extra={"fields": {"code": exc.code().name}})


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    config = request.app[CONFIG]
    response.del_cookie(config.session_cookie_name, **session_cookie_options(config))


def sign_in_url(request: web.Request, portal: bool, ended: bool = False) -> str:
    """Sign-in, then back to this page; ``ended`` makes the sign-in page say the session ended."""
    base = "/portal/sign-in" if portal else "/sign-in"
    url = f"{base}?next={quote(request.path_qs, safe='/')}"
    return f"{url}&ended=1" if ended else url


def is_safe_next(value: str | None) -> bool:
    """A local path only: no scheme, no host, no protocol-relative or backslash tricks."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return False
    # Browsers read "/\\host" as "//host"; control characters are never part of a real path.
    return "\\" not in value and not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


Handler = Callable[[web.Request, Person], Awaitable[web.StreamResponse]]


def staff_page(handler: Handler):
    """A staff page: no session -> sign-in (then back here); a client -> the portal."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        person = current(request)
        if person is None:
            raise web.HTTPSeeOther(sign_in_url(request, portal=False, ended=session_ended(request)))
        if not person.is_staff:
            raise web.HTTPSeeOther("/portal")
        return await handler(request, person)

    return wrapper


def client_page(handler: Handler):
    """A Client Portal page: no session -> portal sign-in (then back here); staff -> their home."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        person = current(request)
        if person is None:
            raise web.HTTPSeeOther(sign_in_url(request, portal=True, ended=session_ended(request)))
        if not person.is_client:
            raise web.HTTPSeeOther("/")
        return await handler(request, person)

    return wrapper


def api(handler: Handler | None = None, *, staff_only: bool = False):
    """A JSON endpoint: 401 without a session, 403 for clients when ``staff_only``."""

    def decorate(fn: Handler):
        @functools.wraps(fn)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            person = current(request)
            if person is None:
                raise HttpError(401, SESSION_ENDED_MESSAGE if session_ended(request) else SIGN_IN_MESSAGE)
            if staff_only and not person.is_staff:
                raise HttpError(403, "Only the practice's clinicians and team members can do this.")
            return await fn(request, person)

        return wrapper

    return decorate(handler) if handler is not None else decorate

"""Cross-cutting request handling: the client's address and request id, access log and
metrics, errors, CSRF, security headers.

One error middleware turns gRPC status codes (and the edge's own ``HttpError``)
into HTTP: JSON ``{"error": "..."}`` under /api, an HTML page elsewhere. A signed-in
person's error page keeps their own top bar (staff: with Secure Messages), so a 403
or 404 is not a dead end.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import grpc
from aiohttp import web

from services.common.logs import new_request_id, reset_request_id, set_request_id, valid_request_id
from services.web.config import IpNetwork
from services.web.errors import DEFAULT_HEADING, ERROR_HEADINGS, FALLBACK_MESSAGES, HttpError, from_rpc_error
from services.web.rendering import portal_chrome, render, staff_chrome
from services.web.resources import CONFIG, METRICS
from services.web.session import PERSON, SESSION_ENDED_MESSAGE, WEBHOOK_PREFIX, Person, sign_in_url

log = logging.getLogger("confidant.web")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Pages whose URL carries a secret token (magic links, credential links).
LINK_PAGES = ("/m/", "/credentials/")
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)


def is_api(request: web.Request) -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def route_name(request: web.Request) -> str:
    """The matched route's pattern (``/m/{token}``), never the raw path: paths can carry tokens."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


async def _layout(request: web.Request, person: Person | None, status: int) -> tuple[str, dict]:
    """The error page's layout and its top bar: the signed-in person's, else the plain one."""
    if person is None or status == 401:
        return "layouts/plain.html", {}
    try:
        if person.is_staff:
            return "layouts/staff.html", {"chrome": await staff_chrome(request, person)}
        return "layouts/portal.html", {"chrome": await portal_chrome(request, person)}
    except grpc.aio.AioRpcError as exc:
        # The services that fill the top bar are what failed, perhaps: the message still shows.
        log.info("error page without its top bar", extra={"fields": {"code": exc.code().name}})
        return "layouts/plain.html", {}


async def error_response(request: web.Request, status: int, message: str) -> web.Response:
    if is_api(request):
        return web.json_response({"error": message}, status=status)
    person = request.get(PERSON)
    if person is not None:
        home = "/portal" if person.is_client else "/"
    else:
        home = "/portal" if request.path.startswith("/portal") or request.path.startswith("/m/") else "/"
    layout, chrome = await _layout(request, person, status)
    context = {"layout": layout, **chrome, "heading": ERROR_HEADINGS.get(status, DEFAULT_HEADING),
               "message": message, "home": home}
    return render(request, "error.html", context, status)


def _trusted(address: str | None, proxies: tuple[IpNetwork, ...]) -> bool:
    if not address or not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: tuple[IpNetwork, ...]) -> str | None:
    """The address throttling and audit use: the peer, unless the peer is a trusted proxy; then
    the right-most address in X-Forwarded-For that is not a trusted proxy (proxies append the
    address they saw, so entries left of that one are whatever the client claimed)."""
    if not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not written by a proxy of ours: stop at the last hop we can vouch for
        client = hop
        if not _trusted(hop, proxies):
            break
    return client


@web.middleware
async def request_context_middleware(request: web.Request, handler):
    """First of all: the request id every log line of this request (here and in the services it
    calls) carries, and the client's address behind a trusted proxy (``request.remote``)."""
    proxies = request.app[CONFIG].trusted_proxies
    supplied = request.headers.get(REQUEST_ID_HEADER)
    from_proxy = _trusted(request.remote, proxies)
    request_id = supplied if from_proxy and valid_request_id(supplied) else new_request_id()
    request[REQUEST_ID] = request_id  # before clone(): the response header reads it from either request
    reset = set_request_id(request_id)
    try:
        if from_proxy:
            client = client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), proxies)
            if client != request.remote:
                request = request.clone(remote=client)
        return await handler(request)
    finally:
        reset_request_id(reset)


@web.middleware
async def access_log_middleware(request: web.Request, handler):
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        person = request.get(PERSON)
        seconds = time.perf_counter() - started
        route = route_name(request)
        request.app[METRICS].observe(request.method, route, status, seconds)
        log.info(
            "http",
            extra={
                "fields": {
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "user": getattr(person, "user_id", None),
                }
            },
        )


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        level = logging.WARNING if error.status >= 500 else logging.INFO
        log.log(level, "backend call failed", extra={"fields": {"route": route_name(request), "code": exc.code().name}})
        if error.status == 401 and request.get(PERSON) is not None:
            # The session ended between checks (its access token ran out with it): sign in again and come back.
            if not is_api(request):
                portal = request.path.startswith("/portal")
                raise web.HTTPSeeOther(sign_in_url(request, portal=portal, ended=True)) from None
            return await error_response(request, 401, SESSION_ENDED_MESSAGE)
        if error.status == 401 and not is_api(request):
            raise web.HTTPSeeOther(sign_in_url(request, portal=request.path.startswith("/portal"))) from None
        return await error_response(request, error.status, error.message)
    except HttpError as exc:
        return await error_response(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = FALLBACK_MESSAGES.get(exc.status) or exc.reason
        if exc.status == 405:
            message = "This address does not accept that kind of request."
        if exc.status == 413:
            message = "The request is too large."
        return await error_response(request, exc.status, message)
    except Exception:
        log.exception("unhandled error", extra={"fields": {"route": route_name(request)}})
        return await error_response(request, 500, FALLBACK_MESSAGES[500])


def _authority(url_host: str | None, port: int | None) -> tuple[str, int | None]:
    return (url_host or "").lower(), port


def same_origin(request: web.Request, public_url: str) -> bool:
    """The request comes from a page of this site.

    The Origin header says so; where a browser sends ``Origin: null`` (some
    privacy settings do), Sec-Fetch-Site (which page scripts cannot set) says so
    instead. Without either, a Referer on this site will do.
    """
    source = request.headers.get("Origin")
    if source == "null" or not source:
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None:
            return fetch_site == "same-origin"
        if source == "null":
            return False
        source = request.headers.get("Referer")
    if not source:
        return False
    try:
        origin = urlsplit(source)
        origin_host, origin_port = origin.hostname, origin.port
    except ValueError:
        return False
    if origin.scheme not in ("http", "https") or not origin_host:
        return False
    default_port = 443 if origin.scheme == "https" else 80
    origin_port = origin_port or default_port
    allowed: list[tuple[str, int | None]] = []
    try:
        host = urlsplit(f"//{request.host}")
        allowed.append(_authority(host.hostname, host.port))
        public = urlsplit(public_url)
        allowed.append(_authority(public.hostname, public.port or (443 if public.scheme == "https" else 80)))
    except ValueError:
        return False
    for allowed_host, allowed_port in allowed:
        # A Host header without a port says nothing about the port (a TLS proxy in front, say).
        if origin_host.lower() == allowed_host and allowed_port in (None, origin_port):
            return True
    return False


@web.middleware
async def csrf_middleware(request: web.Request, handler):
    # Webhooks come from the SMS providers' servers, not from pages; their signatures authenticate them.
    if request.method not in SAFE_METHODS and not request.path.startswith(WEBHOOK_PREFIX) \
            and not same_origin(request, request.app[CONFIG].public_url):
        log.info("cross-site request refused", extra={"fields": {"route": route_name(request)}})
        raise HttpError(403, "This request did not come from a page of this site, so it was refused.")
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, including errors, redirects and event streams."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers["X-Frame-Options"] = "DENY"
    # Link tokens are in URLs: the pages that carry one send no Referer at all;
    # elsewhere same-origin (a Referer only to ourselves). Form posts from a
    # no-referrer page carry "Origin: null", which the CSRF check accepts only
    # with Sec-Fetch-Site: same-origin.
    headers["Referrer-Policy"] = "no-referrer" if request.path.startswith(LINK_PAGES) else "same-origin"
    headers["X-Content-Type-Options"] = "nosniff"
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-cache"
    else:
        headers["Cache-Control"] = "no-store"
    config = request.app[CONFIG]
    if config.secure_cookies:
        headers["Strict-Transport-Security"] = "max-age=31536000"

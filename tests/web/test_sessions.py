"""Sessions and tokens at the edge, against the four real services: the session
cookie (``__Host-`` in production), a new id at every sign-in, sign-out and idle,
absolute and quick-link ends with the "signed out" explanation, the quick sign-in
link's single POST redemption, no token in clear in auth's database, CSRF on form
posts and the security headers on every kind of response.

Time is moved by setting auth's timestamps back in its database (never by sleeping).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from psycopg import sql
from yarl import URL

from services.web.config import WebConfig
from services.web.session import SESSION_ENDED_MESSAGE
from tests.runtime.production import production_env
from tests.web.conftest import STAFF_PASSWORD, WebStack, web_app

COOKIE = "confidant_session"
HOST_COOKIE = "__Host-confidant_session"
EVIL = "https://evil.example"


def session_cookie(http: aiohttp.ClientSession, stack: WebStack) -> str:
    cookie = http.cookie_jar.filter_cookies(URL(stack.url)).get(COOKIE)
    return cookie.value if cookie is not None else ""


def replaying(stack: WebStack, cookie: str) -> aiohttp.ClientSession:
    """A browser that sends exactly this session cookie (a copied or remembered one)."""
    http = stack.client_session()
    http.cookie_jar.update_cookies({COOKIE: cookie}, response_url=URL(stack.url))
    return http


async def sign_in(http: aiohttp.ClientSession, email: str, password: str, **extra: str) -> aiohttp.ClientResponse:
    async with http.post("/sign-in", data={"email": email, "password": password, **extra},
                         allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        return resp


async def conversation_with(stack: WebStack, client_id: str, text: str = "") -> str:
    """Dana enables the client, opens their conversation (and writes ``text``); returns its id."""
    async with await stack.signed_in("dana") as http:
        async with http.post(f"/api/clients/{client_id}/secure-messaging") as resp:
            assert resp.status == 200, await resp.text()
        async with http.post("/api/conversations", json={"participant_ids": [client_id]}) as resp:
            assert resp.status in (200, 201), await resp.text()
            cid = (await resp.json())["conversation"]["conversation_id"]
        if text:
            async with http.post(f"/api/conversations/{cid}/messages",
                                 json={"body": text, "idempotency_key": str(uuid.uuid4())}) as resp:
                assert resp.status == 201, await resp.text()
    return cid


async def age_sessions(stack: WebStack, user_id: str, column: str, interval: str) -> None:
    """Move a person's sessions' ``column`` (last_seen_at or expires_at) back to now() - interval."""
    async with stack.database("auth") as db:
        await db.execute(
            sql.SQL("UPDATE sessions SET {} = now() - %s::interval WHERE user_id = %s").format(sql.Identifier(column)),
            (interval, user_id),
        )


async def count_sessions(stack: WebStack, user_id: str) -> int:
    async with stack.database("auth") as db:
        cur = await db.execute("SELECT count(*) FROM sessions WHERE user_id = %s", (user_id,))
        return (await cur.fetchone())[0]


async def assert_ended_page(http: aiohttp.ClientSession, location: str) -> None:
    async with http.get(location) as resp:
        page = await resp.text()
    assert resp.status == 200
    assert f'<p class="notice" role="status">{SESSION_ENDED_MESSAGE}</p>' in page
    assert "<h1>Sign in</h1>" in page


# ---------------------------------------------------------------- the cookie


@contextlib.asynccontextmanager
async def production_edge(stack: WebStack, directory: Path) -> AsyncIterator[str]:
    """A second web edge in production mode in front of the same services; yields its URL.

    It loads a complete production configuration, then talks as the stack's services do: with
    their (development) keys, plaintext gRPC and a plain-HTTP address, which production itself
    would refuse.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = production_env(directory, web_listen=url.removeprefix("http://"),
                         **{f"{name}_addr": address for name, address in stack.addresses.items()})
    config = WebConfig.load(env)
    assert config.secure_cookies and config.session_cookie_name == HOST_COOKIE
    # Its public address is this test's plain-HTTP socket (production itself requires https).
    config = dataclasses.replace(config, keys_dir=stack.keys_dir, grpc_tls=None, public_url=url)
    async with web_app(config, sock):
        yield url


def cookie_attributes(header: str) -> tuple[str, str, dict[str, str]]:
    """``name=value; A; B=c`` -> (name, value, {"a": "", "b": "c"}) with lower-cased attribute names."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.strip().lower()] = val.strip()
    return name, value, attributes


async def test_production_cookie_is_host_prefixed_secure_httponly_lax(stack, tmp_path):
    async with production_edge(stack, tmp_path) as url, aiohttp.ClientSession(
        url, headers={"Origin": url}, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        async with http.post("/sign-in", data={"email": "dana@lakeside.test", "password": STAFF_PASSWORD},
                             allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
            [header] = resp.headers.getall("Set-Cookie")
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        name, value, attributes = cookie_attributes(header)
        assert name == HOST_COOKIE and len(value) >= 22  # >= 128 bits in URL-safe base64
        assert "secure" in attributes and "httponly" in attributes
        assert attributes["samesite"] == "Lax" and attributes["path"] == "/"
        assert "domain" not in attributes and "max-age" not in attributes and "expires" not in attributes

        signed_in = {"Cookie": f"{HOST_COOKIE}={value}"}
        async with http.get("/", headers=signed_in) as resp:
            assert resp.status == 200 and "Dana Rivera" in await resp.text()
        # The development name means nothing here.
        async with http.get("/", headers={"Cookie": f"{COOKIE}={value}"}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/sign-in?next=/"
        # The development mailbox does not exist in production.
        async with http.get("/dev/mailbox.json") as resp:
            assert resp.status == 404
        # Signing out deletes the cookie with the same attributes (a browser ignores a
        # __Host- deletion without Secure and Path=/).
        async with http.post("/sign-out", headers=signed_in, allow_redirects=False) as resp:
            assert resp.status == 303
            [header] = resp.headers.getall("Set-Cookie")
        name, value, attributes = cookie_attributes(header)
        assert name == HOST_COOKIE and value in ("", '""')
        assert "secure" in attributes and attributes["path"] == "/" and "domain" not in attributes
        async with http.get("/api/me", headers=signed_in) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == SESSION_ENDED_MESSAGE
            # The stale cookie is cleared in production too, __Host- attributes and all.
            _, _, attributes = cookie_attributes(resp.headers["Set-Cookie"])
            assert "secure" in attributes and attributes["path"] == "/"


# ---------------------------------------------------------------- session ids


async def test_a_new_session_id_at_every_sign_in(stack):
    dana = stack.people["dana"]
    async with stack.client_session() as http, stack.client_session() as other_device:
        await sign_in(http, dana.email, dana.password)
        first = session_cookie(http, stack)
        await sign_in(other_device, dana.email, dana.password)
        elsewhere = session_cookie(other_device, stack)
        # Signing in again on the same browser: a new id, and the one it replaces is over.
        await sign_in(http, dana.email, dana.password)
        second = session_cookie(http, stack)
        assert len({first, elsewhere, second}) == 3 and all(len(v) >= 22 for v in (first, elsewhere, second))
        async with http.get("/api/me") as resp:
            assert resp.status == 200 and (await resp.json())["display_name"] == "Dana Rivera"
        async with replaying(stack, first) as old:
            async with old.get("/api/me") as resp:
                assert resp.status == 401
        # Another device's session is untouched.
        async with other_device.get("/api/me") as resp:
            assert resp.status == 200


async def test_a_logged_out_cookie_replayed_is_refused(stack):
    dana = stack.people["dana"]
    async with stack.client_session() as http:
        await sign_in(http, dana.email, dana.password)
        cookie = session_cookie(http, stack)
        async with http.post("/sign-out", allow_redirects=False) as resp:
            assert resp.status == 303
        assert session_cookie(http, stack) == ""
    async with replaying(stack, cookie) as replay:
        async with replay.get("/api/me") as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": SESSION_ENDED_MESSAGE}
            assert resp.cookies[COOKIE].value == ""
    async with replaying(stack, cookie) as replay:
        async with replay.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]}) as resp:
            assert resp.status == 401
    async with replaying(stack, cookie) as replay:
        async with replay.get("/", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/sign-in?next=/&ended=1"
            assert resp.cookies[COOKIE].value == ""
        await assert_ended_page(replay, resp.headers["Location"])
        # Cleared: the next page is an ordinary sign-in, with no explanation.
        async with replay.get("/", allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/sign-in?next=/"
    # Without any cookie, the ordinary messages.
    async with stack.client_session() as http:
        async with http.get("/sign-in") as resp:
            assert SESSION_ENDED_MESSAGE not in await resp.text()
        async with http.get("/api/me") as resp:
            assert (await resp.json())["error"] == "Please sign in."


async def test_idle_and_absolute_expiry_sign_out_with_an_explanation(stack):
    member = await stack.add_person("idle", "team_member", "Idle Member", STAFF_PASSWORD)
    async with stack.client_session() as http:
        await sign_in(http, member.email, member.password)
        # 29 minutes idle: still signed in (and the request is activity).
        await age_sessions(stack, member.user_id, "last_seen_at", "29 minutes")
        async with http.get("/api/me") as resp:
            assert resp.status == 200
        # 31 minutes idle: over.
        await age_sessions(stack, member.user_id, "last_seen_at", "31 minutes")
        async with http.get("/api/me") as resp:
            assert resp.status == 401 and (await resp.json())["error"] == SESSION_ENDED_MESSAGE

        await sign_in(http, member.email, member.password)
        await age_sessions(stack, member.user_id, "last_seen_at", "31 minutes")
        async with http.get("/?tab=messages", allow_redirects=False) as resp:
            assert resp.status == 303
            location = resp.headers["Location"]
        assert location == "/sign-in?next=/?tab%3Dmessages&ended=1"
        await assert_ended_page(http, location)
        # Signing in from there goes back to the page.
        resp = await sign_in(http, member.email, member.password, next="/?tab=messages")
        assert resp.headers["Location"] == "/?tab=messages"
        async with http.get("/api/me") as resp:
            assert resp.status == 200
        # The absolute end (12 hours after sign-in), however active the session.
        await age_sessions(stack, member.user_id, "expires_at", "1 second")
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/sign-in?next=/&ended=1"


async def test_client_portal_sessions_end_with_the_portal_explanation(stack):
    client = await stack.add_person("idleclient", "client", "Idle Client", "maple-window-77")
    cid = await conversation_with(stack, client.user_id, "Portal idle check")
    async with stack.client_session() as http:
        await sign_in(http, client.email, client.password, portal="1")
        async with http.get(f"/portal/conversations/{cid}") as resp:
            assert resp.status == 200
        await age_sessions(stack, client.user_id, "last_seen_at", "31 minutes")
        async with http.get(f"/portal/conversations/{cid}", allow_redirects=False) as resp:
            assert resp.status == 303
            location = resp.headers["Location"]
        assert location == f"/portal/sign-in?next=/portal/conversations/{cid}&ended=1"
        await assert_ended_page(http, location)
        async with http.get(location) as resp:
            assert "Client Portal" in await resp.text()


# ---------------------------------------------------------------- the quick sign-in link


async def test_magic_link_head_and_gets_never_consume_and_one_post_signs_in_once(stack):
    client = await stack.add_person("linkonce", "client", "Link Once")
    cid = await conversation_with(stack, client.user_id, "Link once")
    path = await stack.magic_link(client.user_id, cid)
    async with stack.client_session() as scanner:
        async with scanner.head(path, allow_redirects=False) as resp:
            assert resp.status == 200
        for _ in range(3):
            async with scanner.get(path, allow_redirects=False) as resp:
                assert resp.status == 200 and ">View message</button>" in await resp.text()
                assert not resp.cookies
    assert await count_sessions(stack, client.user_id) == 0

    async with stack.client_session() as phone:
        async with phone.post(path, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/portal/conversations/{cid}"
            assert resp.cookies[COOKIE].value
        async with phone.get(f"/portal/conversations/{cid}") as resp:
            assert resp.status == 200 and "Link once" in await resp.text()
    assert await count_sessions(stack, client.user_id) == 1

    used = f"/portal/sign-in?next=/portal/conversations/{cid}"
    async with stack.client_session() as later:
        async with later.post(path, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == used
            assert COOKIE not in resp.cookies
        async with later.head(path, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == used
        async with later.get(path, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == used
    assert await count_sessions(stack, client.user_id) == 1


async def test_magic_link_expiry_tampering_and_its_session_window(stack):
    client = await stack.add_person("linkends", "client", "Link Ends")
    cid = await conversation_with(stack, client.user_id, "Link ends")
    path = await stack.magic_link(client.user_id, cid)
    token = path.removeprefix("/m/")

    # One character changed: unknown, and the real link is not burnt by the attempt.
    tampered = "/m/" + ("B" if token[0] != "B" else "C") + token[1:]
    async with stack.client_session() as http:
        for method in ("HEAD", "GET", "POST"):
            async with http.request(method, tampered, allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/portal/sign-in"
                assert COOKIE not in resp.cookies
        async with http.get(path, allow_redirects=False) as resp:
            assert resp.status == 200
    assert await count_sessions(stack, client.user_id) == 0

    # Redeemed: a quick session that ends with the link's window, whatever the activity.
    async with stack.client_session() as phone:
        async with phone.post(path, allow_redirects=False) as resp:
            assert resp.status == 303
        await age_sessions(stack, client.user_id, "expires_at", "1 second")
        async with phone.get(f"/portal/conversations/{cid}", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == f"/portal/sign-in?next=/portal/conversations/{cid}&ended=1"
        async with phone.get("/api/me") as resp:
            assert resp.status == 401

    # A new link whose 15 minutes have passed unused: to the portal sign-in, no session.
    expired = await stack.magic_link(client.user_id, cid)
    async with stack.database("auth") as db:
        await db.execute("UPDATE magic_links SET expires_at = now() - interval '1 second'"
                         " WHERE user_id = %s AND used_at IS NULL", (client.user_id,))
    async with stack.client_session() as http:
        for method in ("GET", "POST"):
            async with http.request(method, expired, allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == f"/portal/sign-in?next=/portal/conversations/{cid}"
                assert COOKIE not in resp.cookies
    assert await count_sessions(stack, client.user_id) == 1


async def test_another_clients_link_replaces_the_signed_in_client_and_never_merges(stack):
    secret = f"CANARY-{uuid.uuid4()}"
    owner = await stack.add_person("linkowner", "client", "Link Owner")
    owner_cid = await conversation_with(stack, owner.user_id, secret)
    other = await stack.add_person("otherclient", "client", "Other Client", "maple-window-77")
    other_cid = await conversation_with(stack, other.user_id, "Other's own")
    path = await stack.magic_link(owner.user_id, owner_cid)

    async with stack.client_session() as browser:
        await sign_in(browser, other.email, other.password, portal="1")
        other_cookie = session_cookie(browser, stack)
        # With their own session, the other client cannot read the link owner's conversation.
        async with browser.get(f"/portal/conversations/{owner_cid}") as resp:
            assert resp.status in (403, 404) and secret not in await resp.text()
        async with browser.get(f"/api/conversations/{owner_cid}/messages") as resp:
            assert resp.status in (403, 404) and secret not in await resp.text()
        # Looking at the link changes nothing.
        async with browser.get(path) as resp:
            assert resp.status == 200
        async with browser.get("/api/me") as resp:
            assert (await resp.json())["user_id"] == other.user_id

        # Redeeming it signs the link's owner in on this browser, in place of the other client.
        async with browser.post(path, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/portal/conversations/{owner_cid}"
        owner_cookie = session_cookie(browser, stack)
        assert owner_cookie and owner_cookie != other_cookie
        assert len(browser.cookie_jar) == 1
        async with browser.get("/api/me") as resp:
            me = await resp.json()
        assert me["user_id"] == owner.user_id and me["session"]["kind"] == "magic_link"
        # Nothing of the other client comes along: not their conversation.
        async with browser.get(f"/portal/conversations/{other_cid}") as resp:
            assert resp.status == 403 and "Other's own" not in await resp.text()
        async with browser.get(f"/portal/conversations/{owner_cid}") as resp:
            assert secret in await resp.text()

    # The replaced session is over; and still cannot read the owner's conversation.
    async with replaying(stack, other_cookie) as replay:
        async with replay.get(f"/api/conversations/{owner_cid}/messages") as resp:
            assert resp.status == 401 and secret not in await resp.text()


async def test_auth_database_holds_no_token_in_clear(stack):
    client = await stack.add_person("noclear", "client", "No Clear", "maple-window-77")
    cid = await conversation_with(stack, client.user_id, "No clear")
    path = await stack.magic_link(client.user_id, cid)
    secrets = [path.removeprefix("/m/")]
    async with stack.client_session() as phone:
        async with phone.post(path, allow_redirects=False) as resp:
            assert resp.status == 303
        secrets.append(session_cookie(phone, stack))
    async with stack.client_session() as http:
        await sign_in(http, client.email, client.password, portal="1")
        secrets.append(session_cookie(http, stack))
    assert all(len(s) >= 22 for s in secrets)

    async with stack.database("auth") as db:
        cur = await db.execute("SELECT table_name FROM information_schema.tables"
                               " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        tables = [row[0] for row in await cur.fetchall()]
        assert {"sessions", "magic_links"} <= set(tables)
        cur = await db.execute("SELECT * FROM magic_links WHERE user_id = %s", (client.user_id,))
        links = await cur.fetchall()
        cur = await db.execute("SELECT * FROM sessions WHERE user_id = %s", (client.user_id,))
        sessions = await cur.fetchall()
        # The link minted here (and, once notify has sent it, the one in the message's email); two sessions.
        assert len(links) >= 1 and len(sessions) == 2
        for row in links + sessions:
            for value in row:
                if isinstance(value, bytes | memoryview):
                    value = bytes(value)
                    assert all(value != s.encode() and s.encode() not in value for s in secrets)
                elif isinstance(value, str):
                    assert all(s not in value for s in secrets)
        # Nowhere else in auth's database either (audit details included): not as text, not as bytes.
        for table in tables:
            cur = await db.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table)))
            dump = "\n".join(row[0] for row in await cur.fetchall())
            for s in secrets:
                assert s not in dump and s.encode().hex() not in dump, table


# ---------------------------------------------------------------- CSRF and headers


async def test_cross_site_form_posts_with_a_valid_cookie_are_refused(stack):
    client = await stack.add_person("csrf", "client", "Csrf Client", "maple-window-77")
    cid = await conversation_with(stack, client.user_id)
    async with stack.client_session() as http:
        await sign_in(http, client.email, client.password, portal="1")
        form = {"body": "forged", "idempotency_key": str(uuid.uuid4())}
        for headers in ({"Origin": EVIL}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                        {"Origin": EVIL, "Referer": stack.url + "/portal"}):
            async with http.post(f"/portal/conversations/{cid}/messages", data=form, headers=headers,
                                 allow_redirects=False) as resp:
                assert resp.status == 403
                assert "did not come from a page of this site" in await resp.text()
            async with http.post("/sign-out", headers=headers, allow_redirects=False) as resp:
                assert resp.status == 403
            async with http.post(f"/api/conversations/{cid}/messages", json=form, headers=headers) as resp:
                assert resp.status == 403
        # Nothing was sent, and the session is still there.
        async with http.get(f"/api/conversations/{cid}/messages") as resp:
            assert resp.status == 200 and (await resp.json())["messages"] == []
        # The same post from the site itself goes through.
        async with http.post(f"/portal/conversations/{cid}/messages", data=form, allow_redirects=False) as resp:
            assert resp.status == 303


def assert_security_headers(resp: aiohttp.ClientResponse, what: str) -> None:
    headers = resp.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, what
    assert "unsafe-inline" not in csp and "default-src 'self'" in csp, what
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("Referrer-Policy") in ("same-origin", "no-referrer"), what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Cache-Control") == "no-store", what


async def test_every_kind_of_response_carries_the_security_headers(stack):
    client = await stack.add_person("headers", "client", "Header Client", "maple-window-77")
    cid = await conversation_with(stack, client.user_id, "Headers")
    link = await stack.magic_link(client.user_id, cid)
    anonymous = [
        ("GET", "/sign-in", 200),
        ("GET", "/portal/sign-in?ended=1", 200),
        ("GET", "/", 303),
        ("GET", "/api/me", 401),
        ("GET", "/nowhere", 404),
        ("GET", "/api/nowhere", 404),
        ("PUT", "/sign-in", 405),
        ("POST", "/sign-in", 403),  # cross-site
        ("GET", link, 200),
        ("HEAD", link, 200),
        ("GET", "/m/" + "A" * 43, 303),
        ("GET", "/healthz", 200),
    ]
    async with stack.client_session() as http:
        for method, path, status in anonymous:
            headers = {"Origin": EVIL} if status == 403 else {}
            async with http.request(method, path, headers=headers, allow_redirects=False) as resp:
                assert resp.status == status, (method, path, resp.status)
                assert_security_headers(resp, f"{method} {path}")
    signed_in = [
        ("GET", f"/portal/conversations/{cid}", 200),
        ("GET", f"/api/conversations/{cid}/messages", 200),
        ("GET", "/api/me", 200),
        ("GET", f"/portal/conversations/{uuid.uuid4()}", 404),
        ("GET", "/api/directory?q=a", 403),
        ("GET", "/", 303),
        ("POST", f"/portal/conversations/{cid}/messages", 303),
    ]
    async with stack.client_session() as http:
        await sign_in(http, client.email, client.password, portal="1")
        for method, path, status in signed_in:
            data = {"body": "hi", "idempotency_key": str(uuid.uuid4())} if method == "POST" else None
            async with http.request(method, path, data=data, allow_redirects=False) as resp:
                assert resp.status == status, (method, path, resp.status, await resp.text())
                assert_security_headers(resp, f"{method} {path}")
    async with replaying(stack, "stale-cookie") as http:
        async with http.get("/portal", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].endswith("&ended=1")
            assert_security_headers(resp, "stale redirect")


def test_cookie_name_follows_the_mode(tmp_path):
    from services.common.config import ConfigError, Env

    assert WebConfig.load(Env({})).session_cookie_name == COOKIE
    production = WebConfig.load(production_env(tmp_path))
    assert production.secure_cookies and production.session_cookie_name == HOST_COOKIE
    # Production behind plain HTTP (explicitly): no Secure, so no __Host- either.
    plain = WebConfig.load(production_env(tmp_path, secure_cookies="false"))
    assert plain.session_cookie_name == COOKIE
    with pytest.raises(ConfigError, match="__Host-"):
        WebConfig.load(Env({"CONFIDANT_SESSION_COOKIE_NAME": HOST_COOKIE}))

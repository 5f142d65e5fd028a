"""The web edge behind a proxy: with CONFIDANT_WEB_TRUSTED_PROXIES, the client address that
sign-in throttling and the audit trail use is the right-most untrusted X-Forwarded-For entry;
without it (the default), X-Forwarded-For is ignored. Request ids: a trusted proxy's valid
X-Request-Id is kept, anyone else's replaced, and every response says which it was."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestServer

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.web.app import create_app
from services.web.config import WebConfig
from services.web.middlewares import client_address
from tests.support import running, service_env

LIMIT = 3
PROXY = "127.0.0.1/32"  # the test client is the proxy


@pytest.fixture
async def auth(fresh_database, keys_dir) -> AsyncIterator[tuple[str, str]]:
    """(address, database URL) of a real auth allowing LIMIT sign-in attempts per client address."""
    url = await fresh_database("auth")
    config = AuthConfig.load(service_env(keys_dir, auth_database_url=url, sign_in_address_limit=str(LIMIT)))
    async with running(await create_auth(config)) as address:
        yield address, url


@contextlib.asynccontextmanager
async def edge(keys_dir, auth_address: str, **settings: str) -> AsyncIterator[aiohttp.ClientSession]:
    config = WebConfig.load(service_env(keys_dir, auth_addr=auth_address, **settings))
    server = TestServer(create_app(config))
    await server.start_server()
    base = str(server.make_url(""))
    try:
        async with aiohttp.ClientSession(base, headers={"Origin": base.rstrip("/")}) as http:
            yield http
    finally:
        await server.close()


async def sign_in(http: aiohttp.ClientSession, forwarded_for: str | None, n: int) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with http.post("/sign-in", data={"email": f"nobody{n}@example.test", "password": "wrong password!"},
                         headers=headers, allow_redirects=False) as resp:
        return resp.status


async def audited_addresses(database_url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (await conn.execute(
            "SELECT detail FROM audit_events WHERE action = 'sign_in' ORDER BY event_id")).fetchall()
    return [(detail if isinstance(detail, dict) else json.loads(detail)).get("client_address") for (detail,) in rows]


async def test_behind_a_trusted_proxy_each_real_client_is_throttled_on_its_own(auth, keys_dir):
    address, database = auth
    async with edge(keys_dir, address, web_trusted_proxies=PROXY) as http:
        first = [await sign_in(http, "203.0.113.7", n) for n in range(LIMIT + 1)]
        assert first[:LIMIT] == [401] * LIMIT and first[LIMIT] == 429
        # Another client behind the same proxy is not held back by the first one.
        assert await sign_in(http, "203.0.113.8", 99) == 401
        # Entries a client writes itself (left of what the proxy appended) change nothing.
        assert await sign_in(http, "198.51.100.1, 203.0.113.7", 100) == 429
    audited = await audited_addresses(database)
    assert audited == ["203.0.113.7"] * (LIMIT + 1) + ["203.0.113.8", "203.0.113.7"]


async def test_without_trusted_proxies_forwarded_for_is_ignored(auth, keys_dir):
    address, database = auth
    async with edge(keys_dir, address) as http:
        statuses = [await sign_in(http, f"203.0.113.{n}", n) for n in range(LIMIT + 1)]
    assert statuses == [401] * LIMIT + [429]
    assert set(await audited_addresses(database)) == {"127.0.0.1"}


async def test_request_ids_from_a_trusted_proxy_are_kept_and_others_replaced(auth, keys_dir):
    address, _ = auth
    for settings, kept in (({"web_trusted_proxies": PROXY}, True), ({}, False)):
        async with edge(keys_dir, address, **settings) as http:
            async with http.get("/healthz", headers={"X-Request-Id": "proxy-id-1"}) as resp:
                assert (resp.headers["X-Request-Id"] == "proxy-id-1") is kept
            async with http.get("/healthz", headers={"X-Request-Id": "not valid!"}) as resp:
                assert resp.headers["X-Request-Id"] != "not valid!"
            async with http.get("/no-such-page") as one, http.get("/no-such-page") as two:
                assert one.status == 404 and one.headers["X-Request-Id"] != two.headers["X-Request-Id"]


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("10.0.0.5", ["203.0.113.7"], "10.0.0.5"),                        # not a proxy of ours: the peer
    ("10.1.0.1", ["203.0.113.7"], "203.0.113.7"),
    ("10.1.0.1", ["198.51.100.1, 203.0.113.7, 10.1.0.9"], "203.0.113.7"),  # through two of our proxies
    ("10.1.0.1", ["198.51.100.1", "203.0.113.7"], "203.0.113.7"),     # the header given twice
    ("10.1.0.1", ["garbage, 203.0.113.7"], "203.0.113.7"),
    ("10.1.0.1", ["203.0.113.7, garbage"], "10.1.0.1"),               # the proxy never wrote that
    ("10.1.0.1", [], "10.1.0.1"),
    ("10.1.0.1", ["10.1.0.2"], "10.1.0.2"),                           # only proxies: the left-most
    ("10.1.0.1", ["2001:db8::1"], "2001:db8::1"),
])
def test_the_client_address(peer, forwarded, expected):
    proxies = (ipaddress.ip_network("10.1.0.0/16"),)
    assert client_address(peer, forwarded, proxies) == expected

"""The four real gRPC services in-process, each with a fresh database, and the web
edge in front of them on an ephemeral port, with a practice and its people."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.common.clients import bearer, open_channel
from services.consent.app import create_service as create_consent
from services.consent.config import ConsentConfig
from services.messaging.app import create_service as create_messaging
from services.messaging.config import MessagingConfig
from services.notify.app import create_service as create_notify
from services.notify.config import NotifyConfig
from services.web.app import create_app
from services.web.config import WebConfig
from tests.support import Tokens, service_env, unique

STAFF_PASSWORD = "quiet-harbor-2026"
CLIENT_PASSWORD = "maple-window-77"
LINK = re.compile(r"https?://[^\s\"'<>]+/m/[A-Za-z0-9_\-]+")


@dataclass
class Person:
    user_id: str
    email: str
    name: str
    password: str = ""


@dataclass
class WebStack:
    url: str
    addresses: dict[str, str]
    keys_dir: Path
    practice_id: str = ""
    people: dict[str, Person] = field(default_factory=dict)
    # Each service's database URL, for tests that must look at (or age) what a service stored.
    databases: dict[str, str] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def database(self, service: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """An autocommit connection to one service's database (to read it, or to move its clocks back)."""
        async with await psycopg.AsyncConnection.connect(self.databases[service], autocommit=True) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def auth(self) -> AsyncIterator[auth_grpc.AuthServiceStub]:
        channel = open_channel(self.addresses["auth"])
        try:
            yield auth_grpc.AuthServiceStub(channel)
        finally:
            await channel.close()

    async def add_person(self, key: str, role: str, name: str, password: str = "") -> Person:
        """Another person in the practice (role: "client", "clinician" or "team_member"), with a unique email."""
        email = f"{unique(key)}@{'client' if role == 'client' else 'lakeside'}.test"
        roles = {"client": auth_pb.ROLE_CLIENT, "clinician": auth_pb.ROLE_CLINICIAN,
                 "team_member": auth_pb.ROLE_TEAM_MEMBER}
        async with self.auth() as auth:
            reply = await auth.CreateUser(
                auth_pb.CreateUserRequest(practice_id=self.practice_id, role=roles[role], email=email,
                                          display_name=name, password=password),
                metadata=bearer(Tokens(self.keys_dir).service("web")), timeout=30,
            )
        person = Person(reply.user.user_id, email, name, password)
        self.people[key] = person
        return person

    async def magic_link(self, user_id: str, conversation_id: str) -> str:
        """A quick sign-in link's path, minted as notify mints it for an email."""
        async with self.auth() as auth:
            reply = await auth.CreateMagicLink(
                auth_pb.CreateMagicLinkRequest(user_id=user_id, conversation_id=conversation_id),
                metadata=bearer(Tokens(self.keys_dir).service("notify")), timeout=30,
            )
        return f"/m/{reply.token}"

    def client_session(self, origin: bool = True) -> aiohttp.ClientSession:
        """A browser-like HTTP client: keeps cookies (also for 127.0.0.1) and sends Origin on POSTs."""
        headers = {"Origin": self.url} if origin else {}
        return aiohttp.ClientSession(self.url, headers=headers, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def signed_in(self, who: str) -> aiohttp.ClientSession:
        person = self.people[who]
        http = self.client_session()
        async with http.post("/sign-in", data={"email": person.email, "password": person.password},
                             allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
        return http

    async def mailbox(self, to: str) -> list[dict]:
        async with self.client_session() as http, http.get("/dev/mailbox.json", params={"to": to}) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["items"]

    async def wait_for_emails(self, to: str, count: int, within: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + within
        while True:
            emails = [i for i in await self.mailbox(to) if i["channel"] == "email"]
            if len(emails) >= count or time.monotonic() > deadline:
                return emails
            await asyncio.sleep(0.1)


async def _practice(stack: WebStack, tokens) -> None:
    """Lakeside Counseling: Dana (owner), Sam (team member), Jordan (client with a password), Alex (client)."""
    web_token = tokens.metadata(tokens.service("web"))
    channel = open_channel(stack.addresses["auth"])
    try:
        auth = auth_grpc.AuthServiceStub(channel)
        created = await auth.CreatePractice(
            auth_pb.CreatePracticeRequest(
                name="Lakeside Counseling", owner_email="dana@lakeside.test", owner_display_name="Dana Rivera",
                owner_password=STAFF_PASSWORD,
            ),
            metadata=web_token, timeout=30,
        )
        stack.practice_id = created.practice.practice_id
        stack.people["dana"] = Person(created.owner.user_id, "dana@lakeside.test", "Dana Rivera", STAFF_PASSWORD)
        for key, role, email, name, password in (
            ("sam", auth_pb.ROLE_TEAM_MEMBER, "sam@lakeside.test", "Sam Okafor", STAFF_PASSWORD),
            ("jordan", auth_pb.ROLE_CLIENT, "jordan@client.test", "Jordan Lee", CLIENT_PASSWORD),
            ("alex", auth_pb.ROLE_CLIENT, "alex@client.test", "Alex Chen", ""),
        ):
            reply = await auth.CreateUser(
                auth_pb.CreateUserRequest(practice_id=stack.practice_id, role=role, email=email,
                                          display_name=name, password=password),
                metadata=web_token, timeout=30,
            )
            stack.people[key] = Person(reply.user.user_id, email, name, password)
    finally:
        await channel.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def web_app(config: WebConfig, sock: socket.socket, **app_options) -> AsyncIterator[web.Application]:
    app = create_app(config, **app_options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def web_stack(fresh_database, keys_dir, tokens, *, relay_auth_notices: bool = False, sns_fetcher=None,
                    **web_settings: str) -> AsyncIterator[WebStack]:
    """``relay_auth_notices``: auth knows notify's address, so its emails (invitations, resets,
    lock notices) reach the development mailbox; otherwise they stay in auth's outbox.
    ``sns_fetcher``: how the web edge fetches SNS signing certificates (a test CA's)."""
    # The web edge's socket first: notify needs its public URL for the links in emails.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fast = {
        "notify_poll_interval_seconds": "0.1",
        "messaging_outbox_poll_seconds": "0.2",
        "messaging_stream_poll_seconds": "0.5",
    }
    async with contextlib.AsyncExitStack() as stack:
        addresses: dict[str, str] = {}
        databases: dict[str, str] = {}

        # Every service's port is chosen before any starts: each knows all its peers
        # (auth and notify call messaging, messaging calls them), whatever the start order.
        for name in ("auth", "consent", "notify", "messaging"):
            addresses[name] = f"127.0.0.1:{free_port()}"

        async def start(name, config_cls, create, **settings):
            databases[name] = await fresh_database(name)
            peers = {f"{other}_addr": address for other, address in addresses.items() if other != name}
            env = service_env(keys_dir, public_url=url, **{f"{name}_database_url": databases[name]},
                              **{**peers, **settings}, **fast)
            service = await create(config_cls.load(env))
            await service.start(addresses[name])
            stack.push_async_callback(service.stop)

        await start("auth", AuthConfig, create_auth,
                    **({} if relay_auth_notices else {"notify_addr": "127.0.0.1:9"}))
        await start("consent", ConsentConfig, create_consent)
        # Without auth's notices no invitation reaches notify: a first alert to a client with no
        # password would wait the whole window for one (tests/notify/test_combined_email.py).
        await start("notify", NotifyConfig, create_notify,
                    **({} if relay_auth_notices else {"notify_invitation_hold_seconds": "0"}))
        await start("messaging", MessagingConfig, create_messaging)

        env = service_env(
            keys_dir, public_url=url, web_listen=url.removeprefix("http://"),
            **{f"{name}_addr": address for name, address in addresses.items()}, **web_settings,
        )
        options = {"sns_fetcher": sns_fetcher} if sns_fetcher is not None else {}
        await stack.enter_async_context(web_app(WebConfig.load(env), sock, **options))
        result = WebStack(url=url, addresses=dict(addresses), keys_dir=keys_dir, databases=dict(databases))
        await _practice(result, tokens)
        yield result


@pytest.fixture(scope="module")
async def stack(fresh_database, keys_dir, tokens) -> AsyncIterator[WebStack]:
    # Short stream deadlines and keep-alives so that renewal and keep-alive happen within a test.
    async with web_stack(fresh_database, keys_dir, tokens, web_stream_deadline_seconds="2",
                         web_keepalive_seconds="0.5") as result:
        yield result

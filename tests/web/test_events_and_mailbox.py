"""Live updates over Server-Sent Events, the development mailbox, and production mode."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
import uuid

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc

from services.common.clients import open_channel
from services.web.app import create_app
from services.web.config import WebConfig
from tests.runtime.production import production_env
from tests.support import service_env
from tests.web.conftest import LINK


class EventReader:
    """Reads a text/event-stream response event by event, keeping the comment lines it passes."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, within: float) -> dict[str, str] | None:
        """The next event (its fields), {} at the end of the stream, None if nothing came in time."""
        fields: dict[str, str] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    raw = await self.response.content.readline()
                    if raw == b"":
                        return {}
                    line = raw.decode().rstrip("\r\n")
                    if line == "":
                        if "data" in fields or "event" in fields:
                            return fields
                        continue
                    if line.startswith(":"):
                        self.comments.append(line)
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except TimeoutError:
            return None

    async def until(self, kind: str, within: float, conversation_id: str = "") -> dict[str, str] | None:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            event = await self.next(left)
            if not event:
                return event
            if event.get("event") == kind and (not conversation_id or conversation_id in event.get("data", "")):
                return event
        return None


async def _conversation_with_jordan(stack) -> str:
    jordan = stack.people["jordan"]
    async with await stack.signed_in("dana") as http:
        async with http.post(f"/api/clients/{jordan.user_id}/secure-messaging") as resp:
            assert resp.status == 200
        async with http.post("/api/conversations", json={"participant_ids": [jordan.user_id]}) as resp:
            return (await resp.json())["conversation"]["conversation_id"]


async def test_events_need_a_session(stack):
    async with stack.client_session() as http, http.get("/api/events") as resp:
        assert resp.status == 401 and await resp.json() == {"error": "Please sign in."}


async def test_a_reply_reaches_the_clinician_live_and_resumes_after_a_reconnect(stack):
    cid = await _conversation_with_jordan(stack)
    async with await stack.signed_in("dana") as dana, await stack.signed_in("jordan") as jordan:
        async with dana.get("/api/events") as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.headers["Cache-Control"] == "no-store"
            reader = EventReader(stream)
            # The stream subscribes as it opens: keep replying until one arrives (bounded).
            event = None
            deadline = time.monotonic() + 15
            while event is None and time.monotonic() < deadline:
                async with jordan.post(f"/api/conversations/{cid}/messages",
                                       json={"body": "On my way", "idempotency_key": str(uuid.uuid4())}) as resp:
                    assert resp.status == 201
                event = await reader.until("message_created", 2, cid)
            assert event, "no message_created event arrived"
            first_id = int(event["id"])
            assert f'"conversation_id": "{cid}"' in event["data"]
            assert '"kind": "message_created"' in event["data"]

            # Quiet for longer than the stream deadline (2 s here): keep-alives flow, the stream stays open.
            assert await reader.next(2.6) is None
            assert ": keep-alive" in reader.comments
            async with jordan.post(f"/api/conversations/{cid}/messages",
                                   json={"body": "Running late", "idempotency_key": str(uuid.uuid4())}) as resp:
                assert resp.status == 201
            later = await reader.until("message_created", 10, cid)
            assert later and int(later["id"]) > first_id

        # A reconnecting browser sends Last-Event-ID and gets what it missed.
        async with dana.get("/api/events", headers={"Last-Event-ID": str(first_id)}) as stream:
            resumed = await EventReader(stream).until("message_created", 10, cid)
            assert resumed and resumed["id"] == later["id"]


async def test_the_stream_ends_when_the_session_ends(stack):
    async with await stack.signed_in("dana") as dana:
        async with dana.get("/api/events") as stream:
            reader = EventReader(stream)
            async with dana.post("/sign-out", allow_redirects=False) as resp:
                assert resp.status == 303
            ended = await reader.until("session_ended", 10)
            assert ended and ended["event"] == "session_ended"
            assert await reader.next(5) == {}


async def test_the_mailbox_shows_the_email_with_a_clickable_link_and_no_message_text(stack):
    cid = await _conversation_with_jordan(stack)
    jordan = stack.people["jordan"]
    before = len(await stack.wait_for_emails(jordan.email, 0, within=0))
    secret = f"CANARY-{uuid.uuid4()}"
    async with await stack.signed_in("dana") as http:
        async with http.post(f"/api/conversations/{cid}/messages",
                             json={"body": secret, "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 201
    emails = await stack.wait_for_emails(jordan.email, before + 1)
    assert len(emails) >= 1
    item = emails[0]
    assert set(item) == {"item_id", "channel", "to", "subject", "text", "html", "created_at"}
    assert item["to"] == jordan.email and item["channel"] == "email" and item["created_at"]
    assert secret not in item["subject"] + item["text"] + item["html"]
    assert "Dana" not in item["subject"]
    link = LINK.search(item["text"]).group(0)
    async with stack.client_session() as http:
        async with http.get("/dev/mailbox") as resp:
            page = await resp.text()
        assert resp.status == 200 and secret not in page
        assert f'<a href="{link}">{link}</a>' in page
        async with http.get("/dev/mailbox.json", params={"to": "nobody@example.test"}) as resp:
            assert (await resp.json())["items"] == []


async def test_replying_as_the_clients_phone(stack, tokens):
    dana, jordan = stack.people["dana"], stack.people["jordan"]
    channel = open_channel(stack.addresses["consent"])
    try:
        await consent_grpc.ConsentServiceStub(channel).SetClientPhone(
            consent_pb.SetClientPhoneRequest(client_id=jordan.user_id, phone_number="+1 212 555 0101", text_ok=True),
            metadata=tokens.metadata(tokens.user(dana.user_id, stack.practice_id, "owner")),
            timeout=5,
        )
    finally:
        await channel.close()
    async with stack.client_session() as http:
        async with http.post("/dev/mailbox/sms-reply", data={"from_number": "+12125550101", "body": "HELP"},
                             allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/dev/mailbox?sent=1"
        texts: list[dict] = []
        deadline = time.monotonic() + 10
        while not texts and time.monotonic() < deadline:
            async with http.get("/dev/mailbox.json", params={"to": "+12125550101"}) as resp:
                texts = [i for i in (await resp.json())["items"] if i["channel"] == "sms"]
            if not texts:
                await asyncio.sleep(0.1)
        assert texts, "the HELP reply was not sent"
        async with http.get("/dev/mailbox?sent=1") as resp:
            page = await resp.text()
        assert "Reply sent." in page
        assert '<label for="from-' in page and ">From</label>" in page and ">Reply</label>" in page
        assert 'value="+12125550101"' in page and ">Send reply</button>" in page
        async with http.post("/dev/mailbox/sms-reply", data={"from_number": "", "body": ""}) as resp:
            assert resp.status == 400


@contextlib.asynccontextmanager
async def production_edge(keys_dir, directory):
    # Nothing listens on port 9: every backend is down.
    down = {f"{name}_addr": "127.0.0.1:9" for name in ("auth", "messaging", "consent", "notify")}
    config = WebConfig.load(production_env(directory, **down))
    # The edge signs its calls with the test keys (production's own directory has no web key).
    config = dataclasses.replace(config, keys_dir=keys_dir)
    server = TestServer(create_app(config))
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url("")), headers={"Origin": str(server.make_url(""))}) as http:
            yield http
    finally:
        await server.close()


async def test_production_has_no_mailbox_and_reports_unready_backends(keys_dir, tmp_path):
    async with production_edge(keys_dir, tmp_path) as http:
        for path in ("/dev/mailbox", "/dev/mailbox.json"):
            async with http.get(path) as resp:
                assert resp.status == 404
        async with http.post("/dev/mailbox/sms-reply", data={"from_number": "+12125550101", "body": "STOP"}) as resp:
            assert resp.status == 404
        async with http.get("/healthz") as resp:
            assert resp.status == 200
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        async with http.get("/readyz") as resp:
            assert resp.status == 503
            assert "auth" in await resp.text()
        # A backend that is down is a 503 with a readable message, never a stack trace.
        async with http.post("/sign-in", data={"email": "dana@lakeside.test", "password": "quiet-harbor-2026"}) as resp:
            assert resp.status == 503
            assert "temporarily unavailable" in await resp.text()
        # (In production the session cookie is the __Host- one.)
        async with http.get("/api/me", headers={"Cookie": "__Host-confidant_session=x"}) as resp:
            assert resp.status == 503
            assert "temporarily unavailable" in (await resp.json())["error"]


async def test_shutdown_ends_open_event_streams_promptly(stack):
    """A graceful stop must not wait out live-update streams (they would hold it for the whole grace period)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = WebConfig.load(service_env(stack.keys_dir, **{f"{n}_addr": a for n, a in stack.addresses.items()}))
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    dana = stack.people["dana"]
    async with aiohttp.ClientSession(url, headers={"Origin": url}, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post("/sign-in", data={"email": dana.email, "password": dana.password},
                             allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get("/api/events") as stream:
            reader = EventReader(stream)
            assert await reader.next(0.3) is None and ": connected" in reader.comments
            started = time.monotonic()
            stopping = asyncio.create_task(runner.cleanup())
            assert await reader.next(5) == {}
            await stopping
    assert time.monotonic() - started < 3

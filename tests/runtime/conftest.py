"""Real processes for the runtime tests: the five services started by bin/stack.py (optionally
with TLS, health ports and metrics endpoints), their log lines kept per service, and one message
sent the way a clinician sends it (web -> messaging -> notify -> the development mailbox)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

from bin.stack import ALL_SERVICES, Stack
from services.common.clients import open_channel
from services.common.config import GrpcTls
from services.common.pgserver import free_port
from services.common.tokens import ServiceTokenSource, TokenSigner
from tests.support import unique

OWNER_EMAIL = "dana@lakeside.test"
OWNER_PASSWORD = "quiet-harbor-2026"


@dataclass
class Running:
    stack: Stack
    # The test's own gRPC client settings (None: plaintext).
    tls: GrpcTls | None = None
    lines: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def logs(self, service: str) -> list[dict]:
        """The service's JSON log lines so far."""
        found = []
        for line in list(self.lines[service]):
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found


async def start(pg, keys_dir, tls: GrpcTls | None = None, health_ports: bool = False,
                **extra_env: str) -> Running:
    running = Running(stack=None, tls=tls)  # type: ignore[arg-type]

    def sink(service: str, line: str) -> None:
        running.lines[service].append(line)

    running.stack = Stack.ephemeral(pg, keys_dir, sink=sink, database_prefix=unique("runtime"),
                                    health_ports=health_ports, extra_env=extra_env)
    await asyncio.to_thread(running.stack.start)
    return running


@dataclass
class Sent:
    client_email: str
    conversation_id: str
    request_id: str  # the X-Request-Id of the send
    email: dict  # the client's email in the development mailbox


async def send_one_message(running: Running, client_name: str, client_email: str, body: str) -> Sent:
    """A practice is created (over gRPC, as bin/seed.py does); its owner signs in at the web edge,
    adds a client, enables them, opens a conversation and sends ``body``; the client's email arrives."""
    stack = running.stack
    web_token = ServiceTokenSource(TokenSigner.from_keys_dir(stack.keys_dir, "web")).token
    channel = open_channel(stack.address("auth"), web_token, deadline=30, tls=running.tls)
    try:
        await auth_grpc.AuthServiceStub(channel).CreatePractice(auth_pb.CreatePracticeRequest(
            name="Lakeside Counseling", owner_email=OWNER_EMAIL, owner_display_name="Dana Rivera",
            owner_password=OWNER_PASSWORD))
    finally:
        await channel.close()
    base = stack.web_url
    async with aiohttp.ClientSession(base, headers={"Origin": base},
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post("/sign-in", data={"email": OWNER_EMAIL, "password": OWNER_PASSWORD},
                             allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
        async with http.post("/api/clients", json={"display_name": client_name, "email": client_email}) as resp:
            assert resp.status == 201, await resp.text()
            client_id = (await resp.json())["client"]["user_id"]
        async with http.post(f"/api/clients/{client_id}/secure-messaging") as resp:
            assert resp.status == 200, await resp.text()
        async with http.post("/api/conversations", json={"participant_ids": [client_id]}) as resp:
            assert resp.status in (200, 201), await resp.text()
            conversation_id = (await resp.json())["conversation"]["conversation_id"]
        async with http.post(f"/api/conversations/{conversation_id}/messages",
                             json={"body": body, "idempotency_key": unique("send")}) as resp:
            assert resp.status in (200, 201), await resp.text()
            request_id = resp.headers["X-Request-Id"]
        deadline = time.monotonic() + 30
        while True:
            async with http.get("/dev/mailbox.json", params={"to": client_email}) as resp:
                assert resp.status == 200, await resp.text()
                # The message's alert (a quick sign-in link), not the portal invitation enabling sent.
                emails = [i for i in (await resp.json())["items"] if i["channel"] == "email" and "/m/" in i["text"]]
            if emails:
                break
            assert time.monotonic() < deadline, "the client's message email did not arrive"
            await asyncio.sleep(0.1)
    return Sent(client_email, conversation_id, request_id, emails[0])


# PHI canaries: a client's name and email and a message body, sent through the observed stack.
CANARY_NAME = "Quillon Canarybird"
CANARY_EMAIL = "quillon.canary7@client.test"
CANARY_BODY = "Canary body 91: about the panic attacks"
CANARIES = (CANARY_NAME, CANARY_EMAIL, CANARY_BODY, "Quillon", "Canarybird", "canary7", "panic attacks")


@dataclass
class Observed:
    running: Running
    metrics_ports: dict[str, int]
    sent: Sent


@pytest.fixture(scope="package")
async def observed(pg, keys_dir) -> Observed:
    """The five processes with metrics endpoints, after one message carrying the canaries."""
    ports = {service: free_port() for service in ALL_SERVICES}
    running = await start(pg, keys_dir, **{f"CONFIDANT_{s.upper()}_METRICS_LISTEN": f"127.0.0.1:{p}"
                                           for s, p in ports.items()})
    try:
        sent = await send_one_message(running, CANARY_NAME, CANARY_EMAIL, CANARY_BODY)
        yield Observed(running, ports, sent)
    finally:
        await asyncio.to_thread(running.stack.stop)

"""Request ids across gRPC hops, the request metrics and the pool gauges, in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import grpc
import pytest
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.clients import open_channel
from services.common.db import open_pool
from services.common.errors import NotFound
from services.common.logs import JsonFormatter
from services.common.metrics import Metrics
from services.common.pgserver import free_port
from services.common.server import GrpcService
from services.common.tokens import TokenVerifier
from tests.support import running

SERVICE = "confidant.notify.v1.NotifyService"
LIST = f"/{SERVICE}/ListMailbox"
REPLY = f"/{SERVICE}/SendSmsReply"


class Relay(pb_grpc.NotifyServiceServicer):
    """ListMailbox asks the next service (when there is one); SendSmsReply fails."""

    def __init__(self, next_address: str | None = None) -> None:
        self.next_address = next_address

    async def ListMailbox(self, request, context):
        if self.next_address:
            ch = open_channel(self.next_address)
            try:
                return await pb_grpc.NotifyServiceStub(ch).ListMailbox(request)
            finally:
                await ch.close()
        return pb.ListMailboxResponse()

    async def SendSmsReply(self, request, context):
        raise NotFound("No such number.")


def service(name: str, servicer: Relay, **settings) -> GrpcService:
    return GrpcService(name=name, verifier=TokenVerifier({}), open_methods=[LIST, REPLY],
                       servicers=[(pb_grpc.add_NotifyServiceServicer_to_server, servicer, SERVICE)], **settings)


class Lines(logging.Handler):
    """Formats records as the services do (JSON), at the moment they are logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines():
    handler = Lines()
    logger = logging.getLogger("confidant.grpc")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


async def test_a_request_id_follows_the_call_across_services_and_a_bad_one_is_replaced(log_lines):
    async with running(service("second", Relay())) as second, running(service("first", Relay(second))) as first:
        ch = open_channel(first)
        try:
            stub = pb_grpc.NotifyServiceStub(ch)
            await stub.ListMailbox(pb.ListMailboxRequest(), metadata=(("x-request-id", "req-42"),))
            await stub.ListMailbox(pb.ListMailboxRequest(), metadata=(("x-request-id", "no spaces; or <tags>"),))
        finally:
            await ch.close()
    rpcs = [line for line in log_lines if line["msg"] == "rpc"]
    assert len(rpcs) == 4
    first_call, second_call = rpcs[:2], rpcs[2:]
    # The inner call ends (and logs) first; both carry the caller's id.
    assert [line["request_id"] for line in first_call] == ["req-42", "req-42"]
    replaced = {line["request_id"] for line in second_call}
    assert len(replaced) == 1 and "no spaces" not in replaced.pop()
    # Outside a call, no request id.
    logging.getLogger("confidant.grpc").info("idle")
    assert "request_id" not in log_lines[-1]


async def test_request_metrics_count_calls_by_method_and_code(pg, fresh_database):
    pool = await open_pool(await fresh_database("notify"), max_size=3)
    grpc_service = service("observed", Relay(), pool=pool)
    try:
        async with running(grpc_service) as address:
            ch = open_channel(address)
            try:
                stub = pb_grpc.NotifyServiceStub(ch)
                for _ in range(3):
                    await stub.ListMailbox(pb.ListMailboxRequest())
                with pytest.raises(grpc.aio.AioRpcError, match="No such number"):
                    await stub.SendSmsReply(pb.SendSmsReplyRequest())
            finally:
                await ch.close()
    finally:
        await pool.close()
    text = grpc_service.metrics.exposition().decode()
    assert f'confidant_observed_grpc_requests_total{{code="OK",method="{LIST}"}} 3.0' in text
    assert f'confidant_observed_grpc_requests_total{{code="NOT_FOUND",method="{REPLY}"}} 1.0' in text
    assert f'confidant_observed_grpc_errors_total{{method="{REPLY}"}} 1.0' in text
    assert f'confidant_observed_grpc_errors_total{{method="{LIST}"}}' not in text
    assert f'confidant_observed_grpc_request_seconds_count{{method="{LIST}"}} 3.0' in text
    assert "confidant_observed_db_pool_max 3.0" in text
    for gauge in ("db_pool_size", "db_pool_available", "db_pool_waiting"):
        assert f"confidant_observed_{gauge} " in text


async def _scrape(port: int, deadline_seconds: float = 5.0) -> str | None:
    """GET /metrics, retried until the deadline (the endpoint starts in the background)."""
    deadline = time.monotonic() + deadline_seconds
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    return await resp.text()
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(0.05)


async def test_metrics_are_served_unless_the_service_serves_its_own():
    port = free_port()
    own = service("alone", Relay(), metrics_listen=f"127.0.0.1:{port}")
    async with running(own):
        text = await _scrape(port)
        assert text is not None and "confidant_alone_grpc_requests_total" in text.replace("# TYPE ", "")

    # A service with metrics of its own gets the request series in them, and serves them itself.
    metrics = Metrics("keeper")
    kept = service("keeper", Relay(), metrics=metrics, metrics_listen=f"127.0.0.1:{port}")
    async with running(kept) as address:
        ch = open_channel(address)
        await pb_grpc.NotifyServiceStub(ch).ListMailbox(pb.ListMailboxRequest())
        await ch.close()
        assert await _scrape(port, deadline_seconds=0.5) is None
    assert kept.metrics is metrics
    assert f'confidant_keeper_grpc_requests_total{{code="OK",method="{LIST}"}} 1.0' in metrics.exposition().decode()


async def test_our_own_polls_are_logged_at_debug_when_they_succeed(log_lines, monkeypatch):
    """Every service polls auth every 2 s; those lines would drown the access log at info."""
    import services.common.server as server

    monkeypatch.setattr(server, "_POLLING_METHODS", frozenset({LIST, REPLY}))
    logging.getLogger("confidant.grpc").setLevel(logging.DEBUG)
    async with running(service("polled", Relay())) as address:
        ch = open_channel(address)
        try:
            stub = pb_grpc.NotifyServiceStub(ch)
            await stub.ListMailbox(pb.ListMailboxRequest())
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.SendSmsReply(pb.SendSmsReplyRequest(to_number="+12125550101", body="x"))
        finally:
            await ch.close()
    levels = {line["method"]: line["level"] for line in log_lines if line["msg"] == "rpc"}
    # A successful poll is quiet; a failing one still shows at info.
    assert levels == {LIST: "debug", REPLY: "info"}

"""SIGTERM during an in-flight call, on a real process: health flips to NOT_SERVING at once,
the call completes, new calls are refused, and the process exits 0 before its grace period ends."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.pgserver import free_port
from tests.runtime.slow_service import SLEEP

REPO = Path(__file__).resolve().parents[2]
GRACE_SECONDS = 10.0
CALL_SECONDS = 3.0


async def health(address: str) -> int | None:
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            return (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)).status
    except grpc.aio.AioRpcError:
        return None


async def until(condition, what: str, seconds: float = 15.0) -> float:
    """Poll ``condition`` (async) until true; return when it became true (monotonic)."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def call(ch: grpc.aio.Channel, seconds: float) -> bytes:
    return await ch.unary_unary(SLEEP)(str(seconds).encode(), timeout=30)


async def test_sigterm_lets_the_in_flight_call_finish_and_exits_in_time():
    listen, health_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.runtime.slow_service", listen, health_listen, str(GRACE_SECONDS),
        cwd=REPO, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def read() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            lines.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        await until(lambda: _is(health(health_listen), serving), "the service to serve")
        assert await health(listen) == serving  # the gRPC port answers health too
        async with grpc.aio.insecure_channel(listen) as ch:
            in_flight = asyncio.create_task(call(ch, CALL_SECONDS))
            await until(lambda: _true(any('"sleeping"' in line for line in lines)), "the call to start")

            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            flipped = await until(lambda: _is(health(health_listen), health_pb2.HealthCheckResponse.NOT_SERVING),
                                  "health to say NOT_SERVING")
            assert flipped - signalled < 1.0 and not in_flight.done()

            # New calls are refused while the old one is still running.
            async with grpc.aio.insecure_channel(listen) as fresh:
                try:
                    await call(fresh, 0)
                    refused = None
                except grpc.aio.AioRpcError as exc:
                    refused = exc.code()
            assert refused == grpc.StatusCode.UNAVAILABLE and not in_flight.done()

            assert await in_flight == b"done"
        code = await asyncio.wait_for(proc.wait(), GRACE_SECONDS + 5)
        elapsed = time.monotonic() - signalled
        assert code == 0
        assert CALL_SECONDS - 1 < elapsed < GRACE_SECONDS, elapsed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.wait_for(reader, 5)
    assert any('"shutting down"' in line for line in lines) and any('"stopped"' in line for line in lines)


async def _is(status, expected) -> bool:
    return (await status) == expected


async def _true(value: bool) -> bool:
    return value

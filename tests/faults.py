"""A fault-injecting HTTP proxy for tests: put it between the code under test and a provider (moto).

It forwards every request to ``upstream`` unchanged, unless told to misbehave:

- ``fail_next(n, status, code)`` answers the next ``n`` requests with an AWS-style error
  (``400 Throttling``, ``503 ServiceUnavailable``, ``400 MessageRejected``, ...) instead of
  forwarding them; ``fail_all(status, code)`` does so until ``clear()`` (an outage);
- ``hold()`` keeps requests (not forwarded) until ``release()``: the caller has requests in
  flight that the provider never saw. A held request whose caller is gone by then (a
  process killed with SIGKILL) is dropped, never forwarded, as a real network would.

Errors come in the format the request's protocol expects: JSON (``x-amzn-ErrorType``) for
REST/JSON APIs such as SES v2, XML for query APIs such as SNS. Counters say what happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

# Not forwarded: hop-by-hop headers, and lengths/encodings aiohttp sets itself.
_SKIP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-encoding",
                           "keep-alive"})


@dataclass
class Fault:
    status: int
    code: str
    message: str = "Injected by the test's fault proxy."


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = ""
        self.received = 0  # every request that arrived
        self.forwarded = 0  # passed to the upstream and answered
        self.failed = 0  # answered with an injected error
        self.dropped = 0  # held, then dropped because the caller had gone
        self.held = 0  # held right now
        self.in_flight = 0  # forwarded, upstream's answer not back yet
        self._fault: Fault | None = None
        self._fail_remaining = 0  # -1: until clear()
        self._released = asyncio.Event()
        self._released.set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A handler whose client disconnects is cancelled (a held request of a killed caller).
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._released.set()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what the test says -------------------------------------------------------------

    def fail_next(self, n: int, status: int = 400, code: str = "Throttling") -> None:
        self._fault, self._fail_remaining = Fault(status, code), n

    def fail_all(self, status: int = 503, code: str = "ServiceUnavailable") -> None:
        self._fault, self._fail_remaining = Fault(status, code), -1

    def clear(self) -> None:
        self._fault, self._fail_remaining = None, 0

    def reset(self) -> None:
        """No faults, nothing held, counters at zero (between tests)."""
        self.clear()
        self.release()
        self.received = self.forwarded = self.failed = self.dropped = 0

    @property
    def failing(self) -> int:
        """How many more requests will be failed (-1: all, until clear())."""
        return self._fail_remaining

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def wait_for(self, condition, within: float = 10.0, what: str = "the proxy") -> None:
        """Poll ``condition()`` (about this proxy's counters) until it holds, with a deadline."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached in {within}s (received {self.received}, forwarded "
                                     f"{self.forwarded}, failed {self.failed}, held {self.held})")
            await asyncio.sleep(0.02)

    # -- the proxy ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received += 1
        if self._fail_remaining != 0 and self._fault is not None:
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
            self.failed += 1
            return _error(request, self._fault)
        if not self._released.is_set():
            self.held += 1
            try:
                await self._released.wait()
            except asyncio.CancelledError:
                self.dropped += 1  # the caller went away while held
                raise
            finally:
                self.held -= 1
            if request.transport is None or request.transport.is_closing():
                self.dropped += 1
                return web.Response(status=499)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS}
        self.in_flight += 1
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                answer = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP_HEADERS}
        finally:
            self.in_flight -= 1
        self.forwarded += 1
        return web.Response(status=upstream.status, body=payload, headers=answer)


def _error(request: web.Request, fault: Fault) -> web.Response:
    if request.content_type == "application/x-www-form-urlencoded":
        kind = "Receiver" if fault.status >= 500 else "Sender"
        xml = (
            '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error>'
            f"<Type>{kind}</Type><Code>{fault.code}</Code><Message>{fault.message}</Message>"
            "</Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
        )
        return web.Response(status=fault.status, text=xml, content_type="text/xml")
    return web.Response(
        status=fault.status, text=json.dumps({"__type": fault.code, "message": fault.message}),
        content_type="application/json", headers={"x-amzn-ErrorType": fault.code},
    )

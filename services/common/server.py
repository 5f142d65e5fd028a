"""gRPC server bootstrap shared by every service.

``GrpcService`` builds an asyncio gRPC server with health checking, reflection
and the interceptor that every call passes through: it refuses calls without a
deadline, verifies the caller's access token, maps domain errors to status codes
and writes one access-log line (method, code, duration, caller id; no PHI).
SIGTERM flips health to NOT_SERVING, lets in-flight calls finish within the
grace period and then stops background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import DomainError, Unauthenticated
from services.common.identity import reset_caller, set_caller
from services.common.tokens import TokenVerifier

log = logging.getLogger("confidant.grpc")

# Calls that anyone may make without a token or deadline (probes, tooling).
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, verifier: TokenVerifier, open_methods: Iterable[str] = ()) -> None:
        self._verifier = verifier
        # Full method names ("/pkg.Service/Method") callable without a token (still with a
        # deadline): how a system that has no token yet gets one. Kept to a minimal list.
        self._open_methods = frozenset(open_methods)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)

        async def prologue(context: grpc.aio.ServicerContext):
            if context.time_remaining() is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Every call must carry a deadline.")
            if token is None:
                if method in self._open_methods:
                    return None
                raise Unauthenticated("This call needs an access token.")
            return await self._verifier.authenticate(token)

        @contextlib.asynccontextmanager
        async def guarded(context: grpc.aio.ServicerContext):
            """Around one call: deadline and token checks, the caller, error mapping, the access log."""
            started, code, who = time.perf_counter(), grpc.StatusCode.OK, None
            try:
                try:
                    who = await prologue(context)
                except DomainError as exc:
                    await context.abort(exc.code, exc.message)
                reset = set_caller(who)
                try:
                    yield
                finally:
                    reset_caller(reset)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except DomainError as exc:
                code = exc.code
                await context.abort(exc.code, exc.message)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"fields": {"method": method}})
                await context.abort(grpc.StatusCode.INTERNAL, "Internal error.")
            finally:
                log.info(
                    "rpc",
                    extra={
                        "fields": {
                            "method": method,
                            "code": code.name,
                            "ms": round((time.perf_counter() - started) * 1000, 2),
                            "caller": who.subject if who else None,
                        }
                    },
                )

        if handler.unary_unary:
            behaviour = handler.unary_unary

            async def unary_unary(request, context):
                async with guarded(context):
                    return await behaviour(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        if handler.unary_stream:
            stream_behaviour = handler.unary_stream

            async def unary_stream(request, context):
                async with guarded(context):
                    async for item in stream_behaviour(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


@dataclass
class GrpcService:
    """A service's gRPC server with health, reflection and background tasks."""

    name: str
    verifier: TokenVerifier
    # (add_XServicer_to_server, servicer, full service name) for each service.
    servicers: list[tuple[Callable, object, str]]
    # Long-running coroutines started with the server and cancelled on stop.
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called once health says NOT_SERVING, before in-flight calls are awaited:
    # end long-lived streams here so they do not hold shutdown for the grace period.
    stopping: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called after the server stopped (close pools, ...).
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    grace_seconds: float = 10.0
    # Methods callable without an access token (see CallInterceptor); keep this list minimal.
    open_methods: list[str] = field(default_factory=list)

    server: grpc.aio.Server | None = None
    port: int = 0
    _health: health.aio.HealthServicer | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def start(self, listen: str) -> int:
        self.server = grpc.aio.server(interceptors=[CallInterceptor(self.verifier, self.open_methods)])
        names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
        for add, servicer, full_name in self.servicers:
            add(servicer, self.server)
            names.append(full_name)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        reflection.enable_server_reflection(names, self.server)
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"Cannot listen on {listen}: the address is in use or not available.")
        await self.server.start()
        for full_name in [""] + [n for _, _, n in self.servicers]:
            await self._health.set(full_name, health_pb2.HealthCheckResponse.SERVING)
        background = list(self.background)
        if self.verifier.revocations is not None:
            # Every service follows auth's revocations, so a deactivated person's token stops at once.
            background.append(self.verifier.revocations.run)
        for factory in background:
            self._tasks.append(asyncio.create_task(self._supervise(factory)))
        log.info("serving", extra={"fields": {"port": self.port}})
        return self.port

    async def _supervise(self, factory: Callable[[], Awaitable[None]]) -> None:
        """Keep a background loop alive: log and restart it if it fails."""
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task failed; restarting", extra={"fields": {"task": factory.__name__}})
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        for hook in self.stopping:
            await hook()
        await self.server.stop(self.grace_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in self.cleanup:
            await close()
        self.server = None
        log.info("stopped")

    async def run_until_signal(self, listen: str) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start(listen)
        await stop.wait()
        log.info("shutting down", extra={"fields": {"grace_seconds": self.grace_seconds}})
        await self.stop()

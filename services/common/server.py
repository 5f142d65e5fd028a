"""gRPC server bootstrap shared by every service.

``GrpcService`` builds an asyncio gRPC server with health checking, reflection
and the interceptor that every call passes through: it refuses calls without a
deadline, verifies the caller's access token, maps domain errors to status codes,
sets the request id for the call's log lines, counts the call in the service's
metrics and writes one access-log line (method, code, duration, caller id; no PHI).
SIGTERM flips health to NOT_SERVING, lets in-flight calls finish within the
grace period and then stops background tasks.

Operators' settings (``run_service`` applies them from CommonConfig): ``tls``
(TLS, optionally mutual, on the gRPC port), ``health_listen`` (a plaintext port
that answers only grpc.health.v1, for the kubelet's probes) and ``metrics_listen``.

Metrics: every GrpcService has a ``Metrics`` (services/common/metrics.py) with its
request series (calls by method and code, latency and errors by method) and, given
its ``pool``, the database pool gauges. A service that keeps metrics of its own
passes its ``Metrics`` as ``metrics=``: the request series are added to it and the
service serves it itself (one endpoint per process); otherwise GrpcService serves
its own on ``metrics_listen``.
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
from psycopg_pool import AsyncConnectionPool

from services.common.config import GrpcTls
from services.common.errors import DomainError, Unauthenticated
from services.common.identity import reset_caller, set_caller
from services.common.logs import (
    REQUEST_ID_METADATA,
    new_request_id,
    reset_request_id,
    set_request_id,
    valid_request_id,
)
from services.common.metrics import Metrics
from services.common.tokens import TokenVerifier

log = logging.getLogger("confidant.grpc")

# Calls our services make on a timer (revocations every 2 s, published keys): see the access log.
_POLLING_METHODS = frozenset({
    "/confidant.auth.v1.AuthService/ListRevocations",
    "/confidant.auth.v1.AuthService/ListSigningKeys",
})
# Calls that anyone may make without a token or deadline (probes, tooling).
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


def _request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's ``x-request-id`` when it is a valid one, else a new id."""
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str) and valid_request_id(value):
            return value
    return new_request_id()


class RequestMetrics:
    """The series every gRPC service exports. Labels are method names (a fixed set) and status
    codes; never values from a request."""

    def __init__(self, metrics: Metrics) -> None:
        self.calls = metrics.counter("grpc_requests", "gRPC calls served, by method and status code.",
                                     ["method", "code"])
        self.seconds = metrics.histogram("grpc_request_seconds", "How long gRPC calls took, by method.", ["method"])
        self.errors = metrics.counter("grpc_errors", "gRPC calls that did not end OK, by method.", ["method"])

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.calls.labels(method=method, code=code.name).inc()
        self.seconds.labels(method=method).observe(seconds)
        if code != grpc.StatusCode.OK:
            self.errors.labels(method=method).inc()


def pool_gauges(metrics: Metrics, pool: AsyncConnectionPool) -> None:
    """The database pool's usage, measured at each scrape (psycopg_pool's get_stats)."""
    for name, stat, documentation in (
        ("db_pool_size", "pool_size", "Connections the database pool holds (in use or idle)."),
        ("db_pool_available", "pool_available", "Idle connections in the database pool."),
        ("db_pool_waiting", "requests_waiting", "Requests waiting for a database connection."),
        ("db_pool_max", "pool_max", "The most connections the database pool may open."),
    ):
        metrics.gauge(name, documentation).set_function(lambda stat=stat: pool.get_stats().get(stat, 0))


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, verifier: TokenVerifier, open_methods: Iterable[str] = (), metrics: RequestMetrics | None = None
    ) -> None:
        self._verifier = verifier
        # Full method names ("/pkg.Service/Method") callable without a token (still with a
        # deadline): how a system that has no token yet gets one. Kept to a minimal list.
        self._open_methods = frozenset(open_methods)
        self._metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        request_id = _request_id(handler_call_details.invocation_metadata)

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
            """Around one call: the request id, deadline and token checks, the caller, error mapping,
            metrics and the access log."""
            started, code, who = time.perf_counter(), grpc.StatusCode.OK, None
            request_id_reset = set_request_id(request_id)
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
                seconds = time.perf_counter() - started
                if self._metrics is not None:
                    self._metrics.observe(method, code, seconds)
                # Our services' own polls (every few seconds, from every service) would drown the
                # access log: when they succeed they are logged at debug level only.
                quiet = code == grpc.StatusCode.OK and method in _POLLING_METHODS
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "rpc",
                    extra={
                        "fields": {
                            "method": method,
                            "code": code.name,
                            "ms": round(seconds * 1000, 2),
                            "caller": who.subject if who else None,
                        }
                    },
                )
                reset_request_id(request_id_reset)

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

            # A coroutine that writes each response itself, not a generator handed to grpc: grpc
            # abandons a generator suspended at a yield when the call ends mid-write (the client
            # left), and it is then closed later in another task, where the caller and request id
            # set for this call cannot be reset. Here the servicer's generator is driven and closed
            # in the call's own task, so guarded() always unwinds where it began.
            async def unary_stream(request, context):
                async with guarded(context), contextlib.aclosing(stream_behaviour(request, context)) as items:
                    async for item in items:
                        await context.write(item)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def server_credentials(tls: GrpcTls) -> grpc.ServerCredentials:
    """Our certificate; with client_auth, only clients whose certificate the CA signed get in."""
    cert, key, ca = tls.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca if tls.client_auth else None, require_client_auth=tls.client_auth
    )


@dataclass
class GrpcService:
    """A service's gRPC server with health, reflection, metrics and background tasks."""

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
    # The service's own metrics, when it keeps some (it then serves them itself; see the module
    # docstring); None: GrpcService makes one and serves it on metrics_listen.
    metrics: Metrics | None = None
    # The service's database pool, whose usage becomes gauges.
    pool: AsyncConnectionPool | None = None
    # Operators' settings, set by run_service before start (in-process tests may set them too).
    tls: GrpcTls | None = None
    health_listen: str | None = None
    metrics_listen: str | None = None

    server: grpc.aio.Server | None = None
    port: int = 0
    health_port: int = 0
    _health: health.aio.HealthServicer | None = None
    _health_server: grpc.aio.Server | None = None
    request_metrics: RequestMetrics = field(init=False)
    _serves_metrics: bool = field(init=False, default=False)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._serves_metrics = self.metrics is None
        if self.metrics is None:
            self.metrics = Metrics(self.name)
        self.request_metrics = RequestMetrics(self.metrics)
        if self.pool is not None:
            pool_gauges(self.metrics, self.pool)

    async def start(self, listen: str) -> int:
        self.server = grpc.aio.server(
            interceptors=[CallInterceptor(self.verifier, self.open_methods, self.request_metrics)]
        )
        names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
        for add, servicer, full_name in self.servicers:
            add(servicer, self.server)
            names.append(full_name)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        reflection.enable_server_reflection(names, self.server)
        if self.tls is not None:
            self.port = self.server.add_secure_port(listen, server_credentials(self.tls))
        else:
            self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"Cannot listen on {listen}: the address is in use or not available.")
        await self.server.start()
        for full_name in [""] + [n for _, _, n in self.servicers]:
            await self._health.set(full_name, health_pb2.HealthCheckResponse.SERVING)
        if self.health_listen:
            await self._start_health_port(self.health_listen)
        background = list(self.background)
        if self.verifier.revocations is not None:
            # Every service follows auth's revocations, so a deactivated person's token stops at once.
            background.append(self.verifier.revocations.run)
        if self._serves_metrics and self.metrics_listen:
            background.append(self._serve_metrics)
        for factory in background:
            self._tasks.append(asyncio.create_task(self._supervise(factory)))
        log.info("serving", extra={"fields": {"port": self.port, "tls": self.tls is not None,
                                              "health_port": self.health_port or None}})
        return self.port

    async def _start_health_port(self, listen: str) -> None:
        """A plaintext server with only the health service (the same servicer): the kubelet's gRPC
        probes cannot speak TLS, and health says nothing a caller could misuse."""
        self._health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
        self.health_port = self._health_server.add_insecure_port(listen)
        if self.health_port == 0:
            raise OSError(f"Cannot listen on {listen} (the health port): the address is in use or not available.")
        await self._health_server.start()

    async def _serve_metrics(self) -> None:
        assert self.metrics is not None and self.metrics_listen is not None
        await self.metrics.serve(self.metrics_listen)

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
        if self._health_server is not None:
            # Last: probes keep seeing NOT_SERVING until the main port is gone.
            await self._health_server.stop(None)
            self._health_server = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
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

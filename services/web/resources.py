"""What the web edge holds while it runs: its configuration, the gRPC stubs and its metrics.

They live on the application under typed keys (aiohttp's "No Singletons
Please"); the channels are opened and closed by ``grpc_backends``, a cleanup
context, so a test can build as many independent apps as it likes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc
from grpc_health.v1 import health_pb2_grpc

from services.common.clients import open_channel
from services.common.metrics import Metrics
from services.common.tokens import ServiceTokenSource, TokenSigner
from services.web.config import WebConfig

log = logging.getLogger("confidant.web")
# Label values for the request method: anything else a client sends is "other" (bounded series).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Backends:
    """Stubs of the four services; calls carry web's service token unless they pass a person's."""

    auth: auth_grpc.AuthServiceStub
    messaging: messaging_grpc.MessagingServiceStub
    consent: consent_grpc.ConsentServiceStub
    notify: notify_grpc.NotifyServiceStub
    health: dict[str, health_pb2_grpc.HealthStub]
    # Each service's audit trail (confidant.audit.v1.AuditService), by service name.
    audit: dict[str, audit_grpc.AuditServiceStub] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()), return_exceptions=True)


@dataclass(frozen=True)
class PracticeProfile:
    """What every page shows of the signed-in person's practice (auth's Practice)."""

    practice_id: str
    name: str
    time_zone: str
    contact_phone: str = ""
    contact_email: str = ""

    @property
    def initials(self) -> str:
        """The practice's mark: the first letters of its first two words ("LC")."""
        words = [w for w in self.name.split() if w[:1].isalnum()]
        return "".join(w[0] for w in words[:2]).upper() or "•"


class PracticeProfiles:
    """auth's practice profiles, kept briefly: every page shows the practice's name and gives
    times in its zone, and one GetPractice per page would be one call too many. The owner's
    Settings page reads auth directly and calls ``forget`` after a change."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, PracticeProfile]] = {}

    async def get(self, auth: auth_grpc.AuthServiceStub, practice_id: str, metadata) -> PracticeProfile:
        """The profile of ``practice_id``, asked of auth with the person's own token (auth decides
        who may read it) unless a fresh copy is at hand."""
        cached = self._cache.get(practice_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        reply = await auth.GetPractice(auth_pb.GetPracticeRequest(practice_id=practice_id), metadata=metadata)
        p = reply.practice
        profile = PracticeProfile(p.practice_id, p.name, p.time_zone, p.contact_phone, p.contact_email)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[practice_id] = (time.monotonic() + self._ttl, profile)
        return profile

    def forget(self, practice_id: str) -> None:
        self._cache.pop(practice_id, None)


@dataclass
class LiveStreams:
    """Open Server-Sent Events responses, ended when the server shuts down."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


class WebMetrics:
    """HTTP requests by route pattern (``/m/{token}``, never the raw path), method and status."""

    def __init__(self) -> None:
        self.metrics = Metrics("web")
        self.requests = self.metrics.counter(
            "http_requests", "HTTP requests by method, route pattern and status.", ["method", "route", "status"])
        self.seconds = self.metrics.histogram(
            "http_request_seconds", "How long HTTP requests took, by method and route pattern.", ["method", "route"])

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.seconds.labels(method=method, route=route).observe(seconds)


CONFIG = web.AppKey("config", WebConfig)
BACKENDS = web.AppKey("backends", Backends)
LIVE = web.AppKey("live", LiveStreams)
PRACTICES = web.AppKey("practices", PracticeProfiles)
METRICS = web.AppKey("metrics", WebMetrics)


def open_backends(config: WebConfig) -> Backends:
    tokens = ServiceTokenSource(TokenSigner.from_keys_dir(config.keys_dir, "web"))
    channels = {
        name: open_channel(target, token=tokens.token, deadline=config.rpc_deadline_seconds, tls=config.grpc_tls)
        for name, target in config.targets.items()
    }
    return Backends(
        auth=auth_grpc.AuthServiceStub(channels["auth"]),
        messaging=messaging_grpc.MessagingServiceStub(channels["messaging"]),
        consent=consent_grpc.ConsentServiceStub(channels["consent"]),
        notify=notify_grpc.NotifyServiceStub(channels["notify"]),
        health={name: health_pb2_grpc.HealthStub(ch) for name, ch in channels.items()},
        audit={name: audit_grpc.AuditServiceStub(ch) for name, ch in channels.items()},
        channels=channels,
    )


async def grpc_backends(app: web.Application) -> AsyncIterator[None]:
    backends = open_backends(app[CONFIG])
    app[BACKENDS] = backends
    yield
    await backends.close()


async def metrics_endpoint(app: web.Application) -> AsyncIterator[None]:
    """Serve GET /metrics on CONFIDANT_WEB_METRICS_LISTEN (its own port, never the public one)."""
    listen = app[CONFIG].metrics_listen
    if listen is None:
        yield
        return
    task = asyncio.create_task(app[METRICS].metrics.serve(listen))

    def failed(done: asyncio.Task) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("metrics endpoint failed", extra={"fields": {"listen": listen, "reason": str(done.exception())}})

    task.add_done_callback(failed)
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

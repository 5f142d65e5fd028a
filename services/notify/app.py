"""Builds the notify service: database, channels to auth, consent and messaging, transports, worker, metrics, gRPC server."""

from __future__ import annotations

from pathlib import Path

from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.audit_service import audit_servicer
from services.common.clients import open_channel
from services.common.clock import Clock, SystemClock
from services.common.db import prepare_database
from services.common.server import GrpcService
from services.common.tokens import ServiceTokenSource, TokenSigner, TokenVerifier, auth_key_fetcher
from services.notify import render
from services.notify.config import NotifyConfig
from services.notify.handlers import NotifyHandlers
from services.notify.metrics import NotifyMetrics
from services.notify.servicer import NotifyServicer
from services.notify.storage import NotifyStorage
from services.notify.transports import Transports, build_transports
from services.notify.worker import Deliverer, Worker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def create_service(
    config: NotifyConfig, clock: Clock | None = None, transports: Transports | None = None
) -> GrpcService:
    """``clock`` decides every time rule (bursts, due times, the staff email interval, backoff);
    tests pass a ManualClock, whose ``advance`` also runs the worker over the jobs then due.
    ``transports`` replaces the configured ones (tests that need a provider to misbehave)."""
    clock = clock or SystemClock()
    common = config.common
    verifier = TokenVerifier.from_keys_dir(common.keys_dir)
    tokens = ServiceTokenSource(TokenSigner.from_keys_dir(common.keys_dir, "notify"))
    pool = await prepare_database(common.database_url, MIGRATIONS)
    storage = NotifyStorage(pool, clock)
    auth_channel = open_channel(config.auth_target, token=tokens.token)
    # People's tokens: verified against auth's published signing keys (fetched, cached).
    verifier.use_published_keys(auth_key_fetcher(auth_channel))
    consent_channel = open_channel(config.consent_target, token=tokens.token)
    messaging_channel = open_channel(config.messaging_target, token=tokens.token)
    auth = auth_grpc.AuthServiceStub(auth_channel)
    metrics = NotifyMetrics()
    deliverer = Deliverer(
        config, auth, consent_grpc.ConsentServiceStub(consent_channel),
        transports or build_transports(config, storage), storage, clock, metrics,
        # Every email and text, from templates/ through one Jinja2 environment built here.
        render.Renderer(render.environment()),
    )
    worker = Worker(config, storage, deliverer, messaging_grpc.MessagingServiceStub(messaging_channel), metrics)
    unsubscribe = clock.on_advance(worker.drain)

    async def deliver_notifications() -> None:
        await worker.run()

    background = [deliver_notifications]
    if config.metrics_listen:
        listen = config.metrics_listen

        async def serve_metrics() -> None:
            await metrics.metrics.serve(listen)

        async def measure_queue() -> None:
            await metrics.measure_queue_every(storage, config.metrics_refresh_seconds)

        background += [serve_metrics, measure_queue]

    async def close() -> None:
        unsubscribe()
        await auth_channel.close()
        await consent_channel.close()
        await messaging_channel.close()
        await pool.close()

    return GrpcService(
        name="notify",
        verifier=verifier,
        servicers=[(pb_grpc.add_NotifyServiceServicer_to_server,
                    NotifyServicer(NotifyHandlers(config, storage, clock, auth)),
                    "confidant.notify.v1.NotifyService"),
                   audit_servicer("notify", pool)],
        background=background,
        cleanup=[close],
        # notify serves its own registry (above): the request and pool series join it.
        metrics=metrics.metrics,
        pool=pool,
    )

"""What the web edge holds while it runs: its configuration and the gRPC stubs.

Both live on the application under typed keys (aiohttp's "No Singletons
Please"); the channels are opened and closed by ``grpc_backends``, a cleanup
context, so a test can build as many independent apps as it likes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc
from grpc_health.v1 import health_pb2_grpc

from services.common.clients import open_channel
from services.common.tokens import ServiceTokenSource, TokenSigner
from services.web.config import WebConfig


@dataclass
class Backends:
    """Stubs of the four services; calls carry web's service token unless they pass a person's."""

    auth: auth_grpc.AuthServiceStub
    messaging: messaging_grpc.MessagingServiceStub
    consent: consent_grpc.ConsentServiceStub
    notify: notify_grpc.NotifyServiceStub
    health: dict[str, health_pb2_grpc.HealthStub]
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()), return_exceptions=True)


@dataclass
class LiveStreams:
    """Open Server-Sent Events responses, ended when the server shuts down."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


CONFIG = web.AppKey("config", WebConfig)
BACKENDS = web.AppKey("backends", Backends)
LIVE = web.AppKey("live", LiveStreams)


def open_backends(config: WebConfig) -> Backends:
    tokens = ServiceTokenSource(TokenSigner.from_keys_dir(config.keys_dir, "web"))
    channels = {
        name: open_channel(target, token=tokens.token, deadline=config.rpc_deadline_seconds)
        for name, target in config.targets.items()
    }
    return Backends(
        auth=auth_grpc.AuthServiceStub(channels["auth"]),
        messaging=messaging_grpc.MessagingServiceStub(channels["messaging"]),
        consent=consent_grpc.ConsentServiceStub(channels["consent"]),
        notify=notify_grpc.NotifyServiceStub(channels["notify"]),
        health={name: health_pb2_grpc.HealthStub(ch) for name, ch in channels.items()},
        channels=channels,
    )


async def grpc_backends(app: web.Application) -> AsyncIterator[None]:
    backends = open_backends(app[CONFIG])
    app[BACKENDS] = backends
    yield
    await backends.close()

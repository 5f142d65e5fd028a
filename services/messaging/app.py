"""Builds the messaging service: keys, database, channels to auth and notify,
handlers, the live-event hub, the outbox relay and the gRPC server."""

from __future__ import annotations

from pathlib import Path

from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from services.common.audit_service import audit_servicer
from services.common.clients import open_channel
from services.common.db import prepare_database
from services.common.server import GrpcService
from services.common.tokens import ServiceTokenSource, TokenSigner, TokenVerifier, auth_key_fetcher
from services.messaging.config import MessagingConfig
from services.messaging.directory import Directory
from services.messaging.events import EventHub, NotificationListener
from services.messaging.handlers import Handlers, Limits
from services.messaging.keyring import Keyring, KeySources
from services.messaging.relay import OutboxRelay
from services.messaging.servicer import MessagingServicer
from services.messaging.storage import EVENTS_CHANNEL, OUTBOX_CHANNEL, Storage

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def create_service(config: MessagingConfig) -> GrpcService:
    common = config.common
    # Keys first: a missing key file stops start-up before anything is opened.
    key_sources = KeySources.from_config(config)
    verifier = TokenVerifier.from_keys_dir(common.keys_dir)
    service_token = ServiceTokenSource(TokenSigner.from_keys_dir(common.keys_dir, "messaging"))

    pool = await prepare_database(common.database_url, MIGRATIONS, max_size=config.db_pool_size)
    storage = Storage(pool)
    keyring = Keyring(pool, key_sources, current_ttl_seconds=config.data_key_cache_seconds)
    auth_channel = open_channel(
        config.auth_target, service_token.token, deadline=config.call_deadline_seconds
    )
    # People's tokens: verified against auth's published signing keys (fetched, cached).
    verifier.use_published_keys(auth_key_fetcher(auth_channel))
    notify_channel = open_channel(
        config.notify_target, service_token.token, deadline=config.call_deadline_seconds
    )

    hub = EventHub(storage, poll_seconds=config.stream_poll_seconds)
    relay = OutboxRelay(
        storage,
        notify_channel,
        batch_size=config.outbox_batch_size,
        poll_seconds=config.outbox_poll_seconds,
        max_backoff_seconds=config.outbox_max_backoff_seconds,
    )
    listener = NotificationListener(
        common.database_url, {EVENTS_CHANNEL: hub.wake, OUTBOX_CHANNEL: relay.wake}
    )
    handlers = Handlers(
        storage,
        Directory(auth_channel),
        keyring,
        hub,
        Limits(client_max_chars=config.client_max_chars, staff_max_chars=config.staff_max_chars),
    )

    async def close_channels() -> None:
        await auth_channel.close()
        await notify_channel.close()

    return GrpcService(
        name="messaging",
        verifier=verifier,
        servicers=[
            (
                pb_grpc.add_MessagingServiceServicer_to_server,
                MessagingServicer(handlers),
                "confidant.messaging.v1.MessagingService",
            ),
            audit_servicer("messaging", pool),
        ],
        background=[listener.run, hub.run, relay.run],
        stopping=[hub.close],
        cleanup=[close_channels, pool.close],
        pool=pool,
    )

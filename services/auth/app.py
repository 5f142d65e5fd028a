"""Builds the auth service: database, keys, handlers, the notice relay, gRPC server."""

from __future__ import annotations

from pathlib import Path

from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc

from services.auth.config import AuthConfig
from services.auth.handlers import AuthHandlers
from services.auth.notices import NoticeRelay
from services.auth.passwords import Passwords
from services.auth.servicer import AuthServicer
from services.auth.storage import AuthStorage
from services.common.clients import open_channel
from services.common.db import prepare_database
from services.common.server import GrpcService
from services.common.tokens import USER_TOKEN_ISSUER, ServiceTokenSource, TokenSigner, TokenVerifier

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def create_service(config: AuthConfig) -> GrpcService:
    # Keys first: a missing key stops start-up before anything is opened.
    signer = TokenSigner.from_keys_dir(config.common.keys_dir, USER_TOKEN_ISSUER)
    verifier = TokenVerifier.from_keys_dir(config.common.keys_dir)
    tokens = ServiceTokenSource(signer)
    passwords = await Passwords.create()
    pool = await prepare_database(config.common.database_url, MIGRATIONS)
    storage = AuthStorage(pool)
    notify_channel = open_channel(config.notify_target, token=tokens.token)
    relay = NoticeRelay(storage, notify_grpc.NotifyServiceStub(notify_channel), config.notice_retry_seconds)
    handlers = AuthHandlers(config, storage, passwords, signer, notice_queued=relay.wake)

    async def relay_notices() -> None:
        await relay.run()

    async def close() -> None:
        await notify_channel.close()
        await pool.close()

    return GrpcService(
        name="auth",
        verifier=verifier,
        servicers=[
            (
                pb_grpc.add_AuthServiceServicer_to_server,
                AuthServicer(handlers),
                "confidant.auth.v1.AuthService",
            )
        ],
        background=[handlers.purge_loop, relay_notices],
        cleanup=[close],
    )

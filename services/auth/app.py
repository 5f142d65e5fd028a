"""Builds the auth service: database, keys, handlers, the notice and client-event relays, gRPC server."""

from __future__ import annotations

from pathlib import Path

from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc

from services.auth.admin import AdminHandlers
from services.auth.client_events import ClientEventRelay
from services.auth.config import AuthConfig
from services.auth.credentials import CredentialHandlers, CredentialStorage
from services.auth.handlers import AuthHandlers
from services.auth.key_rpcs import OPEN_METHODS, with_keys
from services.auth.keys import SigningKeyHandlers, SigningKeys
from services.auth.mfa import MfaHandlers, SecretBox, load_mfa_key
from services.auth.mfa_storage import MfaStorage
from services.auth.notices import NoticeRelay
from services.auth.passwords import Passwords
from services.auth.revocations import RevocationFeed, RevocationHandlers
from services.auth.service_accounts import ServiceAccountHandlers
from services.auth.servicer import AuthServicer
from services.auth.storage import AuthStorage
from services.common.audit_service import audit_servicer
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
    # The key that seals TOTP secrets (created in development when missing).
    mfa_box = SecretBox(load_mfa_key(config.mfa_key_file, create_if_missing=config.common.development))
    passwords = await Passwords.create()
    pool = await prepare_database(config.common.database_url, MIGRATIONS, app_role=config.database_app_role)
    storage = AuthStorage(pool)
    # People's tokens are signed by the key ring in the database (auth.key is
    # imported as its first key); auth verifies them against its own published keys.
    keys = SigningKeys(
        pool,
        max(config.access_token_ttl_seconds, config.service_account_token_ttl_seconds),
        config.signing_key_activation_seconds,
        config.signing_key_refresh_seconds,
    )
    await keys.ensure_active(config.common.keys_dir / f"{USER_TOKEN_ISSUER}.key")
    await keys.refresh()
    verifier.use_published_keys(
        keys.fetch_published, refresh_seconds=config.signing_key_refresh_seconds, min_refresh_seconds=1.0
    )
    # Auth follows its own revocations straight from its database.
    revocations = RevocationFeed(
        pool,
        max(config.access_token_ttl_seconds, config.service_account_token_ttl_seconds),
        config.revocation_refresh_seconds,
    )
    verifier.use_revocations(revocations.since, config.revocation_refresh_seconds)
    service_accounts = ServiceAccountHandlers(config, pool, storage, keys)
    notify_channel = open_channel(config.notify_target, token=tokens.token)
    relay = NoticeRelay(storage, notify_grpc.NotifyServiceStub(notify_channel), config.notice_retry_seconds)
    messaging_channel = open_channel(config.messaging_target, token=tokens.token)
    client_events = ClientEventRelay(
        storage, messaging_grpc.MessagingServiceStub(messaging_channel), config.client_event_retry_seconds
    )
    handlers = AuthHandlers(
        config, storage, passwords, keys, notice_queued=relay.wake, client_created=client_events.wake
    )
    credentials = CredentialHandlers(
        config, storage, CredentialStorage(pool), passwords, handlers, notice_queued=relay.wake
    )
    mfa_storage = MfaStorage(pool)
    mfa = MfaHandlers(config, handlers, storage, mfa_storage, mfa_box)
    admin = AdminHandlers(storage, mfa_storage)
    servicer = with_keys(
        AuthServicer(handlers, credentials, mfa=mfa, admin=admin),
        SigningKeyHandlers(keys),
        service_accounts,
    )
    servicer.use_revocations(RevocationHandlers(revocations))

    async def relay_notices() -> None:
        await relay.run()

    async def relay_client_events() -> None:
        await client_events.run()

    async def close() -> None:
        await notify_channel.close()
        await messaging_channel.close()
        await pool.close()

    return GrpcService(
        name="auth",
        verifier=verifier,
        servicers=[
            (
                pb_grpc.add_AuthServiceServicer_to_server,
                servicer,
                "confidant.auth.v1.AuthService",
            ),
            audit_servicer("auth", pool),
        ],
        background=[handlers.purge_loop, relay_notices, relay_client_events, keys.refresh_loop,
                    mfa.purge_loop, credentials.purge_loop],
        open_methods=OPEN_METHODS,
        cleanup=[close],
        pool=pool,
    )

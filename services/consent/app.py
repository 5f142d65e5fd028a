"""Builds the consent service: database, channel to auth, handlers, gRPC server."""

from __future__ import annotations

from pathlib import Path

from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from services.common.audit_service import audit_servicer
from services.common.clients import open_channel
from services.common.db import prepare_database
from services.common.server import GrpcService
from services.common.tokens import ServiceTokenSource, TokenSigner, TokenVerifier, auth_key_fetcher
from services.consent.config import SMS_PROVIDER_SNS, ConsentConfig
from services.consent.handlers import ConsentHandlers
from services.consent.provider import SmsProvider, SnsProvider
from services.consent.servicer import ConsentServicer
from services.consent.storage import ConsentStorage

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def sms_provider(config: ConsentConfig) -> SmsProvider | None:
    """The provider whose opt-out list a re-consented number is checked against; None: ask nobody."""
    if config.sms_provider == SMS_PROVIDER_SNS:
        return SnsProvider.from_settings(config.aws, config.provider_timeout_seconds)
    return None


async def create_service(config: ConsentConfig, provider: SmsProvider | None = None) -> GrpcService:
    """``provider`` replaces the configured one (a test watching the calls its boto3 client makes)."""
    common = config.common
    verifier = TokenVerifier.from_keys_dir(common.keys_dir)
    tokens = ServiceTokenSource(TokenSigner.from_keys_dir(common.keys_dir, "consent"))
    pool = await prepare_database(common.database_url, MIGRATIONS, app_role=config.database_app_role or None)
    auth_channel = open_channel(config.auth_target, token=tokens.token)
    # People's tokens: verified against auth's published signing keys (fetched, cached).
    verifier.use_published_keys(auth_key_fetcher(auth_channel))
    handlers = ConsentHandlers(
        ConsentStorage(pool), auth_grpc.AuthServiceStub(auth_channel), config.default_region,
        provider=provider or sms_provider(config), help_contact=config.help_contact,
    )

    async def close() -> None:
        await auth_channel.close()
        await pool.close()

    return GrpcService(
        name="consent",
        verifier=verifier,
        servicers=[(pb_grpc.add_ConsentServiceServicer_to_server, ConsentServicer(handlers),
                    "confidant.consent.v1.ConsentService"),
                   audit_servicer("consent", pool)],
        cleanup=[close],
        pool=pool,
    )

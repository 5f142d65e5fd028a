"""Builds the auth service: database, keys, handlers, gRPC server."""

from __future__ import annotations

from pathlib import Path

from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.config import AuthConfig
from services.auth.handlers import AuthHandlers
from services.auth.passwords import Passwords
from services.auth.servicer import AuthServicer
from services.auth.storage import AuthStorage
from services.common.db import prepare_database
from services.common.server import GrpcService
from services.common.tokens import USER_TOKEN_ISSUER, TokenSigner, TokenVerifier

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def create_service(config: AuthConfig) -> GrpcService:
    # Keys first: a missing key stops start-up before anything is opened.
    signer = TokenSigner.from_keys_dir(config.common.keys_dir, USER_TOKEN_ISSUER)
    verifier = TokenVerifier.from_keys_dir(config.common.keys_dir)
    passwords = await Passwords.create()
    pool = await prepare_database(config.common.database_url, MIGRATIONS)
    handlers = AuthHandlers(config, AuthStorage(pool), passwords, signer)
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
        background=[handlers.purge_loop],
        cleanup=[pool.close],
    )

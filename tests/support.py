"""Helpers shared by the test suites: tokens, in-process services, channels."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from services.common.clients import bearer, open_channel
from services.common.config import Env
from services.common.identity import Principal
from services.common.server import GrpcService
from services.common.tokens import TokenSigner

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_names)}"


@dataclass
class Tokens:
    """Mints access tokens as auth (for people) or as one of our services."""

    keys_dir: Path

    def user(
        self,
        user_id: str,
        practice_id: str,
        role: str,
        session_kind: str = "full",
        conversation_id: str = "",
        ttl: int = 300,
    ) -> str:
        principal = Principal(
            subject=user_id,
            role=role,
            practice_id=practice_id,
            session_kind=session_kind,
            conversation_id=conversation_id,
        )
        return TokenSigner.from_keys_dir(self.keys_dir, "auth").user_token(principal, ttl)[0]

    def service(self, name: str) -> str:
        return TokenSigner.from_keys_dir(self.keys_dir, name).service_token()[0]

    @staticmethod
    def metadata(token: str):
        return bearer(token)


def service_env(keys_dir: Path, **settings: str) -> Env:
    """An Env for a service under test: development mode, the test keys, ephemeral port, no peers."""
    values = {"CONFIDANT_MODE": "development", "CONFIDANT_KEYS_DIR": str(keys_dir)}
    # A peer a test does not start is nowhere (port 9 discards), never a `make run` on the default ports.
    for peer in ("auth", "messaging", "consent", "notify"):
        values[f"CONFIDANT_{peer.upper()}_ADDR"] = "127.0.0.1:9"
    for key, value in settings.items():
        values[f"CONFIDANT_{key.upper()}"] = value
    return Env(values)


@contextlib.asynccontextmanager
async def running(service: GrpcService) -> AsyncIterator[str]:
    """Start a service on an ephemeral port; yield its address; stop it afterwards."""
    port = await service.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def channel(address: str):
    """A channel without a default token: each call passes its own metadata."""
    ch = open_channel(address)
    try:
        yield ch
    finally:
        await ch.close()

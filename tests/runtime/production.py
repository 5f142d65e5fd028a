"""Settings that production mode requires of every service, for tests that load a production
configuration to check something else (cookies, transports, ...).

``production_settings(directory)`` gives CONFIDANT_MODE=production, a keys directory that holds
no development keys (with auth's MFA key), gRPC mutual-TLS files, and PGSSLMODE=verify-full (so
any database URL passes the TLS-to-PostgreSQL rule). Merge a service's own settings over it:

    Env({**production_settings(tmp_path), "CONFIDANT_AUTH_DATABASE_URL": "postgresql://x/y"})

or, with names as tests/support.py ``service_env`` takes them:

    production_env(tmp_path, auth_database_url="postgresql://x/y")

A test that then talks to plaintext in-process services replaces ``grpc_tls`` with None in the
loaded configuration (dataclasses.replace), as production's refusal is what it is not testing.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from services.common.config import Env
from tests.tls import make_ca


def production_settings(directory: Path) -> dict[str, str]:
    keys = directory / "production-keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "auth-mfa.key").write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return {
        "CONFIDANT_MODE": "production",
        "CONFIDANT_PUBLIC_URL": "https://confidant.example.com",
        "CONFIDANT_KEYS_DIR": str(keys),
        "PGSSLMODE": "verify-full",
        **make_ca(directory / "production-tls").env("pod"),
    }


def production_env(directory: Path, **settings: str) -> Env:
    """``service_env``'s production twin: ``settings`` (names without CONFIDANT_, any case) over
    ``production_settings(directory)``, with every peer nowhere (port 9) unless a setting says where."""
    values = production_settings(directory)
    for peer in ("auth", "messaging", "consent", "notify"):
        values[f"CONFIDANT_{peer.upper()}_ADDR"] = "127.0.0.1:9"
    values.update({f"CONFIDANT_{key.upper()}": value for key, value in settings.items()})
    return Env(values)

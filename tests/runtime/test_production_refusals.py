"""Production mode refuses to start without what production needs, one sentence each.

Each service's own loader gets a complete production environment (which it accepts) lacking
exactly one thing: development keys, the development mailbox, plaintext gRPC between pods, a
missing KMS key in messaging, PostgreSQL without sslmode=verify-full, a public address without https.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.auth.config import AuthConfig
from services.common.config import ConfigError, Env
from services.common.keyfiles import DEVELOPMENT_KEYS_MARKER, load_key_file
from services.common.tokens import ensure_dev_keys
from services.consent.config import ConsentConfig
from services.messaging.config import MessagingConfig
from services.notify.config import NotifyConfig
from services.web.config import WebConfig
from tests.runtime.production import production_settings

REPO = Path(__file__).resolve().parents[2]
LOADERS: dict[str, Callable[[Env], object]] = {
    "auth": AuthConfig.load, "messaging": MessagingConfig.load, "consent": ConsentConfig.load,
    "notify": NotifyConfig.load, "web": WebConfig.load,
}
DATABASE_SERVICES = ("auth", "messaging", "consent", "notify")


def _key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(b"k" * 32).decode())


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Callable[[str], dict[str, str]]:
    """``production(service)``: a complete production environment for that service."""
    common = production_settings(tmp_path_factory.mktemp("production"))
    del common["PGSSLMODE"]  # here the database URLs say sslmode themselves

    def settings(service: str) -> dict[str, str]:
        env = {**common, "CONFIDANT_PUBLIC_URL": "https://confidant.example.com"}
        if service in DATABASE_SERVICES:
            env[f"CONFIDANT_{service.upper()}_DATABASE_URL"] = (
                f"postgresql://{service}:pw-canary-5@{service}.db.example.com:5432/confidant_{service}"
                "?sslmode=verify-full")
        if service == "messaging":
            env["CONFIDANT_MESSAGING_KMS_KEY_ID"] = "alias/confidant-messaging"
        if service == "notify":
            env.update({"CONFIDANT_NOTIFY_EMAIL_TRANSPORT": "ses", "CONFIDANT_NOTIFY_SMS_TRANSPORT": "sns",
                        "CONFIDANT_NOTIFY_EMAIL_FROM": "messages@confidant.example.com"})
        return env

    return settings


def refusal(service: str, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        LOADERS[service](Env(env))
    message = str(err.value)
    assert "\n" not in message and message.endswith("."), message
    assert "pw-canary-5" not in message, "a refusal never echoes a database password"
    return message


@pytest.mark.parametrize("service", LOADERS)
def test_a_complete_production_environment_is_accepted(production, service):
    config = LOADERS[service](Env(production(service)))
    common = getattr(config, "common", config)
    assert common.mode == "production" and common.grpc_tls.client_auth


@pytest.mark.parametrize("service", LOADERS)
def test_development_keys_are_refused(production, service, tmp_path):
    keys = tmp_path / "keys"
    ensure_dev_keys(keys)  # what `make run` and the test suites make
    _key(keys / "auth-mfa.key")
    assert (keys / DEVELOPMENT_KEYS_MARKER).is_file()
    message = refusal(service, {**production(service), "CONFIDANT_KEYS_DIR": str(keys)})
    assert message == (f"{keys} holds development keys (it has a {DEVELOPMENT_KEYS_MARKER} file): production mode "
                       "needs keys made for it (deploy/make-secrets.sh).")


@pytest.mark.parametrize("service", LOADERS)
def test_the_development_keys_directory_is_refused(production, service):
    env = production(service)
    del env["CONFIDANT_KEYS_DIR"]
    assert refusal(service, env) == ("Production mode needs CONFIDANT_KEYS_DIR set to the mounted keys, not the "
                                     "development default .data/keys.")
    assert refusal(service, {**env, "CONFIDANT_KEYS_DIR": ".data/keys"}).startswith("Production mode needs")


def test_a_key_file_development_generated_elsewhere_is_refused(production, tmp_path):
    """auth's MFA key and messaging's key file may live outside the keys directory."""
    generated = tmp_path / "generated"
    load_key_file(generated / "auth-mfa.key", 32, "MFA data key", True, ValueError)
    load_key_file(generated / "messaging-data.key", 32, "message data key", True, ValueError)
    assert (generated / DEVELOPMENT_KEYS_MARKER).is_file()
    for service, setting, name in (("auth", "AUTH_MFA_KEY_FILE", "auth-mfa.key"),
                                   ("messaging", "MESSAGING_DATA_KEY_FILE", "messaging-data.key")):
        env = {**production(service), f"CONFIDANT_{setting}": str(generated / name)}
        assert refusal(service, env).startswith(f"{generated} holds development keys")


@pytest.mark.parametrize("service", LOADERS)
def test_plaintext_grpc_between_pods_is_refused(production, service):
    env = {k: v for k, v in production(service).items() if not k.startswith("CONFIDANT_GRPC_TLS_")}
    assert refusal(service, env) == (
        "Production mode refuses plaintext gRPC between services: set CONFIDANT_GRPC_TLS_CERT_FILE, "
        "CONFIDANT_GRPC_TLS_KEY_FILE and CONFIDANT_GRPC_TLS_CA_FILE.")


def test_messaging_without_a_kms_key_is_refused_even_with_a_key_file(production, tmp_path):
    _key(tmp_path / "mounted.key")
    env = production("messaging")
    del env["CONFIDANT_MESSAGING_KMS_KEY_ID"]
    for extra in ({}, {"CONFIDANT_MESSAGING_DATA_KEY_FILE": str(tmp_path / "mounted.key")}):
        assert refusal("messaging", {**env, **extra}) == (
            "Production mode needs CONFIDANT_MESSAGING_KMS_KEY_ID (the AWS KMS key that wraps each practice's "
            "message data keys); a key file is for development only.")


@pytest.mark.parametrize("setting", ["CONFIDANT_NOTIFY_EMAIL_TRANSPORT", "CONFIDANT_NOTIFY_SMS_TRANSPORT"])
def test_the_development_mailbox_is_refused(production, setting):
    message = refusal("notify", {**production("notify"), setting: "mailbox"})
    assert message.startswith("The mailbox transport") and "cannot be used in production mode" in message


@pytest.mark.parametrize("service", DATABASE_SERVICES)
@pytest.mark.parametrize(("url", "sslmode"), [
    ("postgresql://u:pw-canary-5@db.example.com/x", "prefer"),
    ("postgresql://u:pw-canary-5@db.example.com/x?sslmode=require", "require"),
    ("host=db.example.com dbname=x user=u password=pw-canary-5 sslmode=verify-ca", "verify-ca"),
])
def test_postgresql_without_verify_full_is_refused(production, service, url, sslmode):
    env = {**production(service), f"CONFIDANT_{service.upper()}_DATABASE_URL": url}
    assert refusal(service, env) == (
        "Production mode needs TLS to PostgreSQL with the server's certificate and name verified: add "
        f"sslmode=verify-full to CONFIDANT_{service.upper()}_DATABASE_URL (or set PGSSLMODE=verify-full), "
        f"not sslmode={sslmode}.")


@pytest.mark.parametrize("service", DATABASE_SERVICES)
def test_verify_full_in_either_form_or_from_pgsslmode_is_accepted(production, service):
    setting = f"CONFIDANT_{service.upper()}_DATABASE_URL"
    for extra in ({setting: "host=db.example.com dbname=x user=u sslmode=verify-full"},
                  {setting: "postgresql://u@db.example.com/x", "PGSSLMODE": "verify-full"}):
        LOADERS[service](Env({**production(service), **extra}))
    # The URL wins over PGSSLMODE, as in libpq.
    refusal(service, {**production(service), setting: "postgresql://u@db/x?sslmode=disable",
                      "PGSSLMODE": "verify-full"})


def test_a_refusing_service_stops_before_it_starts(production):
    env = {k: v for k, v in production("consent").items() if not k.startswith("CONFIDANT_GRPC_TLS_")}
    result = subprocess.run([sys.executable, "-m", "services.consent"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("consent: configuration error: Production mode refuses plaintext gRPC between "
                                     "services: set CONFIDANT_GRPC_TLS_CERT_FILE, CONFIDANT_GRPC_TLS_KEY_FILE and "
                                     "CONFIDANT_GRPC_TLS_CA_FILE.")


@pytest.mark.parametrize("service", ["notify", "web"])
@pytest.mark.parametrize("url", [None, "http://confidant.example.com"])
def test_a_public_address_without_https_is_refused(production, service, url):
    """Email links and Twilio's signatures use the public address: production needs its https one."""
    env = production(service)
    del env["CONFIDANT_PUBLIC_URL"]
    if url is not None:
        env["CONFIDANT_PUBLIC_URL"] = url
    assert refusal(service, env).startswith("Production mode needs CONFIDANT_PUBLIC_URL set to the https address")

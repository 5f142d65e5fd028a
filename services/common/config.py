"""Typed configuration from environment variables and secret files.

Every setting is read from ``CONFIDANT_<NAME>``; a secret may instead be given
as a file path in ``CONFIDANT_<NAME>_FILE`` (Kubernetes mounted secrets). A
missing or malformed setting stops the process at start-up with one clear
sentence, never later in the middle of a request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from services.common.keyfiles import DEVELOPMENT_KEYS_MARKER

PREFIX = "CONFIDANT_"
# Where development keeps its generated keys; production mounts its own (CONFIDANT_KEYS_DIR).
DEFAULT_KEYS_DIR = ".data/keys"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Env:
    """Reads settings from a mapping (``os.environ`` by default)."""

    values: Mapping[str, str]

    @classmethod
    def from_os(cls) -> Env:
        return cls(dict(os.environ))

    def _raw(self, name: str) -> str | None:
        key = PREFIX + name
        if key in self.values and self.values[key] != "":
            return self.values[key]
        file_key = key + "_FILE"
        if file_key in self.values and self.values[file_key] != "":
            path = Path(self.values[file_key])
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{file_key} points at {path}, which cannot be read: {exc.strerror}.") from exc
        return None

    def str(self, name: str, default: str | None = None) -> str:
        value = self._raw(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{PREFIX}{name} is required but not set (nor {PREFIX}{name}_FILE).")
            return default
        return value

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def int(self, name: str, default: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}{name} must be a whole number, not {value!r}.") from exc

    def float(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}{name} must be a number, not {value!r}.") from exc

    def positive_int(self, name: str, default: int) -> int:
        value = self.int(name, default)
        if value <= 0:
            raise ConfigError(f"{PREFIX}{name} must be greater than zero, not {value}.")
        return value

    def positive_float(self, name: str, default: float) -> float:
        value = self.float(name, default)
        if value <= 0:
            raise ConfigError(f"{PREFIX}{name} must be greater than zero, not {value}.")
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{PREFIX}{name} must be true or false, not {value!r}.")

    def path(self, name: str, default: str | None = None) -> Path:
        return Path(self.str(name, default))

    def app_role(self, name: str, default: str) -> str:
        """A database role the service's queries run as; 'none' turns it off (the login user)."""
        value = self.str(name, default).strip()
        return "" if value.lower() == "none" else value


@dataclass(frozen=True)
class GrpcTls:
    """TLS on gRPC between our services, from mounted PEM files.

    Servers present ``cert_file``/``key_file``; clients verify servers against
    ``ca_file`` and present the same certificate as their client certificate. With
    ``client_auth`` (mutual TLS), servers also refuse clients without a certificate
    signed by ``ca_file``.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    client_auth: bool = False

    @classmethod
    def load(cls, env: Env) -> GrpcTls | None:
        """The ``CONFIDANT_GRPC_TLS_*`` settings, or None (plaintext) when none is set."""
        files = {name: env.optional(name) for name in ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE")}
        client_auth = env.str("GRPC_TLS_CLIENT_AUTH", "none").strip().lower()
        if client_auth not in ("none", "required"):
            raise ConfigError(f"{PREFIX}GRPC_TLS_CLIENT_AUTH must be none or required (mutual TLS), not {client_auth!r}.")
        if not any(files.values()):
            if client_auth == "required":
                raise ConfigError(f"{PREFIX}GRPC_TLS_CLIENT_AUTH=required needs {PREFIX}GRPC_TLS_CERT_FILE, "
                                  f"{PREFIX}GRPC_TLS_KEY_FILE and {PREFIX}GRPC_TLS_CA_FILE.")
            return None
        for name, value in files.items():
            if not value:
                raise ConfigError(f"{PREFIX}GRPC_TLS_CERT_FILE, {PREFIX}GRPC_TLS_KEY_FILE and {PREFIX}GRPC_TLS_CA_FILE "
                                  f"go together, and {PREFIX}{name} is not set.")
            if not Path(value).is_file():
                raise ConfigError(f"{PREFIX}{name} points at {value}, which does not exist.")
        return cls(
            cert_file=Path(files["GRPC_TLS_CERT_FILE"]),
            key_file=Path(files["GRPC_TLS_KEY_FILE"]),
            ca_file=Path(files["GRPC_TLS_CA_FILE"]),
            client_auth=client_auth == "required",
        )

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA certificates) as PEM bytes."""
        return self.cert_file.read_bytes(), self.key_file.read_bytes(), self.ca_file.read_bytes()


def listen_address(env: Env, name: str, default: str | None = None) -> str | None:
    """A host:port setting (``CONFIDANT_<name>``), checked; ``default`` when unset."""
    listen = env.optional(name) or default
    if listen is None:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{PREFIX}{name} must be host:port (such as 0.0.0.0:8086), not {listen!r}.")
    return listen


def load_public_url(env: Env, development: bool) -> str:
    """CONFIDANT_PUBLIC_URL, the web edge's public address (email links, Twilio's signatures):
    an http(s) URL, https in production."""
    url = env.str("PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{PREFIX}PUBLIC_URL must be an http(s) URL, not {url!r}.")
    if not development and parts.scheme != "https":
        raise ConfigError(f"Production mode needs {PREFIX}PUBLIC_URL set to the https address people use "
                          f"(email links and Twilio's signatures use it), not {url!r}.")
    return url


def load_mode(env: Env) -> str:
    mode = env.str("MODE", "development")
    if mode not in ("development", "production"):
        raise ConfigError(f"{PREFIX}MODE must be development or production, not {mode!r}.")
    return mode


def refuse_development_keys(env: Env, keys_dir: Path, *key_files: Path) -> None:
    """Production mode: the keys must be the operator's, never development's generated ones.

    Development generates keys on demand and leaves a ``DEVELOPMENT-KEYS`` file beside them
    (services/common/tokens.py, keyfiles.py); production refuses a directory holding one, and
    the development default directory itself.
    """
    if env.optional("KEYS_DIR") is None or keys_dir.resolve() == Path(DEFAULT_KEYS_DIR).resolve():
        raise ConfigError(f"Production mode needs {PREFIX}KEYS_DIR set to the mounted keys, not the development "
                          f"default {DEFAULT_KEYS_DIR}.")
    for directory in dict.fromkeys([keys_dir, *(path.parent for path in key_files)]):
        if (directory / DEVELOPMENT_KEYS_MARKER).exists():
            raise ConfigError(f"{directory} holds development keys (it has a {DEVELOPMENT_KEYS_MARKER} file): "
                              "production mode needs keys made for it (deploy/make-secrets.sh).")


def refuse_plaintext_grpc(tls: GrpcTls | None) -> None:
    if tls is None:
        raise ConfigError(f"Production mode refuses plaintext gRPC between services: set {PREFIX}GRPC_TLS_CERT_FILE, "
                          f"{PREFIX}GRPC_TLS_KEY_FILE and {PREFIX}GRPC_TLS_CA_FILE.")


def database_sslmode(env: Env, setting: str, url: str) -> str:
    """The sslmode libpq will use for ``url`` (URL or key=value form), else PGSSLMODE, else libpq's default."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # Never echo the value: it may hold a password.
        raise ConfigError(f"{PREFIX}{setting} is neither a postgresql:// URL nor a key=value connection "
                          "string.") from None
    return str(params.get("sslmode") or env.values.get("PGSSLMODE") or "prefer")


@dataclass(frozen=True)
class CommonConfig:
    """Settings every service shares."""

    service: str
    mode: str  # "development" or "production"
    listen: str  # host:port for gRPC
    database_url: str
    keys_dir: Path
    log_level: str
    shutdown_grace_seconds: float
    # TLS between services (None: plaintext, development only).
    grpc_tls: GrpcTls | None = None
    # A second, plaintext port answering only grpc.health.v1 (the kubelet's probes cannot speak TLS).
    health_listen: str | None = None
    # Where GET /metrics answers (None: not served).
    metrics_listen: str | None = None
    # How long start-up waits for the database before it gives up.
    database_wait_seconds: float = 30.0

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @classmethod
    def load(cls, service: str, env: Env, default_port: int) -> CommonConfig:
        mode = load_mode(env)
        upper = service.upper()
        config = cls(
            service=service,
            mode=mode,
            listen=env.str(f"{upper}_LISTEN", f"127.0.0.1:{default_port}"),
            database_url=env.str(f"{upper}_DATABASE_URL"),
            keys_dir=env.path("KEYS_DIR", DEFAULT_KEYS_DIR),
            log_level=env.str("LOG_LEVEL", "INFO"),
            shutdown_grace_seconds=env.float("SHUTDOWN_GRACE_SECONDS", 10.0),
            grpc_tls=GrpcTls.load(env),
            health_listen=listen_address(env, f"{upper}_HEALTH_LISTEN"),
            metrics_listen=listen_address(env, f"{upper}_METRICS_LISTEN"),
            database_wait_seconds=env.positive_float("DATABASE_WAIT_SECONDS", 30.0),
        )
        if not config.development:
            refuse_development_keys(env, config.keys_dir)
            refuse_plaintext_grpc(config.grpc_tls)
            sslmode = database_sslmode(env, f"{upper}_DATABASE_URL", config.database_url)
            if sslmode != "verify-full":
                raise ConfigError(
                    f"Production mode needs TLS to PostgreSQL with the server's certificate and name verified: "
                    f"add sslmode=verify-full to {PREFIX}{upper}_DATABASE_URL (or set PGSSLMODE=verify-full), "
                    f"not sslmode={sslmode}."
                )
        return config


# Default gRPC ports, one per service, used by development mode and as defaults.
DEFAULT_PORTS = {"auth": 50051, "messaging": 50052, "consent": 50053, "notify": 50054}


def service_target(env: Env, service: str) -> str:
    """The host:port at which another service is reached."""
    return env.str(f"{service.upper()}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")

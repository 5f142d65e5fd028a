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

PREFIX = "CONFIDANT_"


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
class CommonConfig:
    """Settings every service shares."""

    service: str
    mode: str  # "development" or "production"
    listen: str  # host:port for gRPC
    database_url: str
    keys_dir: Path
    log_level: str
    shutdown_grace_seconds: float

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @classmethod
    def load(cls, service: str, env: Env, default_port: int) -> CommonConfig:
        mode = env.str("MODE", "development")
        if mode not in ("development", "production"):
            raise ConfigError(f"{PREFIX}MODE must be development or production, not {mode!r}.")
        upper = service.upper()
        return cls(
            service=service,
            mode=mode,
            listen=env.str(f"{upper}_LISTEN", f"127.0.0.1:{default_port}"),
            database_url=env.str(f"{upper}_DATABASE_URL"),
            keys_dir=env.path("KEYS_DIR", ".data/keys"),
            log_level=env.str("LOG_LEVEL", "INFO"),
            shutdown_grace_seconds=env.float("SHUTDOWN_GRACE_SECONDS", 10.0),
        )


# Default gRPC ports, one per service, used by development mode and as defaults.
DEFAULT_PORTS = {"auth": 50051, "messaging": 50052, "consent": 50053, "notify": 50054}


def service_target(env: Env, service: str) -> str:
    """The host:port at which another service is reached."""
    return env.str(f"{service.upper()}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")

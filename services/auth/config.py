"""Auth settings: session and magic-link windows, token lifetimes, password rules."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DEFAULT_PORTS, PREFIX, CommonConfig, ConfigError, Env

# Passwords longer than this are refused outright: hashing megabytes of input is
# a cheap way to load the server, and nobody types more.
PASSWORD_HARD_MAX_LENGTH = 1024
# PRODUCT.md: passwords "up to at least 128" characters must be accepted.
PASSWORD_MAX_LENGTH_FLOOR = 128


@dataclass(frozen=True)
class AuthConfig:
    common: CommonConfig
    # A quick sign-in link works for this long after it was sent.
    magic_link_ttl_seconds: int = 900
    # Full sessions end after this much inactivity ...
    session_idle_seconds: int = 1800
    # ... and after this long in any case.
    session_absolute_seconds: int = 43200
    # Access tokens handed to the web edge for calls to the other services.
    access_token_ttl_seconds: int = 300
    password_min_length: int = 12
    password_max_length: int = PASSWORD_HARD_MAX_LENGTH
    # Expired sessions and links are deleted this long after they ended (hourly sweep).
    purge_interval_seconds: int = 3600
    session_retention_seconds: int = 7 * 86400
    magic_link_retention_seconds: int = 30 * 86400

    @classmethod
    def load(cls, env: Env) -> AuthConfig:
        positive = env.positive_int
        config = cls(
            common=CommonConfig.load("auth", env, DEFAULT_PORTS["auth"]),
            magic_link_ttl_seconds=positive("MAGIC_LINK_TTL_SECONDS", 900),
            session_idle_seconds=positive("SESSION_IDLE_SECONDS", 1800),
            session_absolute_seconds=positive("SESSION_ABSOLUTE_SECONDS", 43200),
            access_token_ttl_seconds=positive("ACCESS_TOKEN_TTL_SECONDS", 300),
            password_min_length=positive("PASSWORD_MIN_LENGTH", 12),
            password_max_length=positive("PASSWORD_MAX_LENGTH", PASSWORD_HARD_MAX_LENGTH),
            purge_interval_seconds=positive("PURGE_INTERVAL_SECONDS", 3600),
            session_retention_seconds=positive("SESSION_RETENTION_SECONDS", 7 * 86400),
            magic_link_retention_seconds=positive("MAGIC_LINK_RETENTION_SECONDS", 30 * 86400),
        )
        if not PASSWORD_MAX_LENGTH_FLOOR <= config.password_max_length <= PASSWORD_HARD_MAX_LENGTH:
            raise ConfigError(
                f"{PREFIX}PASSWORD_MAX_LENGTH must be between {PASSWORD_MAX_LENGTH_FLOOR} and "
                f"{PASSWORD_HARD_MAX_LENGTH}, not {config.password_max_length}."
            )
        if config.password_min_length > config.password_max_length:
            raise ConfigError(f"{PREFIX}PASSWORD_MIN_LENGTH must not exceed {PREFIX}PASSWORD_MAX_LENGTH.")
        return config

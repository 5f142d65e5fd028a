"""Auth settings: session and magic-link windows, token lifetimes, password rules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.auth.profiles import normalize_time_zone
from services.common.config import (
    DEFAULT_PORTS,
    PREFIX,
    CommonConfig,
    ConfigError,
    Env,
    refuse_development_keys,
    service_target,
)
from services.common.errors import InvalidArgument

# Passwords longer than this are refused outright: hashing megabytes of input is
# a cheap way to load the server, and nobody types more.
PASSWORD_HARD_MAX_LENGTH = 1024
# PRODUCT.md: passwords "up to at least 128" characters must be accepted.
PASSWORD_MAX_LENGTH_FLOOR = 128
# NIST SP 800-63B: lock well before 100 consecutive failed attempts.
SIGN_IN_LOCK_AFTER_FAILURES_MAX = 99
# The file (in the keys dir) holding the key that seals TOTP secrets.
MFA_KEY_FILE_NAME = "auth-mfa.key"
# The time zone of practices created without one (and, through migration 0009, of older practices).
DEFAULT_TIME_ZONE = "America/New_York"


def _time_zone(value: str) -> str:
    try:
        return normalize_time_zone(value)
    except InvalidArgument:
        raise ConfigError(
            f"{PREFIX}AUTH_DEFAULT_TIME_ZONE must be an IANA time zone such as {DEFAULT_TIME_ZONE}, not {value!r}."
        ) from None


@dataclass(frozen=True)
class AuthConfig:
    common: CommonConfig
    # Where notify is reached (the lock email).
    notify_target: str = "127.0.0.1:50054"
    # Where messaging is reached (the client-created outbox).
    messaging_target: str = "127.0.0.1:50052"
    # The database role auth's queries run as: it may not UPDATE or DELETE the audit
    # trail (migration 0007). Empty: run as the login user.
    database_app_role: str = "confidant_auth_app"
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
    # Sign-in throttling. After this many consecutive failures an account refuses
    # attempts for 2^(failures - this) seconds (at most sign_in_max_delay_seconds) ...
    sign_in_delay_after_failures: int = 5
    sign_in_max_delay_seconds: int = 300
    # ... and after this many it is locked for sign_in_lock_seconds (and its owner emailed).
    sign_in_lock_after_failures: int = 10
    sign_in_lock_seconds: int = 900
    # Sign-in and magic-link attempts per client address per window, across accounts.
    sign_in_address_limit: int = 30
    sign_in_address_window_seconds: int = 60
    # Failure counts (and address windows) untouched this long are forgotten by the hourly sweep.
    sign_in_failure_memory_seconds: int = 86400
    # The lock-email outbox is relayed at once, and retried this often while notify is down.
    notice_retry_seconds: int = 10
    # The client-created outbox likewise, retried this often while messaging is down.
    client_event_retry_seconds: int = 10
    # Portal invitation and password-reset links work this long.
    invitation_ttl_seconds: int = 86400
    password_reset_ttl_seconds: int = 3600
    # At most one reset email per account this often (the per-address limit cannot stop many addresses).
    password_reset_min_interval_seconds: int = 60
    # A rotated signing key signs only this long after it is published (so every
    # verifier can have fetched it); auth re-reads its keys this often; service-account tokens
    # live this long (at most 300) and each client id may ask for one this often per window.
    signing_key_activation_seconds: int = 30
    signing_key_refresh_seconds: int = 30
    service_account_token_ttl_seconds: int = 300
    service_account_token_limit: int = 30
    service_account_token_window_seconds: int = 60
    # A sign-in waiting for its second factor (or enrolment) lasts this long;
    # codes of this many 30-second steps either side of now are accepted; this many
    # recovery codes; the issuer shown in authenticator apps; the key that seals
    # TOTP secrets at rest (created in development, required in production).
    second_factor_pending_seconds: int = 300
    totp_valid_window: int = 1
    recovery_code_count: int = 10
    totp_issuer: str = "Confidant"
    mfa_key_file: Path | None = None
    # How often every service re-reads auth's revocations (deactivated people,
    # deleted service accounts), so their tokens stop working within about this long.
    revocation_refresh_seconds: float = 2.0
    # The time zone of a practice created without one (an IANA name).
    default_time_zone: str = DEFAULT_TIME_ZONE

    @classmethod
    def load(cls, env: Env) -> AuthConfig:
        positive = env.positive_int
        common = CommonConfig.load("auth", env, DEFAULT_PORTS["auth"])
        config = cls(
            common=common,
            database_app_role=env.app_role("AUTH_DATABASE_APP_ROLE", "confidant_auth_app"),
            magic_link_ttl_seconds=positive("MAGIC_LINK_TTL_SECONDS", 900),
            session_idle_seconds=positive("SESSION_IDLE_SECONDS", 1800),
            session_absolute_seconds=positive("SESSION_ABSOLUTE_SECONDS", 43200),
            access_token_ttl_seconds=positive("ACCESS_TOKEN_TTL_SECONDS", 300),
            password_min_length=positive("PASSWORD_MIN_LENGTH", 12),
            password_max_length=positive("PASSWORD_MAX_LENGTH", PASSWORD_HARD_MAX_LENGTH),
            purge_interval_seconds=positive("PURGE_INTERVAL_SECONDS", 3600),
            session_retention_seconds=positive("SESSION_RETENTION_SECONDS", 7 * 86400),
            magic_link_retention_seconds=positive("MAGIC_LINK_RETENTION_SECONDS", 30 * 86400),
            notify_target=service_target(env, "notify"),
            messaging_target=service_target(env, "messaging"),
            sign_in_delay_after_failures=positive("SIGN_IN_DELAY_AFTER_FAILURES", 5),
            sign_in_max_delay_seconds=positive("SIGN_IN_MAX_DELAY_SECONDS", 300),
            sign_in_lock_after_failures=positive("SIGN_IN_LOCK_AFTER_FAILURES", 10),
            sign_in_lock_seconds=positive("SIGN_IN_LOCK_SECONDS", 900),
            sign_in_address_limit=positive("SIGN_IN_ADDRESS_LIMIT", 30),
            sign_in_address_window_seconds=positive("SIGN_IN_ADDRESS_WINDOW_SECONDS", 60),
            sign_in_failure_memory_seconds=positive("SIGN_IN_FAILURE_MEMORY_SECONDS", 86400),
            notice_retry_seconds=positive("NOTICE_RETRY_SECONDS", 10),
            client_event_retry_seconds=positive("CLIENT_EVENT_RETRY_SECONDS", 10),
            invitation_ttl_seconds=positive("INVITATION_TTL_SECONDS", 86400),
            password_reset_ttl_seconds=positive("PASSWORD_RESET_TTL_SECONDS", 3600),
            password_reset_min_interval_seconds=env.int("PASSWORD_RESET_MIN_INTERVAL_SECONDS", 60),
            signing_key_activation_seconds=env.int("SIGNING_KEY_ACTIVATION_SECONDS", 30),
            signing_key_refresh_seconds=positive("SIGNING_KEY_REFRESH_SECONDS", 30),
            service_account_token_ttl_seconds=positive("SERVICE_ACCOUNT_TOKEN_TTL_SECONDS", 300),
            service_account_token_limit=positive("SERVICE_ACCOUNT_TOKEN_LIMIT", 30),
            service_account_token_window_seconds=positive("SERVICE_ACCOUNT_TOKEN_WINDOW_SECONDS", 60),
            second_factor_pending_seconds=positive("SECOND_FACTOR_PENDING_SECONDS", 300),
            totp_valid_window=env.int("TOTP_VALID_WINDOW", 1),
            recovery_code_count=positive("RECOVERY_CODE_COUNT", 10),
            totp_issuer=env.str("TOTP_ISSUER", "Confidant"),
            mfa_key_file=env.path("AUTH_MFA_KEY_FILE", str(common.keys_dir / MFA_KEY_FILE_NAME)),
            revocation_refresh_seconds=env.positive_float("REVOCATION_REFRESH_SECONDS", 2.0),
            default_time_zone=_time_zone(env.str("AUTH_DEFAULT_TIME_ZONE", DEFAULT_TIME_ZONE)),
        )
        if not PASSWORD_MAX_LENGTH_FLOOR <= config.password_max_length <= PASSWORD_HARD_MAX_LENGTH:
            raise ConfigError(
                f"{PREFIX}PASSWORD_MAX_LENGTH must be between {PASSWORD_MAX_LENGTH_FLOOR} and "
                f"{PASSWORD_HARD_MAX_LENGTH}, not {config.password_max_length}."
            )
        if config.password_min_length > config.password_max_length:
            raise ConfigError(f"{PREFIX}PASSWORD_MIN_LENGTH must not exceed {PREFIX}PASSWORD_MAX_LENGTH.")
        if config.sign_in_delay_after_failures > config.sign_in_lock_after_failures:
            raise ConfigError(
                f"{PREFIX}SIGN_IN_DELAY_AFTER_FAILURES must not exceed {PREFIX}SIGN_IN_LOCK_AFTER_FAILURES."
            )
        if config.sign_in_lock_after_failures > SIGN_IN_LOCK_AFTER_FAILURES_MAX:
            raise ConfigError(
                f"{PREFIX}SIGN_IN_LOCK_AFTER_FAILURES must be at most {SIGN_IN_LOCK_AFTER_FAILURES_MAX} "
                "(NIST SP 800-63B allows no more than 100 consecutive failures)."
            )
        if config.service_account_token_ttl_seconds > 300:
            raise ConfigError(f"{PREFIX}SERVICE_ACCOUNT_TOKEN_TTL_SECONDS must be at most 300.")
        if config.signing_key_activation_seconds < 0:
            raise ConfigError(f"{PREFIX}SIGNING_KEY_ACTIVATION_SECONDS must not be negative.")
        if not 0 <= config.totp_valid_window <= 2:
            raise ConfigError(f"{PREFIX}TOTP_VALID_WINDOW must be 0, 1 or 2, not {config.totp_valid_window}.")
        if not config.common.development and not config.mfa_key_file.is_file():
            raise ConfigError(
                f"The MFA data key {config.mfa_key_file} does not exist; production mode never creates one "
                f"(set {PREFIX}AUTH_MFA_KEY_FILE to the mounted key)."
            )
        if not config.common.development:
            refuse_development_keys(env, config.common.keys_dir, config.mfa_key_file)
        return config

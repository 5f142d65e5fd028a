"""Notify's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DEFAULT_PORTS, PREFIX, CommonConfig, ConfigError, Env, service_target

# The transports this build has. Amazon SES (email) and SNS (SMS) arrive in a later issue.
TRANSPORT_MAILBOX = "mailbox"
TRANSPORTS = (TRANSPORT_MAILBOX,)
# Settings where 0 means "no coalescing" / "no delay" / "no limit".
_ZERO_ALLOWED = frozenset(
    {"NOTIFY_BURST_SECONDS", "NOTIFY_STAFF_UNREAD_DELAY_SECONDS", "NOTIFY_STAFF_EMAIL_INTERVAL_SECONDS"}
)


@dataclass(frozen=True)
class NotifyConfig:
    common: CommonConfig
    # The web edge's public base URL: links in emails point there.
    public_url: str
    auth_target: str
    consent_target: str
    # Asked whether a staff member has read a message before their delayed email goes.
    messaging_target: str
    # How email and SMS leave: "mailbox" is the development mailbox.
    transport: str
    # Messages to the same client in the same conversation within this window give one email (and one text).
    burst_seconds: int = 120
    # A staff member who has not read a message this long after it was sent gets an email ...
    staff_unread_delay_seconds: int = 900
    # ... and at most one per conversation this often (later messages wait for the window to reopen).
    staff_email_interval_seconds: int = 3600
    # The worker wakes on every enqueue (LISTEN/NOTIFY) and also polls this often.
    poll_interval_seconds: float = 1.0
    batch_size: int = 20
    # A failing job is retried with exponential backoff (base, 2x base, 4x base, ...) up to max_attempts.
    max_attempts: int = 5
    retry_base_seconds: float = 10.0
    # Jobs that must never be dropped (a staff email while messaging is unreachable) retry at most this far apart.
    retry_max_seconds: float = 300.0
    # A claimed job is invisible to other workers for this long (then it is due again).
    claim_lease_seconds: float = 60.0

    @classmethod
    def load(cls, env: Env) -> NotifyConfig:
        common = CommonConfig.load("notify", env, DEFAULT_PORTS["notify"])
        public_url = env.str("PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise ConfigError(f"{PREFIX}PUBLIC_URL must start with http:// or https://, not {public_url!r}.")
        transport = env.optional("NOTIFY_TRANSPORT") or (TRANSPORT_MAILBOX if common.development else "")
        if not transport:
            raise ConfigError(
                f"Production mode needs an email and SMS transport, and {PREFIX}NOTIFY_TRANSPORT is not set: "
                "Amazon SES and SNS are not part of this release yet, so notify refuses to start rather than "
                "drop notifications."
            )
        if transport not in TRANSPORTS:
            raise ConfigError(f"{PREFIX}NOTIFY_TRANSPORT must be one of {', '.join(TRANSPORTS)}, not {transport!r}.")
        if transport == TRANSPORT_MAILBOX and not common.development:
            raise ConfigError(
                f"{PREFIX}NOTIFY_TRANSPORT=mailbox is the development mailbox and cannot be used in production "
                "mode: it would keep emails and texts in a table instead of sending them."
            )
        config = cls(
            common=common,
            public_url=public_url,
            auth_target=service_target(env, "auth"),
            consent_target=service_target(env, "consent"),
            messaging_target=service_target(env, "messaging"),
            transport=transport,
            burst_seconds=env.int("NOTIFY_BURST_SECONDS", 120),
            staff_unread_delay_seconds=env.int("NOTIFY_STAFF_UNREAD_DELAY_SECONDS", 900),
            staff_email_interval_seconds=env.int("NOTIFY_STAFF_EMAIL_INTERVAL_SECONDS", 3600),
            poll_interval_seconds=env.float("NOTIFY_POLL_INTERVAL_SECONDS", 1.0),
            batch_size=env.int("NOTIFY_BATCH_SIZE", 20),
            max_attempts=env.int("NOTIFY_MAX_ATTEMPTS", 5),
            retry_base_seconds=env.float("NOTIFY_RETRY_BASE_SECONDS", 10.0),
            retry_max_seconds=env.float("NOTIFY_RETRY_MAX_SECONDS", 300.0),
            claim_lease_seconds=env.float("NOTIFY_CLAIM_LEASE_SECONDS", 60.0),
        )
        for name, value in (
            ("NOTIFY_BURST_SECONDS", config.burst_seconds),
            ("NOTIFY_STAFF_UNREAD_DELAY_SECONDS", config.staff_unread_delay_seconds),
            ("NOTIFY_STAFF_EMAIL_INTERVAL_SECONDS", config.staff_email_interval_seconds),
            ("NOTIFY_POLL_INTERVAL_SECONDS", config.poll_interval_seconds),
            ("NOTIFY_BATCH_SIZE", config.batch_size),
            ("NOTIFY_MAX_ATTEMPTS", config.max_attempts),
            ("NOTIFY_RETRY_BASE_SECONDS", config.retry_base_seconds),
            ("NOTIFY_RETRY_MAX_SECONDS", config.retry_max_seconds),
            ("NOTIFY_CLAIM_LEASE_SECONDS", config.claim_lease_seconds),
        ):
            if value < 0 or (value == 0 and name not in _ZERO_ALLOWED):
                raise ConfigError(f"{PREFIX}{name} must be greater than zero, not {value}.")
        return config

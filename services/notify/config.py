"""Notify's configuration: policies, the email and SMS transports, retries, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from services.common.aws import AwsSettings
from services.common.config import (
    DEFAULT_PORTS,
    PREFIX,
    CommonConfig,
    ConfigError,
    Env,
    load_public_url,
    service_target,
)

TRANSPORT_MAILBOX = "mailbox"
EMAIL_SES, EMAIL_SMTP = "ses", "smtp"
SMS_SNS, SMS_NONE = "sns", "none"
EMAIL_TRANSPORTS = (EMAIL_SES, EMAIL_SMTP, TRANSPORT_MAILBOX)
SMS_TRANSPORTS = (SMS_SNS, TRANSPORT_MAILBOX, SMS_NONE)
SMTP_STARTTLS, SMTP_TLS = "starttls", "tls"
# The practice's name goes where this placeholder is in the sender name.
PRACTICE_PLACEHOLDER = "{practice}"
# Settings where 0 means "no coalescing" / "no delay" / "no limit".
_ZERO_ALLOWED = frozenset(
    {"NOTIFY_BURST_SECONDS", "NOTIFY_STAFF_UNREAD_DELAY_SECONDS", "NOTIFY_STAFF_EMAIL_INTERVAL_SECONDS",
     "NOTIFY_INVITATION_HOLD_SECONDS"}
)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    # "starttls" (submission, usually 587) or "tls" (implicit TLS, usually 465); never plain text.
    security: str = SMTP_STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # Trust this CA (PEM) instead of the system's (a test's CA, a private relay).
    ca_file: Path | None = None


@dataclass(frozen=True)
class NotifyConfig:
    common: CommonConfig
    # The web edge's public base URL: links in emails point there.
    public_url: str
    auth_target: str
    consent_target: str
    # Asked whether a staff member has read a message before their delayed email goes.
    messaging_target: str
    # How email leaves (ses, smtp, or the development mailbox) and how texts leave (sns, mailbox, none).
    email_transport: str = TRANSPORT_MAILBOX
    sms_transport: str = TRANSPORT_MAILBOX
    # The From address of every email (required for ses and smtp).
    email_from: str = ""
    # The From display name; {practice} becomes the practice's name.
    sender_name: str = PRACTICE_PLACEHOLDER
    # The From display name of a discreet client's alerts (and of the rare email with no practice
    # name to give): names no practice, and never the vendor.
    discreet_sender_name: str = "Secure Messages"
    # SES: the configuration set that publishes bounces, complaints and deliveries to SNS.
    ses_configuration_set: str | None = None
    smtp: SmtpSettings | None = None
    aws: AwsSettings = field(default_factory=AwsSettings)
    # The longest a provider call may take; it must end well inside the claim lease.
    send_timeout_seconds: float = 10.0
    # Messages to the same client in the same conversation within this window give one email (and one text).
    burst_seconds: int = 120
    # A staff member who has not read a message this long after it was sent gets an email ...
    staff_unread_delay_seconds: int = 900
    # ... and at most one per conversation this often (later messages wait for the window to reopen).
    staff_email_interval_seconds: int = 3600
    # A client's Client Portal invitation and a message alert within this window of each other make
    # one email: an invitation waits this long for an alert, and a client's first alert while they
    # have no password waits this long for the invitation (0: each goes alone, at once).
    invitation_hold_seconds: int = 60
    # The worker wakes on every enqueue (LISTEN/NOTIFY) and also polls this often.
    poll_interval_seconds: float = 1.0
    batch_size: int = 20
    # A failing job is retried with exponential backoff (base, 2x base, 4x base, ... at most retry_max;
    # provider errors with full jitter) up to max_attempts.
    max_attempts: int = 5
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 300.0
    # A claimed job is invisible to other workers for this long (then it is due again): the lease.
    claim_lease_seconds: float = 60.0
    # How often the queue gauges are measured (when metrics are served: common.metrics_listen).
    metrics_refresh_seconds: float = 5.0

    @property
    def transport(self) -> str:
        """The email transport (the name the first releases had for it)."""
        return self.email_transport

    @property
    def metrics_listen(self) -> str | None:
        """Where Prometheus scrapes /metrics (CONFIDANT_NOTIFY_METRICS_LISTEN; None: not served)."""
        return self.common.metrics_listen

    @classmethod
    def load(cls, env: Env) -> NotifyConfig:
        common = CommonConfig.load("notify", env, DEFAULT_PORTS["notify"])
        public_url = load_public_url(env, common.development)
        email_transport, sms_transport = _transports(env, common)
        email_from = (env.optional("NOTIFY_EMAIL_FROM") or "").strip()
        if email_from and ("@" not in parseaddr(email_from)[1] or parseaddr(email_from)[1] != email_from):
            raise ConfigError(f"{PREFIX}NOTIFY_EMAIL_FROM must be a bare email address (such as "
                              f"alerts@example.com), not {email_from!r}.")
        if email_transport in (EMAIL_SES, EMAIL_SMTP) and not email_from:
            raise ConfigError(f"{PREFIX}NOTIFY_EMAIL_TRANSPORT={email_transport} needs {PREFIX}NOTIFY_EMAIL_FROM, "
                              "the address emails are sent from.")
        discreet_sender_name = env.str("NOTIFY_DISCREET_SENDER_NAME", "Secure Messages").strip()
        if PRACTICE_PLACEHOLDER in discreet_sender_name or not discreet_sender_name:
            raise ConfigError(f"{PREFIX}NOTIFY_DISCREET_SENDER_NAME must be a neutral name that does not name "
                              "the practice.")
        config = cls(
            common=common,
            public_url=public_url,
            auth_target=service_target(env, "auth"),
            consent_target=service_target(env, "consent"),
            messaging_target=service_target(env, "messaging"),
            email_transport=email_transport,
            sms_transport=sms_transport,
            email_from=email_from,
            sender_name=env.str("NOTIFY_SENDER_NAME", PRACTICE_PLACEHOLDER).strip() or PRACTICE_PLACEHOLDER,
            discreet_sender_name=discreet_sender_name,
            ses_configuration_set=env.optional("NOTIFY_SES_CONFIGURATION_SET"),
            smtp=_smtp(env) if email_transport == EMAIL_SMTP else None,
            aws=AwsSettings.load(env),
            send_timeout_seconds=env.float("NOTIFY_SEND_TIMEOUT_SECONDS", 10.0),
            burst_seconds=env.int("NOTIFY_BURST_SECONDS", 120),
            staff_unread_delay_seconds=env.int("NOTIFY_STAFF_UNREAD_DELAY_SECONDS", 900),
            staff_email_interval_seconds=env.int("NOTIFY_STAFF_EMAIL_INTERVAL_SECONDS", 3600),
            invitation_hold_seconds=env.int("NOTIFY_INVITATION_HOLD_SECONDS", 60),
            poll_interval_seconds=env.float("NOTIFY_POLL_INTERVAL_SECONDS", 1.0),
            batch_size=env.int("NOTIFY_BATCH_SIZE", 20),
            max_attempts=env.int("NOTIFY_MAX_ATTEMPTS", 5),
            retry_base_seconds=env.float("NOTIFY_RETRY_BASE_SECONDS", 10.0),
            retry_max_seconds=env.float("NOTIFY_RETRY_MAX_SECONDS", 300.0),
            claim_lease_seconds=env.float("NOTIFY_CLAIM_LEASE_SECONDS", 60.0),
            metrics_refresh_seconds=env.float("NOTIFY_METRICS_REFRESH_SECONDS", 5.0),
        )
        for name, value in (
            ("NOTIFY_SEND_TIMEOUT_SECONDS", config.send_timeout_seconds),
            ("NOTIFY_BURST_SECONDS", config.burst_seconds),
            ("NOTIFY_STAFF_UNREAD_DELAY_SECONDS", config.staff_unread_delay_seconds),
            ("NOTIFY_STAFF_EMAIL_INTERVAL_SECONDS", config.staff_email_interval_seconds),
            ("NOTIFY_INVITATION_HOLD_SECONDS", config.invitation_hold_seconds),
            ("NOTIFY_POLL_INTERVAL_SECONDS", config.poll_interval_seconds),
            ("NOTIFY_BATCH_SIZE", config.batch_size),
            ("NOTIFY_MAX_ATTEMPTS", config.max_attempts),
            ("NOTIFY_RETRY_BASE_SECONDS", config.retry_base_seconds),
            ("NOTIFY_RETRY_MAX_SECONDS", config.retry_max_seconds),
            ("NOTIFY_CLAIM_LEASE_SECONDS", config.claim_lease_seconds),
            ("NOTIFY_METRICS_REFRESH_SECONDS", config.metrics_refresh_seconds),
        ):
            if value < 0 or (value == 0 and name not in _ZERO_ALLOWED):
                raise ConfigError(f"{PREFIX}{name} must be greater than zero, not {value}.")
        if config.claim_lease_seconds <= 2 * config.send_timeout_seconds:
            # A job whose provider call outlives its lease could be claimed and sent by another worker.
            raise ConfigError(
                f"{PREFIX}NOTIFY_CLAIM_LEASE_SECONDS ({config.claim_lease_seconds:g}) must be more than twice "
                f"{PREFIX}NOTIFY_SEND_TIMEOUT_SECONDS ({config.send_timeout_seconds:g}), so that a send ends "
                "before another worker may take the job."
            )
        return config


def _transports(env: Env, common: CommonConfig) -> tuple[str, str]:
    """(email, sms). ``NOTIFY_TRANSPORT=mailbox`` (the first releases' setting) means both in the mailbox."""
    legacy = env.optional("NOTIFY_TRANSPORT")
    if legacy is not None and legacy != TRANSPORT_MAILBOX:
        raise ConfigError(f"{PREFIX}NOTIFY_TRANSPORT can only be mailbox (the development mailbox), not "
                          f"{legacy!r}: choose real providers with {PREFIX}NOTIFY_EMAIL_TRANSPORT and "
                          f"{PREFIX}NOTIFY_SMS_TRANSPORT.")
    fallback = legacy or (TRANSPORT_MAILBOX if common.development else None)
    email = env.optional("NOTIFY_EMAIL_TRANSPORT") or fallback
    sms = env.optional("NOTIFY_SMS_TRANSPORT") or fallback
    if email is None or sms is None:
        raise ConfigError(
            f"Production mode needs an email and SMS transport: set {PREFIX}NOTIFY_EMAIL_TRANSPORT (ses or smtp) "
            f"and {PREFIX}NOTIFY_SMS_TRANSPORT (sns, or none to send no texts); notify refuses to start rather "
            "than drop notifications."
        )
    if email not in EMAIL_TRANSPORTS:
        raise ConfigError(f"{PREFIX}NOTIFY_EMAIL_TRANSPORT must be one of {', '.join(EMAIL_TRANSPORTS)}, "
                          f"not {email!r}.")
    if sms not in SMS_TRANSPORTS:
        raise ConfigError(f"{PREFIX}NOTIFY_SMS_TRANSPORT must be one of {', '.join(SMS_TRANSPORTS)}, not {sms!r}.")
    if TRANSPORT_MAILBOX in (email, sms) and not common.development:
        raise ConfigError(
            "The mailbox transport (NOTIFY_TRANSPORT, NOTIFY_EMAIL_TRANSPORT or NOTIFY_SMS_TRANSPORT = mailbox) "
            "is the development mailbox and cannot be used in production mode: it would keep emails and texts "
            "in a table instead of sending them."
        )
    return email, sms


def _smtp(env: Env) -> SmtpSettings:
    host = env.optional("NOTIFY_SMTP_HOST")
    if not host:
        raise ConfigError(f"{PREFIX}NOTIFY_EMAIL_TRANSPORT=smtp needs {PREFIX}NOTIFY_SMTP_HOST.")
    security = env.str("NOTIFY_SMTP_SECURITY", SMTP_STARTTLS)
    if security not in (SMTP_STARTTLS, SMTP_TLS):
        raise ConfigError(f"{PREFIX}NOTIFY_SMTP_SECURITY must be starttls or tls (never plain text), "
                          f"not {security!r}.")
    port = env.int("NOTIFY_SMTP_PORT", 587 if security == SMTP_STARTTLS else 465)
    if not 0 < port < 65536:
        raise ConfigError(f"{PREFIX}NOTIFY_SMTP_PORT must be a port number, not {port}.")
    username = env.optional("NOTIFY_SMTP_USERNAME")
    password = env.optional("NOTIFY_SMTP_PASSWORD")
    if bool(username) != bool(password):
        raise ConfigError(f"{PREFIX}NOTIFY_SMTP_USERNAME and {PREFIX}NOTIFY_SMTP_PASSWORD (or _FILE) go together.")
    ca_file = env.optional("NOTIFY_SMTP_CA_FILE")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{PREFIX}NOTIFY_SMTP_CA_FILE points at {ca_file}, which does not exist.")
    return SmtpSettings(host=host, port=port, security=security, username=username, password=password,
                        ca_file=Path(ca_file) if ca_file else None)

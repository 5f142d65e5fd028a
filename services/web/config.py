"""Web edge settings.

The web edge owns no database, so it does not use ``CommonConfig.load`` (which
requires a database URL); it reads the same ``CONFIDANT_*`` variables for what
it shares with the services and a few of its own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import (
    DEFAULT_KEYS_DIR,
    PREFIX,
    ConfigError,
    Env,
    GrpcTls,
    listen_address,
    load_public_url,
    refuse_development_keys,
    refuse_plaintext_grpc,
    service_target,
)

GRPC_SERVICES = ("auth", "messaging", "consent", "notify")
DEFAULT_WEB_PORT = 8080
SESSION_COOKIE = "confidant_session"
# Over HTTPS the cookie carries the __Host- prefix: browsers then accept it only
# when it is Secure, has Path=/ and no Domain, so no subdomain can set or shadow it.
HOST_PREFIX = "__Host-"
# arn:aws:sns:us-east-1:123456789012:confidant-inbound-sms
SNS_TOPIC_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}")


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); a clear error otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{PREFIX}WEB_LISTEN must look like host:port, not {listen!r}.")
    return host.strip("[]"), int(port)


def _topic_arns(env: Env, name: str) -> tuple[str, ...]:
    """A comma-separated list of SNS topic ARNs (empty: none)."""
    arns = tuple(arn.strip() for arn in env.str(name, "").split(",") if arn.strip())
    for arn in arns:
        if not SNS_TOPIC_ARN.fullmatch(arn):
            raise ConfigError(f"{PREFIX}{name} must list SNS topic ARNs (arn:aws:sns:region:account:name), "
                              f"not {arn!r}.")
    return arns


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(env: Env) -> tuple[IpNetwork, ...]:
    """CONFIDANT_WEB_TRUSTED_PROXIES: comma-separated addresses or CIDRs (none by default)."""
    networks = []
    for item in env.str("WEB_TRUSTED_PROXIES", "").split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{PREFIX}WEB_TRUSTED_PROXIES must list addresses or CIDR ranges (such as "
                              f"10.0.0.0/8), not {item.strip()!r}.") from None
    return tuple(networks)


@dataclass(frozen=True)
class WebConfig:
    mode: str  # "development" or "production"
    listen: str
    public_url: str
    keys_dir: Path
    log_level: str = "INFO"
    # host:port of each gRPC service.
    targets: Mapping[str, str] = field(default_factory=dict)
    session_cookie_name: str = SESSION_COOKIE
    # Cookies only over HTTPS (on in production).
    secure_cookies: bool = False
    # Deadline of ordinary gRPC calls.
    rpc_deadline_seconds: float = 5.0
    # A live-update stream is re-opened at least this often (and before the access token expires).
    stream_deadline_seconds: float = 600.0
    # Seconds between Server-Sent Events keep-alive comments.
    keepalive_seconds: float = 15.0
    # PRODUCT.md "Message length": shown as the composer's counter; messaging enforces it.
    staff_message_max_length: int = 5000
    client_message_max_length: int = 1000
    shutdown_grace_seconds: float = 10.0
    # Inbound SMS webhooks (services/web/inbound_sms.py); each is off (404) while unset.
    # SNS topics whose messages are accepted at /webhooks/sms/sns.
    sns_topic_arns: tuple[str, ...] = ()
    # Twilio's auth token, which signs its posts to /webhooks/sms/twilio.
    twilio_auth_token: str = field(default="", repr=False)
    # SNS topics of Amazon SES delivery feedback accepted at /webhooks/ses (services/web/ses_feedback.py).
    ses_topic_arns: tuple[str, ...] = ()
    # TLS to the gRPC services (None: plaintext, development only).
    grpc_tls: GrpcTls | None = None
    # Where GET /metrics answers (None: not served).
    metrics_listen: str | None = None
    # Peers whose X-Forwarded-For and X-Request-Id are believed (the ingress controller).
    trusted_proxies: tuple[IpNetwork, ...] = ()

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    @classmethod
    def load(cls, env: Env) -> WebConfig:
        mode = env.str("MODE", "development")
        if mode not in ("development", "production"):
            raise ConfigError(f"{PREFIX}MODE must be development or production, not {mode!r}.")
        listen = env.str("WEB_LISTEN", f"127.0.0.1:{DEFAULT_WEB_PORT}")
        split_listen(listen)
        public_url = load_public_url(env, mode == "development")

        secure_cookies = env.bool("SECURE_COOKIES", mode == "production")
        default_cookie = f"{HOST_PREFIX}{SESSION_COOKIE}" if secure_cookies else SESSION_COOKIE
        session_cookie_name = env.str("SESSION_COOKIE_NAME", default_cookie)
        if session_cookie_name.startswith(HOST_PREFIX) and not secure_cookies:
            raise ConfigError(
                f"{PREFIX}SESSION_COOKIE_NAME may start with {HOST_PREFIX} only with secure cookies "
                "(browsers refuse such a cookie without Secure)."
            )

        sns_topic_arns = _topic_arns(env, "WEB_SNS_TOPIC_ARNS")
        ses_topic_arns = _topic_arns(env, "WEB_SES_TOPIC_ARNS")

        keys_dir = env.path("KEYS_DIR", DEFAULT_KEYS_DIR)
        grpc_tls = GrpcTls.load(env)
        if mode == "production":
            refuse_development_keys(env, keys_dir)
            refuse_plaintext_grpc(grpc_tls)

        positive_int, positive_float = env.positive_int, env.positive_float
        return cls(
            mode=mode,
            listen=listen,
            public_url=public_url,
            keys_dir=keys_dir,
            log_level=env.str("LOG_LEVEL", "INFO"),
            targets={svc: service_target(env, svc) for svc in GRPC_SERVICES},
            session_cookie_name=session_cookie_name,
            secure_cookies=secure_cookies,
            rpc_deadline_seconds=positive_float("WEB_RPC_DEADLINE_SECONDS", 5.0),
            stream_deadline_seconds=positive_float("WEB_STREAM_DEADLINE_SECONDS", 600.0),
            keepalive_seconds=positive_float("WEB_KEEPALIVE_SECONDS", 15.0),
            staff_message_max_length=positive_int("MESSAGING_STAFF_MAX_CHARS", 5000),
            client_message_max_length=positive_int("MESSAGING_CLIENT_MAX_CHARS", 1000),
            shutdown_grace_seconds=positive_float("SHUTDOWN_GRACE_SECONDS", 10.0),
            sns_topic_arns=sns_topic_arns,
            twilio_auth_token=env.str("WEB_TWILIO_AUTH_TOKEN", ""),
            ses_topic_arns=ses_topic_arns,
            grpc_tls=grpc_tls,
            metrics_listen=listen_address(env, "WEB_METRICS_LISTEN"),
            trusted_proxies=trusted_proxies(env),
        )

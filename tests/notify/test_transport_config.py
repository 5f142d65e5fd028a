"""Choosing notify's transports, and the queue metrics, without starting a service."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from services.common.clock import ManualClock
from services.common.config import ConfigError, Env
from services.common.db import open_pool
from services.notify.config import NotifyConfig
from services.notify.metrics import NotifyMetrics
from services.notify.storage import NotifyStorage
from services.notify.transports import (
    MailboxTransport,
    PermanentError,
    SesTransport,
    SmtpTransport,
    SnsTransport,
    TransientError,
    aws_error,
    build_transports,
)
from tests.runtime.production import production_settings
from tests.support import service_env

BASE = {"notify_database_url": "postgresql://unused"}
SES = {"notify_email_transport": "ses", "notify_email_from": "alerts@confidant.example"}


def load(where: Path | Mapping[str, str], **settings) -> NotifyConfig:
    """Development with the test keys directory ``where``, or production over ``where``'s
    complete production settings (the ``production`` fixture)."""
    if isinstance(where, Path):
        return NotifyConfig.load(service_env(where, **settings))
    return NotifyConfig.load(Env({**where, **{f"CONFIDANT_{key.upper()}": value for key, value in settings.items()}}))


def refused(where: Path | Mapping[str, str], words: str, **settings) -> None:
    with pytest.raises(ConfigError, match=words):
        load(where, **settings)


@pytest.fixture
def production(tmp_path) -> dict[str, str]:
    """Everything production mode needs besides notify's transports (tests/runtime/production.py)."""
    return {**production_settings(tmp_path / "production"), "CONFIDANT_NOTIFY_DATABASE_URL": "postgresql://unused"}


def test_development_uses_the_mailbox_and_the_old_setting_still_works(keys_dir):
    for settings in ({}, {"notify_transport": "mailbox"}):
        config = load(keys_dir, **BASE, **settings)
        assert (config.email_transport, config.sms_transport, config.transport) == ("mailbox", "mailbox", "mailbox")
        transports = build_transports(config, storage=None)
        assert isinstance(transports.email, MailboxTransport) and isinstance(transports.sms, MailboxTransport)
    assert load(keys_dir, **BASE).metrics_listen is None  # metrics are off unless asked for
    refused(keys_dir, "NOTIFY_TRANSPORT can only be mailbox", **BASE, notify_transport="ses")


def test_production_needs_real_providers_and_their_settings(keys_dir, production):
    refused(production, "Production mode needs an email and SMS transport")
    refused(production, "Production mode needs an email and SMS transport", **SES)
    refused(production, "cannot be used in production", **SES, notify_sms_transport="mailbox")
    refused(production, "needs CONFIDANT_NOTIFY_EMAIL_FROM", notify_email_transport="ses",
            notify_sms_transport="sns")
    refused(production, "must be a bare email address", notify_email_transport="ses",
            notify_email_from="Lakeside <alerts@x.test>", notify_sms_transport="sns")
    refused(keys_dir, "NOTIFY_EMAIL_TRANSPORT must be one of ses, smtp, mailbox", **BASE,
            notify_email_transport="sendgrid")
    refused(keys_dir, "NOTIFY_SMS_TRANSPORT must be one of sns, mailbox, none", **BASE, notify_sms_transport="twilio")

    config = load(production, **SES, notify_sms_transport="sns", aws_region="eu-west-1",
                  notify_ses_configuration_set="confidant-feedback")
    assert (config.email_transport, config.sms_transport, config.aws.region) == ("ses", "sns", "eu-west-1")
    transports = build_transports(config, storage=None)
    assert isinstance(transports.email, SesTransport) and isinstance(transports.sms, SnsTransport)
    # No texts at all is a choice a deployment may make.
    assert build_transports(load(production, **SES, notify_sms_transport="none"), None).sms is None


def test_smtp_settings(production, tmp_path):
    smtp = {"notify_email_transport": "smtp", "notify_sms_transport": "none",
            "notify_email_from": "alerts@lakeside.test"}
    refused(production, "needs CONFIDANT_NOTIFY_SMTP_HOST", **smtp)
    refused(production, "starttls or tls", **smtp, notify_smtp_host="mail.lakeside.test", notify_smtp_security="none")
    refused(production, "go together", **smtp, notify_smtp_host="mail.lakeside.test", notify_smtp_username="u")
    refused(production, "does not exist", **smtp, notify_smtp_host="mail.lakeside.test",
            notify_smtp_ca_file=str(tmp_path / "missing.pem"))
    secret = tmp_path / "smtp-password"
    secret.write_text("relay-secret\n")
    config = load(production, **smtp, notify_smtp_host="mail.lakeside.test", notify_smtp_username="confidant",
                  notify_smtp_password_file=str(secret))
    assert config.smtp is not None
    assert (config.smtp.port, config.smtp.security, config.smtp.password) == (587, "starttls", "relay-secret")
    assert "relay-secret" not in repr(config.smtp)
    assert load(production, **smtp, notify_smtp_host="h", notify_smtp_security="tls").smtp.port == 465
    assert isinstance(build_transports(config, None).email, SmtpTransport)


def test_a_send_must_end_inside_its_lease_and_the_names_are_checked(keys_dir):
    refused(keys_dir, "must be more than twice", **BASE, notify_claim_lease_seconds="10",
            notify_send_timeout_seconds="5")
    assert load(keys_dir, **BASE, notify_claim_lease_seconds="11", notify_send_timeout_seconds="5")
    refused(keys_dir, "NOTIFY_METRICS_LISTEN must be host:port", **BASE, notify_metrics_listen="9464")
    assert load(keys_dir, **BASE, notify_metrics_listen="0.0.0.0:9464").metrics_listen == "0.0.0.0:9464"
    refused(keys_dir, "must be a neutral name", **BASE, notify_discreet_sender_name="{practice} alerts")
    assert load(keys_dir, **BASE, notify_sender_name="{practice} secure messages").sender_name == (
        "{practice} secure messages")


def test_provider_errors_are_classified_without_phi():
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(code: str, status: int, message: str = "Address jordan@client.test rejected") -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail")

    for code, status in (("Throttling", 400), ("TooManyRequestsException", 429), ("InternalFailure", 500),
                         ("Whatever", 503), ("SendingPausedException", 400)):
        assert isinstance(aws_error("ses", client_error(code, status)), TransientError), code
    for code in ("MessageRejected", "BadRequestException", "InvalidParameter"):
        error = aws_error("ses", client_error(code, 400))
        assert isinstance(error, PermanentError) and error.reason == f"ses {code}"
        assert "jordan" not in str(error)
    assert aws_error("ses", client_error("<script>bad code</script>", 400)).reason == "ses scriptbadcodescript"
    assert aws_error("sns", EndpointConnectionError(endpoint_url="https://sns")).reason == (
        "sns EndpointConnectionError")


async def test_the_queue_gauges_measure_depth_and_the_oldest_due_job(fresh_database):
    clock = ManualClock()
    pool = await open_pool(await fresh_database("notify"))
    try:
        storage = NotifyStorage(pool, clock)
        metrics = NotifyMetrics()
        async with storage.transaction() as conn:
            await storage.add_sms_reply_job(conn, "reply:a", "+12125550101", "You are subscribed.")
        await clock.advance(30)
        async with storage.transaction() as conn:
            await storage.add_sms_reply_job(conn, "reply:b", "+12125550102", "You are subscribed.")
        await metrics.measure_queue(storage)
        exposition = metrics.metrics.exposition().decode()
        assert "confidant_notify_queue_depth 2.0" in exposition
        assert "confidant_notify_oldest_due_job_age_seconds 30.0" in exposition
        assert "+1212" not in exposition
    finally:
        await pool.close()

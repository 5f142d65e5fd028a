"""How notifications leave: Amazon SES or SMTP for email, Amazon SNS for texts, or the development mailbox.

Each transport hands one email or text to its provider and returns the id the
provider gave it (stored on the job; bounce and delivery reports are matched by
it), or raises a ``ProviderError``: ``TransientError`` when trying again later
can succeed (throttling, a 5xx, a connection that failed, an account-level
problem an operator fixes), ``PermanentError`` when this message will never be
taken (a rejected or invalid address, an SMTP 5xx). Reasons name the provider
and its error code only: never an address, a number or a text.

boto3 is synchronous: its calls run in a thread, with botocore's own retries off
(the worker retries, with backoff on its clock, and counts the attempts).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Protocol

import aiosmtplib
from botocore.exceptions import BotoCoreError, ClientError

from services.common import aws
from services.notify.config import (
    EMAIL_SES,
    EMAIL_SMTP,
    SMS_NONE,
    SMS_SNS,
    SMTP_TLS,
    TRANSPORT_MAILBOX,
    NotifyConfig,
    SmtpSettings,
)
from services.notify.storage import NotifyStorage


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text_body: str
    html_body: str
    # The From display name: the practice, or the neutral name (discreet alerts); never the vendor's.
    sender_name: str


@dataclass(frozen=True)
class Sms:
    to: str  # E.164
    body: str


class ProviderError(Exception):
    """The provider did not take the message; ``reason`` is PHI-free ("ses MessageRejected", "smtp 550")."""

    permanent = False
    # Set by the worker: the failure came while the provider was already failing (an outage).
    outage = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(ProviderError):
    """Trying again later can succeed."""


class PermanentError(ProviderError):
    """This message will never be taken: recorded as failed, never retried."""

    permanent = True


class EmailTransport(Protocol):
    name: str

    async def send_email(self, email: Email) -> str:
        """Hand an email over; return the provider's id for it."""


class SmsTransport(Protocol):
    name: str

    async def send_sms(self, sms: Sms) -> str:
        """Hand a text over; return the provider's id for it."""


@dataclass(frozen=True)
class Transports:
    email: EmailTransport
    # None: this deployment sends no texts (NOTIFY_SMS_TRANSPORT=none).
    sms: SmsTransport | None


class MailboxTransport:
    """Development mode: "delivers" into the mailbox table that the web edge shows at /dev/mailbox."""

    name = TRANSPORT_MAILBOX

    def __init__(self, storage: NotifyStorage) -> None:
        self._storage = storage

    async def send_email(self, email: Email) -> str:
        item = await self._storage.add_to_mailbox(
            "email", email.to, email.subject, email.text_body, email.html_body, sender=email.sender_name)
        return f"mailbox-{item}"

    async def send_sms(self, sms: Sms) -> str:
        return f"mailbox-{await self._storage.add_to_mailbox('sms', sms.to, '', sms.body, '')}"


# -- Amazon (boto3) ------------------------------------------------------------------------

# Codes that say "not now" rather than "not this message": throttling, the provider's own
# failures, and account-level states (credentials, a paused account) an operator fixes. The
# backlog waits for them instead of failing every job.
_AWS_TRANSIENT = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "LimitExceededException", "RequestLimitExceeded", "KMSThrottlingException", "KMSThrottling",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalError",
    "InternalServerError", "InternalServiceError", "InternalErrorException", "RequestTimeout",
    "SendingPausedException", "AccountSuspendedException", "MailFromDomainNotVerifiedException",
    "NotFoundException", "ConfigurationSetDoesNotExistException",
    "AccessDenied", "AccessDeniedException", "AuthorizationError", "UnrecognizedClientException",
    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
})
_SAFE_CODE = re.compile(r"[^A-Za-z0-9._-]")


def aws_error(service: str, exc: Exception) -> ProviderError:
    """Classify a botocore error; the reason keeps only the service and the error code."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = _SAFE_CODE.sub("", str(error.get("Code", "")))[:64] or "Unknown"
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        reason = f"{service} {code}"
        if code in _AWS_TRANSIENT or status == 429 or status >= 500:
            return TransientError(reason)
        return PermanentError(reason)
    return TransientError(f"{service} {type(exc).__name__}")


class SesTransport:
    """Amazon SES v2 ``SendEmail``: the text and HTML parts, from our address under the sender's name."""

    name = EMAIL_SES

    def __init__(self, client, from_address: str, configuration_set: str | None = None) -> None:
        self._client = client
        self._from = from_address
        self._configuration_set = configuration_set

    async def send_email(self, email: Email) -> str:
        params = {
            "FromEmailAddress": formataddr((email.sender_name, self._from), charset="utf-8"),
            "Destination": {"ToAddresses": [email.to]},
            "Content": {"Simple": {
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": email.text_body, "Charset": "UTF-8"},
                         "Html": {"Data": email.html_body, "Charset": "UTF-8"}},
            }},
        }
        if self._configuration_set:
            params["ConfigurationSetName"] = self._configuration_set
        try:
            reply = await asyncio.to_thread(self._client.send_email, **params)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error("ses", exc) from None  # botocore's message may quote the address
        return reply["MessageId"]


class SnsTransport:
    """Amazon SNS ``Publish`` to a phone number, as a transactional text."""

    name = SMS_SNS

    def __init__(self, client) -> None:
        self._client = client

    async def send_sms(self, sms: Sms) -> str:
        try:
            reply = await asyncio.to_thread(
                self._client.publish, PhoneNumber=sms.to, Message=sms.body,
                MessageAttributes={"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}},
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error("sns", exc) from None
        return reply["MessageId"]


# -- SMTP ----------------------------------------------------------------------------------


class SmtpTransport:
    """A practice's own mail server, over STARTTLS or implicit TLS (never plain text), one connection per email."""

    name = EMAIL_SMTP

    def __init__(self, settings: SmtpSettings, from_address: str, timeout_seconds: float) -> None:
        self._settings = settings
        self._from = from_address
        self._timeout = timeout_seconds
        self._tls = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)

    async def send_email(self, email: Email) -> str:
        message = EmailMessage()
        message["From"] = formataddr((email.sender_name, self._from), charset="utf-8")
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = formatdate(usegmt=True)
        message_id = make_msgid(domain=self._from.rpartition("@")[2])
        message["Message-ID"] = message_id
        message.set_content(email.text_body)
        message.add_alternative(email.html_body, subtype="html")
        implicit = self._settings.security == SMTP_TLS
        try:
            await aiosmtplib.send(
                message, hostname=self._settings.host, port=self._settings.port,
                username=self._settings.username, password=self._settings.password,
                use_tls=implicit, start_tls=not implicit, tls_context=self._tls, timeout=self._timeout,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The relay refused our credentials: every email would be, so the backlog waits for the fix.
            raise TransientError(f"smtp {exc.code} authentication") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _smtp_code(exc.recipients[0].code if exc.recipients else 550) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_code(exc.code) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientError(f"smtp {type(exc).__name__}") from None
        return message_id.strip("<>")


def _smtp_code(code: int) -> ProviderError:
    """5xx: this message will never be taken; 4xx (greylisting, a full mailbox): later."""
    return PermanentError(f"smtp {code}") if 500 <= code < 600 else TransientError(f"smtp {code}")


def build_transports(config: NotifyConfig, storage: NotifyStorage) -> Transports:
    timeout = config.send_timeout_seconds
    if config.email_transport == EMAIL_SES:
        email: EmailTransport = SesTransport(
            aws.client("sesv2", config.aws, timeout, max_attempts=0), config.email_from,
            config.ses_configuration_set)
    elif config.email_transport == EMAIL_SMTP:
        assert config.smtp is not None  # NotifyConfig.load requires its settings
        email = SmtpTransport(config.smtp, config.email_from, timeout)
    elif config.email_transport == TRANSPORT_MAILBOX:
        email = MailboxTransport(storage)
    else:  # NotifyConfig.load refuses anything else; this guards hand-built configurations.
        raise ValueError(f"Notify has no email transport named {config.email_transport!r}.")
    sms: SmsTransport | None
    if config.sms_transport == SMS_SNS:
        sms = SnsTransport(aws.client("sns", config.aws, timeout, max_attempts=0))
    elif config.sms_transport == TRANSPORT_MAILBOX:
        sms = MailboxTransport(storage)
    elif config.sms_transport == SMS_NONE:
        sms = None
    else:
        raise ValueError(f"Notify has no SMS transport named {config.sms_transport!r}.")
    return Transports(email=email, sms=sms)

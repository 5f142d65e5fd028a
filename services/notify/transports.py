"""How notifications leave: the transport interface and the development mailbox.

Production transports (Amazon SES for email, SNS for SMS) implement the same
interface in a later issue; the configuration refuses production mode until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.notify.config import TRANSPORT_MAILBOX, NotifyConfig
from services.notify.storage import NotifyStorage


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text_body: str
    html_body: str


@dataclass(frozen=True)
class Sms:
    to: str  # E.164
    body: str


class Transport(Protocol):
    async def send_email(self, email: Email) -> None:
        """Hand an email over for delivery; raise when it was not accepted."""

    async def send_sms(self, sms: Sms) -> None:
        """Hand a text over for delivery; raise when it was not accepted."""


class DevMailboxTransport:
    """Development mode: "delivers" into the mailbox table that the web edge shows at /dev/mailbox."""

    def __init__(self, storage: NotifyStorage) -> None:
        self._storage = storage

    async def send_email(self, email: Email) -> None:
        await self._storage.add_to_mailbox("email", email.to, email.subject, email.text_body, email.html_body)

    async def send_sms(self, sms: Sms) -> None:
        await self._storage.add_to_mailbox("sms", sms.to, "", sms.body, "")


def build_transport(config: NotifyConfig, storage: NotifyStorage) -> Transport:
    if config.transport == TRANSPORT_MAILBOX:
        return DevMailboxTransport(storage)
    # NotifyConfig.load refuses anything else; this guards hand-built configurations.
    raise ValueError(f"Notify has no transport named {config.transport!r}.")

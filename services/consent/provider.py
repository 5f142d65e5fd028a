"""What the SMS provider knows about a number: its own opt-out list.

A client who replied STOP to the provider (or whose carrier blocks us) stays opted
out *there* even after the clinician deletes and re-adds the number in Confidant:
texts would silently fail. So when a save gives consent to a number, consent asks
the provider (Amazon SNS ``CheckIfPhoneNumberIsOptedOut``) and, if needed, asks it to
opt the number in again (``OptInPhoneNumber``, which AWS allows once per number per
30 days). boto3 is synchronous: its calls run in a worker thread, with bounded
timeouts (services/common/aws.py). No number is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from services.common import aws

log = logging.getLogger("confidant.consent")

# Answers that mean "try later" rather than "no" (after botocore's own retries).
_TRANSIENT = frozenset({
    "InternalError", "InternalErrorException", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
    "Throttled", "ThrottledException", "Throttling", "ThrottlingException",
})


class ProviderUnavailable(Exception):
    """The provider could not be asked (unreachable, timed out, or an error worth retrying)."""


class OptInRefused(Exception):
    """The provider refused to opt the number in (e.g. within 30 days of the last request)."""


class SmsProvider(Protocol):
    name: str

    async def is_opted_out(self, phone: str) -> bool: ...

    async def opt_in(self, phone: str) -> None: ...


class SnsProvider:
    """Amazon SNS's opt-out list for SMS."""

    name = "sns"

    def __init__(self, client) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: aws.AwsSettings, timeout_seconds: float = 5.0) -> SnsProvider:
        return cls(aws.client("sns", settings, timeout_seconds))

    async def is_opted_out(self, phone: str) -> bool:
        try:
            reply = await asyncio.to_thread(self._client.check_if_phone_number_is_opted_out, phoneNumber=phone)
        except ClientError as exc:
            raise ProviderUnavailable(_code(exc)) from None
        except BotoCoreError as exc:
            raise ProviderUnavailable(type(exc).__name__) from None
        return bool(reply.get("isOptedOut"))

    async def opt_in(self, phone: str) -> None:
        try:
            await asyncio.to_thread(self._client.opt_in_phone_number, phoneNumber=phone)
        except ClientError as exc:
            code = _code(exc)
            if code in _TRANSIENT:
                raise ProviderUnavailable(code) from None
            raise OptInRefused(code) from None
        except BotoCoreError as exc:
            raise ProviderUnavailable(type(exc).__name__) from None


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "") or "unknown"

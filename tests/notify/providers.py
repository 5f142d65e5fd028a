"""Amazon SES and SNS for notify's tests: moto in server mode behind a fault-injecting proxy.

notify talks to the proxy exactly as to AWS (``CONFIDANT_AWS_ENDPOINT_URL``); the proxy
forwards to moto unless a test makes it throttle, fail or hold requests. What moto
accepted is read back over HTTP from its ``/moto-api/data.json`` (SES messages, SNS texts).
moto's state is per process and shared by every moto server in it, so tests count only
the addresses and numbers they made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp

from tests.aws import client, moto_server
from tests.faults import FaultProxy

SENDER_DOMAIN = "confidant.test"
EMAIL_FROM = f"alerts@{SENDER_DOMAIN}"


@dataclass
class Aws:
    endpoint: str  # moto itself
    proxy: FaultProxy  # what notify talks to

    async def data(self) -> dict:
        async with aiohttp.ClientSession() as http, http.get(f"{self.endpoint}/moto-api/data.json") as resp:
            assert resp.status == 200
            return json.loads(await resp.text())

    async def emails(self, to: Iterable[str]) -> list[dict]:
        """What SES accepted for these addresses: {id, source, destinations, subject, body}."""
        wanted = set(to)
        messages = (await self.data()).get("ses", {}).get("Message", [])
        return [m for m in messages if wanted & set(m["destinations"].get("ToAddresses", []))]

    async def texts(self, to: Iterable[str]) -> list[dict]:
        """What SNS accepted for these numbers: {message_id, phone_number, message}."""
        wanted = set(to)
        return [m for m in (await self.data()).get("sns", {}).get("SMS", []) if m["phone_number"] in wanted]

    async def wait_for_emails(self, to: Iterable[str], count: int, within: float = 20.0) -> list[dict]:
        to = list(to)
        deadline = time.monotonic() + within
        while True:
            found = await self.emails(to)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"moto has {len(found)} of {count} emails after {within}s")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def aws_with_faults() -> AsyncIterator[Aws]:
    """moto (with our sending domain verified in SES) and the proxy in front of it."""
    with moto_server() as endpoint:
        await asyncio.to_thread(client("ses", endpoint).verify_domain_identity, Domain=SENDER_DOMAIN)
        proxy = FaultProxy(endpoint)
        await proxy.start()
        try:
            yield Aws(endpoint, proxy)
        finally:
            await proxy.stop()


def provider_settings(aws: Aws, **overrides: str) -> dict[str, str]:
    """notify's settings for SES and SNS through the proxy, with quick retries for tests."""
    return {
        "notify_email_transport": "ses",
        "notify_sms_transport": "sns",
        "notify_email_from": EMAIL_FROM,
        "aws_endpoint_url": aws.proxy.url,
        "notify_poll_interval_seconds": "0.05",
        "notify_retry_base_seconds": "0.05",
        "notify_retry_max_seconds": "0.4",
        "notify_send_timeout_seconds": "3",
        "notify_claim_lease_seconds": "10",
        **overrides,
    }

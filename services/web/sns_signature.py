"""Verifying Amazon SNS HTTP(S) messages before anything acts on them.

SNS signs every message it posts (Notification, SubscriptionConfirmation,
UnsubscribeConfirmation) with the private key of a certificate it publishes at
``SigningCertURL``: SignatureVersion "1" is SHA1withRSA, "2" SHA256withRSA, over a
canonical string of the message's fields in a documented order. Anyone can post
a message that *claims* such a URL, so the URL is checked (https, exactly
``sns.<region>.amazonaws.com``, no userinfo or port) before anything is fetched;
the certificate is fetched over verified TLS with a short timeout and a size cap,
cached by URL, and its validity dates are checked on every use. The TopicArn must
be on the configured allow-list, so a valid message from somebody else's topic is
refused too.

The fetcher is injectable (``Fetcher``), so tests serve a test CA's certificate and
can see that a bad URL leads to no fetch at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The fields each type signs, in the documented order ("Subject" only when the message has one).
_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    UNSUBSCRIBE_CONFIRMATION: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# sns.us-east-1.amazonaws.com, sns.ap-southeast-2.amazonaws.com, sns.us-gov-west-1.amazonaws.com.
SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\.amazonaws\.com")

# SNS certificates are ~2 KB of PEM; anything far larger is not one.
MAX_CERTIFICATE_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
# Certificates kept (SNS uses one per region, rotated rarely); the oldest goes first.
CACHE_SIZE = 32


class SnsRefused(Exception):
    """The message is not authentic (or not for us): answer 403 and change nothing. The reason is for
    logs and carries no message content."""


class SnsUnavailable(Exception):
    """The certificate could not be fetched now (SNS retries): answer 503 and change nothing."""


class Fetcher(Protocol):
    """GETs an https URL on an SNS host and returns the body (at most ``max_bytes``)."""

    async def __call__(self, url: str, max_bytes: int) -> bytes: ...


def trusted_sns_url(url: object, *, certificate: bool = False) -> bool:
    """https on exactly sns.<region>.amazonaws.com, nothing else in the authority (no userinfo,
    no port), and for a certificate a path ending in .pem. Decided on the parsed URL alone."""
    if not isinstance(url, str) or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    # The whole authority must be the host: "user@host", "host:443", "host." are all refused.
    if parts.scheme != "https" or not SNS_HOST.fullmatch(parts.netloc):
        return False
    if certificate and (not parts.path.endswith(".pem") or parts.query or parts.fragment):
        return False
    return True


def canonical_string(message: dict) -> bytes:
    """The bytes SNS signed: "Name\\nvalue\\n" for each signed field, in order."""
    kind = message.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise SnsRefused("unknown message type")
    out: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise SnsRefused(f"missing {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


class HttpsFetcher:
    """The real fetcher: aiohttp over verified TLS, no redirects, a short timeout and a size cap."""

    def __init__(self, timeout: float = FETCH_TIMEOUT_SECONDS,
                 connector: Callable[[], aiohttp.BaseConnector] | None = None) -> None:
        """``connector``: tests route the SNS host to a local TLS server their own CA signed."""
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connector = connector
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, max_bytes: int) -> bytes:
        if not trusted_sns_url(url):  # defence in depth: callers check first
            raise SnsRefused("untrusted URL")
        if self._session is None:
            connector = self._connector() if self._connector is not None else None
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        try:
            async with self._session.get(url, allow_redirects=False, ssl=True) as resp:
                if resp.status != 200:
                    raise SnsUnavailable(f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(8192):
                    body += chunk
                    if len(body) > max_bytes:
                        raise SnsRefused("response too large")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsUnavailable(type(exc).__name__) from exc
        return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SnsVerifier:
    """Checks a parsed SNS message: topic, certificate URL, certificate, signature."""

    def __init__(self, fetcher: Fetcher, topic_arns: Iterable[str],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.fetcher = fetcher
        self.topic_arns = frozenset(topic_arns)
        self._now = now
        self._certificates: dict[str, x509.Certificate] = {}
        self._lock = asyncio.Lock()

    async def verify(self, message: dict) -> None:
        """Returns when the message is authentic and from an allowed topic; raises SnsRefused
        (or SnsUnavailable) otherwise. Every check that needs no network comes first."""
        topic, version = message.get("TopicArn"), message.get("SignatureVersion")
        if not isinstance(topic, str) or topic not in self.topic_arns:
            raise SnsRefused("topic not allowed")
        algorithm = _HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise SnsRefused("unsupported SignatureVersion")
        cert_url = message.get("SigningCertURL")
        if not trusted_sns_url(cert_url, certificate=True):
            raise SnsRefused("untrusted SigningCertURL")
        signed = canonical_string(message)
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SnsRefused("malformed Signature") from None
        if not signature:
            raise SnsRefused("missing Signature")
        certificate = await self.certificate(str(cert_url))
        now = self._now()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsRefused("certificate not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRefused("certificate key is not RSA")
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsRefused("bad signature") from None

    async def certificate(self, url: str) -> x509.Certificate:
        """The certificate at a trusted URL, fetched once and then served from the cache."""
        cached = self._certificates.get(url)
        if cached is not None:
            return cached
        async with self._lock:  # concurrent first deliveries fetch once
            cached = self._certificates.get(url)
            if cached is not None:
                return cached
            pem = await self.fetcher(url, MAX_CERTIFICATE_BYTES)
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise SnsRefused("not a PEM certificate") from None
            if len(self._certificates) >= CACHE_SIZE:
                self._certificates.pop(next(iter(self._certificates)))
            self._certificates[url] = certificate
            return certificate

    async def confirm_subscription(self, message: dict) -> None:
        """Confirm a verified SubscriptionConfirmation by visiting its SubscribeURL (an SNS host only)."""
        url = message.get("SubscribeURL")
        if not trusted_sns_url(url):
            raise SnsRefused("untrusted SubscribeURL")
        await self.fetcher(str(url), MAX_CERTIFICATE_BYTES)

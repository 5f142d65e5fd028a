"""Amazon SNS message signatures (services/web/sns_signature.py), against a test CA.

A test CA issues an SNS-like signing certificate; messages of all three types are signed
with SignatureVersion 1 (SHA1withRSA) and 2 (SHA256withRSA) and the certificate is served
by an injected fetcher that records every URL it is asked for. Valid messages pass;
changed fields, a wrong SignatureVersion, an expired certificate, a topic that is not on
the list are refused; a certificate URL over http or on a look-alike host is refused
without any fetch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.web import sns_signature
from services.web.sns_signature import HttpsFetcher, SnsRefused, SnsUnavailable, SnsVerifier

REGION = "us-east-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:confidant-inbound-sms"
OTHER_TOPIC = f"arn:aws:sns:{REGION}:210987654321:someone-elses-topic"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
EXPIRED_CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-expired.pem"
FUTURE_CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-future.pem"
IMPOSTOR_CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-impostor.pem"
SUBSCRIBE_URL = (f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"
                 "&Token=2336412f37fb687f5d51e6e2425dacbba2f6a0d4")

LOOK_ALIKES = [
    f"http://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
    f"https://sns.{REGION}.amazonaws.com.evil.com/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.com@evil.com/SimpleNotificationService.pem",
    f"https://evil.com@sns.{REGION}.amazonaws.com/SimpleNotificationService.pem",
    f"https://evil.com/sns.{REGION}.amazonaws.com/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.com:8443/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.com:443/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.com./SimpleNotificationService.pem",
    f"https://sns-{REGION}.amazonaws.com/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.co/SimpleNotificationService.pem",
    f"https://sns.{REGION}.evilamazonaws.com/SimpleNotificationService.pem",
    f"https://xsns.{REGION}.amazonaws.com/SimpleNotificationService.pem",
    "https://sns.amazonaws.com/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.com\\@evil.com/SimpleNotificationService.pem",
    f"//sns.{REGION}.amazonaws.com/SimpleNotificationService.pem",
    f"ftp://sns.{REGION}.amazonaws.com/SimpleNotificationService.pem",
    f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService.txt",
    f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService.pem?x=1",
    f"https://sns.{REGION}.amazonaws.com/Simple Notification.pem",
    "",
]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class SigningCA:
    """A CA and SNS-like signing certificates it issued (2048-bit RSA, as SNS uses)."""

    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    signing_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    impostor_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name("Confidant Test CA")).issuer_name(_name("Confidant Test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=2)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pems = {
            CERT_URL: self.issue(self.signing_key, now - timedelta(days=1), now + timedelta(days=30)),
            EXPIRED_CERT_URL: self.issue(self.signing_key, now - timedelta(days=60), now - timedelta(days=1)),
            FUTURE_CERT_URL: self.issue(self.signing_key, now + timedelta(days=1), now + timedelta(days=60)),
            IMPOSTOR_CERT_URL: self.issue(self.impostor_key, now - timedelta(days=1), now + timedelta(days=30)),
        }

    def issue(self, key: rsa.RSAPrivateKey, not_before: datetime, not_after: datetime) -> bytes:
        cert = (
            x509.CertificateBuilder().subject_name(_name("sns.amazonaws.com")).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


class RecordingFetcher:
    """Serves the test CA's certificates and answers subscription confirmations; records every URL."""

    def __init__(self, pems: dict[str, bytes]) -> None:
        self.pems = dict(pems)
        self.calls: list[str] = []

    async def __call__(self, url: str, max_bytes: int) -> bytes:
        self.calls.append(url)
        if url in self.pems:
            return self.pems[url]
        if "Action=ConfirmSubscription" in url:
            return b"<ConfirmSubscriptionResponse/>"
        raise SnsUnavailable("HTTP 404")

    def subscriptions_confirmed(self) -> list[str]:
        return [url for url in self.calls if "Action=ConfirmSubscription" in url]


def sign(message: dict, key: rsa.RSAPrivateKey, version: str = "2", cert_url: str = CERT_URL) -> dict:
    """The message as SNS would post it: SignatureVersion, SigningCertURL and Signature added."""
    signed = {**message, "SignatureVersion": version, "SigningCertURL": cert_url}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns_signature.canonical_string(signed), padding.PKCS1v15(), algorithm)
    return {**signed, "Signature": base64.b64encode(signature).decode()}


def sms_notification(body: str = "STOP", *, from_number: str = "+12125550101", inbound_id: str = "",
                     topic: str = TOPIC, subject: str | None = None) -> dict:
    """An unsigned SNS Notification carrying a two-way SMS, as AWS End User Messaging sends it."""
    message = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps({
            "originationNumber": from_number,
            "destinationNumber": "+18005550199",
            "messageKeyword": "KEYWORD_123456789012",
            "messageBody": body,
            "inboundMessageId": inbound_id or str(uuid.uuid4()),
            "previousPublishedMessageId": "",
        }),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:x",
    }
    if subject is not None:
        message["Subject"] = subject
    return message


def subscription_message(kind: str = "SubscriptionConfirmation", topic: str = TOPIC,
                         subscribe_url: str = SUBSCRIBE_URL) -> dict:
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e2425dacbba2f6a0d4",
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}. To confirm, visit the SubscribeURL.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-11-27T10:00:00.000Z",
    }


@pytest.fixture(scope="module")
def ca() -> SigningCA:
    return SigningCA()


@pytest.fixture
def fetcher(ca) -> RecordingFetcher:
    return RecordingFetcher(ca.pems)


@pytest.fixture
def verifier(fetcher) -> SnsVerifier:
    return SnsVerifier(fetcher, [TOPIC])


ALL_TYPES = {
    "notification": lambda: sms_notification(),
    "notification_with_subject": lambda: sms_notification(subject="Inbound SMS"),
    "subscription_confirmation": lambda: subscription_message(),
    "unsubscribe_confirmation": lambda: subscription_message("UnsubscribeConfirmation"),
}


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("kind", sorted(ALL_TYPES))
async def test_messages_of_every_type_signed_with_either_version_pass(ca, fetcher, verifier, kind, version):
    message = sign(ALL_TYPES[kind](), ca.signing_key, version)
    await verifier.verify(message)
    # The certificate was fetched once and is cached by URL.
    await verifier.verify(sign(ALL_TYPES[kind](), ca.signing_key, version))
    assert fetcher.calls == [CERT_URL]


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("kind", sorted(ALL_TYPES))
async def test_a_change_to_any_signed_field_is_refused(ca, verifier, kind, version):
    message = sign(ALL_TYPES[kind](), ca.signing_key, version)
    signed_fields = [name for name in ("Message", "MessageId", "Subject", "SubscribeURL", "Timestamp", "Token",
                                       "TopicArn", "Type") if name in message]
    for name in signed_fields:
        value = message[name]
        changed = value[:-1] + ("X" if value[-1] != "X" else "Y")
        if name == "TopicArn":
            # A topic on the list, so that the signature is what refuses it.
            verifier.topic_arns = frozenset({TOPIC, changed})
        with pytest.raises(SnsRefused):
            await verifier.verify({**message, name: changed})
    # The same message unchanged still passes (the refusals were about the changes).
    verifier.topic_arns = frozenset({TOPIC})
    await verifier.verify(message)


async def test_a_changed_sms_inside_the_message_is_refused(ca, verifier):
    message = sign(sms_notification("HELP"), ca.signing_key)
    sms = json.loads(message["Message"])
    with pytest.raises(SnsRefused, match="bad signature"):
        await verifier.verify({**message, "Message": json.dumps({**sms, "messageBody": "STOP"})})


async def test_a_wrong_signature_version_is_refused(ca, fetcher, verifier):
    v2 = sign(sms_notification(), ca.signing_key, "2")
    with pytest.raises(SnsRefused, match="bad signature"):
        await verifier.verify({**v2, "SignatureVersion": "1"})
    v1 = sign(sms_notification(), ca.signing_key, "1")
    with pytest.raises(SnsRefused, match="bad signature"):
        await verifier.verify({**v1, "SignatureVersion": "2"})
    fetcher.calls.clear()
    for version in ("3", "0", "", "2 ", None):
        with pytest.raises(SnsRefused, match="SignatureVersion"):
            await verifier.verify({**v2, "SignatureVersion": version})
    assert fetcher.calls == []


async def test_a_signature_by_another_key_is_refused(ca, verifier):
    # A certificate on the right host, but it is not the key that signed.
    message = sign(sms_notification(), ca.impostor_key, cert_url=CERT_URL)
    with pytest.raises(SnsRefused, match="bad signature"):
        await verifier.verify(message)
    message = sign(sms_notification(), ca.signing_key, cert_url=IMPOSTOR_CERT_URL)
    with pytest.raises(SnsRefused, match="bad signature"):
        await verifier.verify(message)


@pytest.mark.parametrize("url", [EXPIRED_CERT_URL, FUTURE_CERT_URL])
async def test_a_certificate_outside_its_validity_dates_is_refused(ca, verifier, url):
    with pytest.raises(SnsRefused, match="not valid now"):
        await verifier.verify(sign(sms_notification(), ca.signing_key, cert_url=url))


async def test_a_cached_certificate_that_has_since_expired_is_refused(ca, fetcher):
    later = datetime.now(UTC)
    verifier = SnsVerifier(fetcher, [TOPIC], now=lambda: later)
    message = sign(sms_notification(), ca.signing_key)
    await verifier.verify(message)
    later = datetime.now(UTC) + timedelta(days=31)
    with pytest.raises(SnsRefused, match="not valid now"):
        await verifier.verify(message)
    assert fetcher.calls == [CERT_URL]


async def test_a_topic_not_on_the_list_is_refused_without_any_fetch(ca, fetcher, verifier):
    for message in (sms_notification(topic=OTHER_TOPIC), subscription_message(topic=OTHER_TOPIC)):
        with pytest.raises(SnsRefused, match="topic not allowed"):
            await verifier.verify(sign(message, ca.signing_key))
    with pytest.raises(SnsRefused, match="topic not allowed"):
        await SnsVerifier(fetcher, []).verify(sign(sms_notification(), ca.signing_key))
    assert fetcher.calls == []


@pytest.mark.parametrize("url", LOOK_ALIKES)
async def test_a_certificate_url_over_http_or_on_a_look_alike_host_is_refused_without_any_fetch(
        ca, fetcher, verifier, url):
    # The attacker serves a certificate for their own key there; it is never even asked for.
    fetcher.pems[url] = ca.pems[IMPOSTOR_CERT_URL]
    message = sign(sms_notification(), ca.impostor_key, cert_url=url)
    with pytest.raises(SnsRefused, match="untrusted SigningCertURL"):
        await verifier.verify(message)
    assert fetcher.calls == []
    assert not sns_signature.trusted_sns_url(url, certificate=True)
    # The real fetcher refuses a URL off the SNS hosts too, before any network.
    if not sns_signature.trusted_sns_url(url):
        with pytest.raises(SnsRefused, match="untrusted URL"):
            await HttpsFetcher()(url, 1024)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "il-central-1"])
def test_sns_hosts_of_every_region_are_trusted(region):
    assert sns_signature.trusted_sns_url(f"https://sns.{region}.amazonaws.com/SimpleNotificationService-1a.pem",
                                         certificate=True)
    assert sns_signature.trusted_sns_url(f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription&Token=x")
    # A SubscribeURL is not a certificate.
    assert not sns_signature.trusted_sns_url(f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription",
                                             certificate=True)


async def test_malformed_signatures_are_refused_without_any_fetch(ca, fetcher, verifier):
    message = sign(sms_notification(), ca.signing_key)
    for signature in ("", "not base64!", "QUJD=QUJD"):
        with pytest.raises(SnsRefused, match="Signature"):
            await verifier.verify({**message, "Signature": signature})
    no_token = sign(subscription_message(), ca.signing_key)
    del no_token["Token"]
    with pytest.raises(SnsRefused, match="missing Token"):
        await verifier.verify(no_token)
    with pytest.raises(SnsRefused, match="unknown message type"):
        await verifier.verify({**message, "Type": "Bogus"})
    assert fetcher.calls == []


async def test_a_document_that_is_not_a_certificate_is_refused_and_not_cached(ca, fetcher, verifier):
    fetcher.pems[CERT_URL] = b"<html>not a certificate</html>"
    with pytest.raises(SnsRefused, match="not a PEM certificate"):
        await verifier.verify(sign(sms_notification(), ca.signing_key))
    fetcher.pems[CERT_URL] = ca.pems[CERT_URL]
    await verifier.verify(sign(sms_notification(), ca.signing_key))
    assert fetcher.calls == [CERT_URL, CERT_URL]


async def test_a_subscription_is_confirmed_only_on_an_sns_host(ca, fetcher, verifier):
    message = sign(subscription_message(), ca.signing_key)
    await verifier.verify(message)
    await verifier.confirm_subscription(message)
    assert fetcher.subscriptions_confirmed() == [SUBSCRIBE_URL]
    # Even a signed message never makes us visit another host.
    elsewhere = "https://sns.us-east-1.amazonaws.com.evil.com/?Action=ConfirmSubscription&Token=x"
    message = sign(subscription_message(subscribe_url=elsewhere), ca.signing_key)
    await verifier.verify(message)
    with pytest.raises(SnsRefused, match="untrusted SubscribeURL"):
        await verifier.confirm_subscription(message)
    assert fetcher.subscriptions_confirmed() == [SUBSCRIBE_URL]


# ---------------------------------------------------------------- the real fetcher, over TLS


class ToLocalServer(AbstractResolver):
    """Resolves every host to the local test server (the SNS host name stays in the URL and in TLS)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        return [{"hostname": host, "host": "127.0.0.1", "port": self.port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
async def sns_host(ca, tmp_path_factory):
    """A TLS server posing as sns.us-east-1.amazonaws.com, with a certificate from the test CA."""
    now = datetime.now(UTC)
    key = rsa.generate_private_key(65537, 2048)
    cert = (
        x509.CertificateBuilder().subject_name(_name(f"sns.{REGION}.amazonaws.com")).issuer_name(ca.ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"sns.{REGION}.amazonaws.com")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("sns-tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    never = asyncio.Event()

    async def certificate(request):
        return web.Response(body=ca.pems[CERT_URL])

    async def huge(request):
        return web.Response(body=b"A" * (sns_signature.MAX_CERTIFICATE_BYTES + 1))

    async def redirect(request):
        raise web.HTTPFound("https://evil.example/cert.pem")

    async def hang(request):
        await never.wait()

    app = web.Application()
    app.router.add_get("/SimpleNotificationService-ok.pem", certificate)
    app.router.add_get("/huge.pem", huge)
    app.router.add_get("/redirect.pem", redirect)
    app.router.add_get("/hang.pem", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    trusting = ssl.create_default_context(cadata=ca.ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    yield port, trusting
    await runner.cleanup()


def local_fetcher(sns_host, *, trust_test_ca: bool = True, timeout: float = 5.0) -> HttpsFetcher:
    port, trusting = sns_host
    return HttpsFetcher(timeout=timeout, connector=lambda: aiohttp.TCPConnector(
        resolver=ToLocalServer(port), ssl=trusting if trust_test_ca else True))


HOST = f"https://sns.{REGION}.amazonaws.com"


async def test_the_real_fetcher_gets_a_certificate_over_verified_tls(ca, sns_host):
    fetcher = local_fetcher(sns_host)
    try:
        url = f"{HOST}/SimpleNotificationService-ok.pem"
        assert await fetcher(url, sns_signature.MAX_CERTIFICATE_BYTES) == ca.pems[CERT_URL]
        # End to end: the verifier with the real fetcher accepts a message signed with that certificate.
        await SnsVerifier(fetcher, [TOPIC]).verify(sign(sms_notification(), ca.signing_key, cert_url=url))
    finally:
        await fetcher.close()


async def test_the_real_fetcher_refuses_an_untrusted_server_a_redirect_a_huge_body_and_a_hang(sns_host):
    untrusting = local_fetcher(sns_host, trust_test_ca=False)
    fetcher = local_fetcher(sns_host, timeout=0.5)
    try:
        # The system's trust store does not know the test CA: TLS verification fails.
        with pytest.raises(SnsUnavailable, match="Certificate"):
            await untrusting(f"{HOST}/SimpleNotificationService-ok.pem", 1024 * 64)
        with pytest.raises(SnsUnavailable, match="HTTP 302"):
            await fetcher(f"{HOST}/redirect.pem", 1024 * 64)
        with pytest.raises(SnsRefused, match="too large"):
            await fetcher(f"{HOST}/huge.pem", sns_signature.MAX_CERTIFICATE_BYTES)
        with pytest.raises(SnsUnavailable, match="Timeout"):
            await fetcher(f"{HOST}/hang.pem", 1024 * 64)
    finally:
        await untrusting.close()
        await fetcher.close()

"""Inbound SMS through the web edge's webhooks (Twilio, Amazon SNS) and the development mailbox,
against the real services in-process.

A STOP turns a client's texting off and queues exactly one confirmation (the development
mailbox shows it); the same provider message again changes nothing and sends nothing; a
request that is unsigned or wrongly signed gets 403, a malformed one 400, and the consent
ledger stays as it was. SNS certificates come from a test CA through an injected fetcher,
so the tests also see which URLs the edge fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc

from services.common.clients import open_channel
from services.common.config import ConfigError
from services.web.app import create_app
from services.web.client_views import consent_sentence
from services.web.config import WebConfig
from services.web.inbound_sms import EMPTY_TWIML, SNS_PATH, TWILIO_PATH
from services.web.twilio_signature import signature as twilio_signature
from tests.support import service_env
from tests.web.conftest import web_stack
from tests.web.test_sns_signature import (
    CERT_URL,
    IMPOSTOR_CERT_URL,
    LOOK_ALIKES,
    OTHER_TOPIC,
    SUBSCRIBE_URL,
    TOPIC,
    RecordingFetcher,
    SigningCA,
    sign,
    sms_notification,
    subscription_message,
)

TWILIO_TOKEN = "twilio-test-auth-token-5f1c"
SECOND_TOPIC = "arn:aws:sns:eu-west-1:123456789012:confidant-inbound-sms"
_numbers = itertools.count(120)


@pytest.fixture(scope="module")
def ca() -> SigningCA:
    return SigningCA()


@pytest.fixture(scope="module")
async def sms(fresh_database, keys_dir, tokens, ca):
    """The stack with both webhooks on, and the fetcher through which the edge gets SNS certificates."""
    fetcher = RecordingFetcher(ca.pems)
    async with web_stack(fresh_database, keys_dir, tokens, sns_fetcher=fetcher,
                         web_sns_topic_arns=f"{TOPIC}, {SECOND_TOPIC}", web_twilio_auth_token=TWILIO_TOKEN) as stack:
        yield stack, fetcher


class Consent:
    """consent as the practice owner sees it, to set a number and read the state and the ledger."""

    def __init__(self, stack, tokens) -> None:
        self.stack = stack
        dana = stack.people["dana"]
        self.metadata = tokens.metadata(tokens.user(dana.user_id, stack.practice_id, "owner"))

    @contextlib.asynccontextmanager
    async def stub(self):
        channel = open_channel(self.stack.addresses["consent"])
        try:
            yield consent_grpc.ConsentServiceStub(channel)
        finally:
            await channel.close()

    async def client_with_number(self) -> tuple[str, str]:
        """A new client with their own number and "Text message ok": (client id, E.164 number)."""
        number = f"+1212555{next(_numbers):04d}"
        client = await self.stack.add_person("texter", "client", "Riley Texter")
        async with self.stub() as consent:
            await consent.SetClientPhone(
                consent_pb.SetClientPhoneRequest(client_id=client.user_id, phone_number=number, text_ok=True),
                metadata=self.metadata, timeout=5,
            )
        return client.user_id, number

    async def state(self, client_id: str) -> int:
        async with self.stub() as consent:
            reply = await consent.GetClientPhone(consent_pb.GetClientPhoneRequest(client_id=client_id),
                                                 metadata=self.metadata, timeout=5)
        return reply.phone.state

    async def ledger(self, client_id: str) -> list[consent_pb.LedgerEntry]:
        async with self.stub() as consent:
            reply = await consent.ListLedger(consent_pb.ListLedgerRequest(client_id=client_id),
                                             metadata=self.metadata, timeout=5)
        return list(reply.entries)

    async def snapshot(self, client_id: str, number: str) -> tuple:
        """Everything a refused request must leave as it was."""
        return (await self.state(client_id), [e.entry_id for e in await self.ledger(client_id)],
                await replies_queued(self.stack, number))


async def replies_queued(stack, number: str) -> int:
    """Confirmation and help texts notify queued for a number (queued synchronously by the webhook)."""
    async with stack.database("notify") as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM notification_jobs WHERE kind = 'sms_reply' AND to_address = %s", (number,))
        return (await cur.fetchone())[0]


async def texts_in_mailbox(stack, number: str, count: int, within: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + within
    while True:
        texts = [i for i in await stack.mailbox(number) if i["channel"] == "sms"]
        if len(texts) >= count or time.monotonic() > deadline:
            return texts
        await asyncio.sleep(0.1)


async def twilio_post(stack, params: dict[str, str], *, signature: str | None = "sign", query: str = "",
                      signed_url: str | None = None, content_type: str | None = None) -> tuple[int, str, str]:
    """POST as Twilio would (no Origin, no cookie); ``signature="sign"`` signs it correctly."""
    path = TWILIO_PATH + query
    if signature == "sign":
        signature = twilio_signature(TWILIO_TOKEN, signed_url or stack.url + path, params.items())
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    async with aiohttp.ClientSession() as http:
        if content_type is None:
            request = http.post(stack.url + path, data=params, headers=headers)
        else:
            request = http.post(stack.url + path, data=json.dumps(params).encode(),
                                headers={**headers, "Content-Type": content_type})
        async with request as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def twilio_params(number: str, body: str, sid: str | None = None) -> dict[str, str]:
    return {"MessageSid": sid or f"SM{uuid.uuid4().hex}", "AccountSid": "AC" + "0" * 32, "From": number,
            "To": "+18005550199", "Body": body, "NumMedia": "0"}


async def sns_post(stack, message: object, *, raw: bytes | None = None) -> int:
    """POST as SNS does: a JSON body sent as text/plain, the type in a header."""
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    if isinstance(message, dict) and isinstance(message.get("Type"), str):
        headers["x-amz-sns-message-type"] = message["Type"]
    body = raw if raw is not None else json.dumps(message).encode()
    async with aiohttp.ClientSession() as http, http.post(stack.url + SNS_PATH, data=body, headers=headers) as resp:
        return resp.status


# ---------------------------------------------------------------- Twilio


async def test_stop_by_twilio_turns_texting_off_with_one_confirmation_and_a_retry_changes_nothing(sms, tokens):
    stack, _ = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    assert await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_IN

    params = twilio_params(number, " stop ")
    status, content_type, body = await twilio_post(stack, params)
    assert (status, body) == (200, EMPTY_TWIML) and content_type.startswith("text/xml")
    assert await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_OUT
    stops = [e for e in await consent.ledger(client_id) if e.event == "keyword_stop"]
    assert [(e.provider_message_id, e.source, e.provider) for e in stops] == [(params["MessageSid"], "sms", "twilio")]
    assert await replies_queued(stack, number) == 1
    texts = await texts_in_mailbox(stack, number, 1)
    assert len(texts) == 1 and texts[0]["to"] == number and texts[0]["text"]  # the confirmation arrived

    # Twilio retries the same message: 200 again, and nothing changes or is sent.
    before = await consent.snapshot(client_id, number)
    status, _, body = await twilio_post(stack, params)
    assert (status, body) == (200, EMPTY_TWIML)
    assert await consent.snapshot(client_id, number) == before
    # Another STOP (a new message) changes nothing either: texting is already off.
    status, _, _ = await twilio_post(stack, twilio_params(number, "STOP"))
    assert status == 200 and await consent.snapshot(client_id, number) == before
    assert len(await texts_in_mailbox(stack, number, 1)) == 1

    # START turns it back on, with its own single confirmation.
    status, _, _ = await twilio_post(stack, twilio_params(number, "START"))
    assert status == 200 and await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_IN
    assert await replies_queued(stack, number) == 2
    assert len(await texts_in_mailbox(stack, number, 2)) == 2


async def test_unsigned_or_wrongly_signed_twilio_requests_get_403_and_change_nothing(sms, tokens):
    stack, _ = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    before = await consent.snapshot(client_id, number)
    stop = twilio_params(number, "STOP")
    start_signature = twilio_signature(TWILIO_TOKEN, stack.url + TWILIO_PATH, {**stop, "Body": "START"}.items())
    refused = [
        dict(signature=None),
        dict(signature=""),
        dict(signature=twilio_signature("another-token", stack.url + TWILIO_PATH, stop.items())),
        # Signed for another body.
        dict(signature=start_signature),
        # Signed for another address (the Host header is never what counts).
        dict(signed_url="https://evil.example" + TWILIO_PATH),
        # A query string added after signing.
        dict(query="?x=1", signed_url=stack.url + TWILIO_PATH),
    ]
    for case in refused:
        status, _, _ = await twilio_post(stack, stop, **case)
        assert status == 403, case
    assert await consent.snapshot(client_id, number) == before

    # Not a form: 415. A signed form without the message id: 400. Still nothing changed.
    status, _, _ = await twilio_post(stack, stop, content_type="application/json")
    assert status == 415
    no_sid = {k: v for k, v in stop.items() if k != "MessageSid"}
    status, _, _ = await twilio_post(stack, no_sid)
    assert status == 400
    assert await consent.snapshot(client_id, number) == before


async def test_the_twilio_signature_covers_the_query_string_as_received(sms, tokens):
    stack, _ = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    status, _, body = await twilio_post(stack, twilio_params(number, "HELP"), query="?practice=lakeside&v=2")
    assert (status, body) == (200, EMPTY_TWIML)
    assert await replies_queued(stack, number) == 1
    assert await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_IN


# ---------------------------------------------------------------- Amazon SNS


async def test_stop_by_sns_turns_texting_off_with_one_confirmation_and_a_retry_changes_nothing(sms, ca, tokens):
    stack, fetcher = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()

    message = sign(sms_notification("STOP", from_number=number), ca.signing_key, "2")
    assert await sns_post(stack, message) == 200
    assert await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_OUT
    inbound_id = json.loads(message["Message"])["inboundMessageId"]
    stops = [e for e in await consent.ledger(client_id) if e.event == "keyword_stop"]
    assert [(e.provider_message_id, e.provider) for e in stops] == [(inbound_id, "sns")]
    assert await replies_queued(stack, number) == 1
    assert len(await texts_in_mailbox(stack, number, 1)) == 1
    assert CERT_URL in fetcher.calls

    # SNS delivers the same notification again: nothing changes, nothing is sent.
    before = await consent.snapshot(client_id, number)
    assert await sns_post(stack, message) == 200
    assert await consent.snapshot(client_id, number) == before

    # START, signed with SignatureVersion 1 this time.
    start = sign(sms_notification("start", from_number=number), ca.signing_key, "1")
    assert await sns_post(stack, start) == 200
    assert await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_IN
    assert await replies_queued(stack, number) == 2
    # The certificate was fetched once for all of them.
    assert fetcher.calls.count(CERT_URL) == 1


async def test_unauthenticated_sns_messages_get_403_and_malformed_ones_400_and_change_nothing(sms, ca, tokens):
    stack, fetcher = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    before = await consent.snapshot(client_id, number)
    good = sign(sms_notification("STOP", from_number=number), ca.signing_key)
    unsigned = {k: v for k, v in good.items() if k not in ("Signature", "SignatureVersion", "SigningCertURL")}
    tampered = {**good, "Message": good["Message"].replace("STOP", "HELP")}
    refused = [
        unsigned,
        {**good, "Signature": ""},
        tampered,
        {**good, "SignatureVersion": "1"},
        sign(sms_notification("STOP", from_number=number), ca.impostor_key),
        sign(sms_notification("STOP", from_number=number), ca.signing_key, cert_url=IMPOSTOR_CERT_URL),
        sign(sms_notification("STOP", from_number=number, topic=OTHER_TOPIC), ca.signing_key),
    ]
    refused += [sign(sms_notification("STOP", from_number=number), ca.impostor_key, cert_url=url)
                for url in LOOK_ALIKES]
    fetched_before = list(fetcher.calls)
    for message in refused:
        assert await sns_post(stack, message) == 403, message.get("SigningCertURL")
    # No look-alike URL was ever fetched.
    assert not set(fetcher.calls) & set(LOOK_ALIKES)
    assert set(fetcher.calls) - set(fetched_before) <= {CERT_URL, IMPOSTOR_CERT_URL}

    malformed = [b"", b"not json", b"[1, 2]", json.dumps({**good, "Type": "Bogus"}).encode(),
                 json.dumps({k: v for k, v in good.items() if k != "MessageId"}).encode(), b"\xff\xfe"]
    for raw in malformed:
        assert await sns_post(stack, None, raw=raw) == 400, raw
    # A signed notification whose message is not an inbound SMS.
    not_sms = sign({**sms_notification(), "Message": "Hello from another publisher"}, ca.signing_key)
    assert await sns_post(stack, not_sms) == 400
    assert await consent.snapshot(client_id, number) == before


async def test_sns_subscriptions_are_confirmed_after_verification(sms, ca):
    stack, fetcher = sms
    assert await sns_post(stack, sign(subscription_message(), ca.signing_key, "1")) == 200
    assert fetcher.subscriptions_confirmed() == [SUBSCRIBE_URL]
    # A forged confirmation, and one from a topic not on the list, visit nothing.
    forged = {**sign(subscription_message(), ca.signing_key), "Token": "forged"}
    assert await sns_post(stack, forged) == 403
    assert await sns_post(stack, sign(subscription_message(topic=OTHER_TOPIC), ca.signing_key)) == 403
    # An unsubscribe confirmation is noted, not acted on.
    assert await sns_post(stack, sign(subscription_message("UnsubscribeConfirmation"), ca.signing_key)) == 200
    assert fetcher.subscriptions_confirmed() == [SUBSCRIBE_URL]


# ---------------------------------------------------------------- the development mailbox


async def test_the_development_mailbox_reply_takes_the_same_path_after_its_own_check(sms, tokens):
    stack, _ = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    before = await consent.snapshot(client_id, number)
    # Not from a page of this site: refused, nothing changes.
    async with stack.client_session(origin=False) as http:
        async with http.post("/dev/mailbox/sms-reply", data={"from_number": number, "body": "STOP"}) as resp:
            assert resp.status == 403
    assert await consent.snapshot(client_id, number) == before

    async with stack.client_session() as http:
        async with http.get("/dev/mailbox") as resp:
            page = await resp.text()
        assert "Reply as a client's phone" in page and 'id="from-any"' in page
        async with http.post("/dev/mailbox/sms-reply", data={"from_number": number, "body": "STOP"},
                             allow_redirects=False) as resp:
            assert resp.status == 303
    assert await consent.state(client_id) == consent_pb.CONSENT_STATE_OPTED_OUT
    stops = [e for e in await consent.ledger(client_id) if e.event == "keyword_stop"]
    assert len(stops) == 1 and stops[0].provider == "development" and stops[0].provider_message_id.startswith("dev-")
    assert await replies_queued(stack, number) == 1


# ---------------------------------------------------------------- configuration


async def test_the_webhooks_are_404_unless_configured(keys_dir):
    down = {f"{name}_addr": "127.0.0.1:9" for name in ("auth", "messaging", "consent", "notify")}
    server = TestServer(create_app(WebConfig.load(service_env(keys_dir, **down))))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for path in (SNS_PATH, TWILIO_PATH):
                async with http.post(server.make_url(path), data={"Body": "STOP"}) as resp:
                    assert resp.status == 404, path
    finally:
        await server.close()
    with pytest.raises(ConfigError, match="WEB_SNS_TOPIC_ARNS"):
        WebConfig.load(service_env(keys_dir, web_sns_topic_arns="confidant-inbound-sms"))
    config = WebConfig.load(service_env(keys_dir, web_sns_topic_arns=f" {TOPIC} ,,{SECOND_TOPIC}",
                                        web_twilio_auth_token=TWILIO_TOKEN))
    assert config.sns_topic_arns == (TOPIC, SECOND_TOPIC)
    assert TWILIO_TOKEN not in repr(config)


# ---------------------------------------------------------------- Client Info


def _today() -> str:
    now = datetime.now(UTC)
    return f"{now:%b} {now.day}, {now.year}"


async def test_client_info_shows_the_state_since_its_day_and_the_consent_history(sms, tokens):
    stack, _ = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    params = twilio_params(number, "STOP")
    assert (await twilio_post(stack, params))[0] == 200
    async with await stack.signed_in("dana") as http, http.get(f"/clients/{client_id}") as resp:
        page = await resp.text()
    assert resp.status == 200
    assert (f'data-role="consent-state">Text messages are off since {_today()}: the client replied STOP.'
            in page)
    history = page[page.index('id="consent-history-heading"'):]
    rows = re.findall(r"<tr><td>.*?</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", history)
    assert rows == [
        ("Confirmation text sent", "Text message (Twilio)", "Confidant"),
        ("The client replied STOP: texts off", "Text message (Twilio)", "The client"),
        ("“Text message ok” ticked", "Client Info", "Dana Rivera"),
        ("Phone number added", "Client Info", "Dana Rivera"),
    ], rows
    # Numbers stay out of the history; the MessageSid too.
    assert number not in history and params["MessageSid"] not in history


async def test_a_phone_number_consent_cannot_read_is_explained_next_to_the_field(sms, tokens):
    stack, _ = sms
    consent = Consent(stack, tokens)
    client_id, number = await consent.client_with_number()
    before = await consent.snapshot(client_id, number)
    jordan = stack.people["jordan"]
    async with await stack.signed_in("dana") as http:
        async with http.get(f"/clients/{client_id}") as resp:
            name = re.search(r'id="client-name"[^>]*value="([^"]*)"', await resp.text(), re.S).group(1)
            email = re.search(r'id="client-email"[^>]*value="([^"]*)"', await resp.text(), re.S).group(1)
        async with http.post(f"/clients/{client_id}", data={"display_name": name, "email": email,
                                                             "phone_number": "12", "text_ok": "1"}) as resp:
            page = await resp.text()
    assert resp.status == 400 and jordan.email not in page
    field = page[page.index('id="client-phone"'):page.index("Text message ok")]
    assert 'aria-invalid="true"' in field and 'aria-describedby="client-phone-error client-phone-state"' in field
    assert re.search(r'<p class="error" role="alert" id="client-phone-error">[^<]+</p>', field)
    assert 'value="12"' in field
    assert await consent.snapshot(client_id, number) == before


def _phone(state: int, since: datetime | None = None, number: str = "+12125550101") -> consent_pb.ClientPhone:
    phone = consent_pb.ClientPhone(client_id=str(uuid.uuid4()), phone_number=number, state=state)
    if since is not None:
        phone.state_since.FromDatetime(since)
    return phone


def test_each_consent_state_reads_as_one_plain_sentence():
    since = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
    assert consent_sentence(_phone(consent_pb.CONSENT_STATE_OPTED_OUT, since)) == (
        "Text messages are off since Nov 27, 2026: the client replied STOP. "
        "They can reply START to turn them back on.")
    assert consent_sentence(_phone(consent_pb.CONSENT_STATE_OPTED_IN, since)) == (
        "Text messages are on since Nov 27, 2026: alerts go to this number.")
    assert consent_sentence(_phone(consent_pb.CONSENT_STATE_NOT_GIVEN, since)) == (
        "Text messages are off since Nov 27, 2026: “Text message ok” is not ticked.")
    assert consent_sentence(_phone(consent_pb.CONSENT_STATE_CARRIER_BLOCKED, since)) == (
        "Text messages are blocked since Nov 27, 2026: the carrier still blocks texts to this number. "
        "The client must reply START to our number; nothing will be sent until then.")
    assert consent_sentence(_phone(consent_pb.CONSENT_STATE_NO_NUMBER, since, number="")) == (
        "No phone number on file: no text messages are sent.")
    # Without a known start, the sentence leaves the date out.
    assert consent_sentence(_phone(consent_pb.CONSENT_STATE_OPTED_IN)) == (
        "Text messages are on: alerts go to this number.")

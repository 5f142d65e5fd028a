"""Amazon SES delivery feedback through SNS at /webhooks/ses, against the real services in-process.

SNS messages are signed with a test CA's key, as in tests/web/test_sns_signature.py, and the
edge fetches the certificate through an injected fetcher. A permanent bounce for a client's
address suppresses the next alert to them (the thread says "Not sent: address suppressed",
the development mailbox gets nothing) while another client's alert goes out; the same SNS
message twice has one effect; an unauthenticated message gets 403, a malformed one 400, and
nothing is recorded. A delivery report and a bounce matched by SES's message id show in the
thread as "Delivered" and "Bounced".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from services.common.config import ConfigError
from services.web import ses_feedback
from services.web.config import WebConfig
from services.web.routes import setup_routes
from services.web.ses_feedback import SES_PATH, Malformed, parse
from tests.support import service_env
from tests.web.conftest import web_stack
from tests.web.test_sns_signature import (
    LOOK_ALIKES,
    REGION,
    TOPIC,
    RecordingFetcher,
    SigningCA,
    sign,
    subscription_message,
)

SES_TOPIC = f"arn:aws:sns:{REGION}:123456789012:confidant-ses-feedback"
SES_SUBSCRIBE_URL = (f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={SES_TOPIC}"
                     "&Token=51b2ff3edb475b7d91550e0ab6edf0c1de2a34e6")


@pytest.fixture(scope="module")
def ca() -> SigningCA:
    return SigningCA()


@pytest.fixture(scope="module")
async def ses(fresh_database, keys_dir, tokens, ca):
    """The stack with the SES webhook on (and the SMS one on another topic), and the certificate fetcher."""
    fetcher = RecordingFetcher(ca.pems)
    async with web_stack(fresh_database, keys_dir, tokens, sns_fetcher=fetcher, web_ses_topic_arns=SES_TOPIC,
                         web_sns_topic_arns=TOPIC) as stack:
        yield stack, fetcher


# ---------------------------------------------------------------- SES events and posting them


def ses_event(kind: str, addresses: list[str], *, mail_id: str = "", bounce_type: str = "Permanent",
              shape: str = "notificationType") -> dict:
    """SES's JSON for a Bounce, Complaint or Delivery (``shape``: an identity's notification or a
    configuration set's ``eventType`` event)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    event: dict = {shape: kind, "mail": {
        "timestamp": now, "source": "alerts@lakeside.test", "messageId": mail_id or f"0100{uuid.uuid4().hex}",
        "destination": addresses}}
    if kind == "Bounce":
        event["bounce"] = {"bounceType": bounce_type, "bounceSubType": "General", "timestamp": now,
                           "feedbackId": str(uuid.uuid4()),
                           "bouncedRecipients": [{"emailAddress": a, "action": "failed", "status": "5.1.1",
                                                  "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
                                                 for a in addresses]}
    elif kind == "Complaint":
        event["complaint"] = {"complainedRecipients": [{"emailAddress": a} for a in addresses], "timestamp": now,
                              "feedbackId": str(uuid.uuid4()), "complaintFeedbackType": "abuse"}
    elif kind == "Delivery":
        event["delivery"] = {"timestamp": now, "recipients": addresses, "processingTimeMillis": 512,
                             "smtpResponse": "250 ok"}
    return event


def notification(event: object, topic: str = SES_TOPIC) -> dict:
    """An unsigned SNS Notification carrying ``event`` (JSON-encoded unless it is a string)."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": event if isinstance(event, str) else json.dumps(event),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={SES_TOPIC}:x",
    }


async def ses_post(stack, message: object, *, raw: bytes | None = None) -> int:
    """POST as SNS does: a JSON body sent as text/plain, the type in a header; no cookie, no Origin."""
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    if isinstance(message, dict) and isinstance(message.get("Type"), str):
        headers["x-amz-sns-message-type"] = message["Type"]
    body = raw if raw is not None else json.dumps(message).encode()
    async with aiohttp.ClientSession() as http, http.post(stack.url + SES_PATH, data=body, headers=headers) as resp:
        return resp.status


async def is_suppressed(stack, address: str) -> bool:
    async with stack.database("notify") as conn:
        cur = await conn.execute("SELECT 1 FROM suppressed_addresses WHERE address = %s", (address.lower(),))
        return await cur.fetchone() is not None


async def feedback_recorded(stack) -> int:
    """Every provider event notify has recorded (each one once)."""
    async with stack.database("notify") as conn:
        cur = await conn.execute("SELECT count(*) FROM delivery_feedback")
        return (await cur.fetchone())[0]


async def effects(stack, feedback_id: str) -> int:
    """How many times notify applied a feedback id (one audit event each time)."""
    async with stack.database("notify") as conn:
        cur = await conn.execute("SELECT count(*) FROM audit_events WHERE target = %s", (f"feedback:{feedback_id}",))
        return (await cur.fetchone())[0]


async def provider_message_id(stack, message_id: str) -> str:
    """The id the email transport gave the client's alert about a message (what SES calls mail.messageId)."""
    async with stack.database("notify") as conn:
        cur = await conn.execute(
            "SELECT provider_message_id FROM notification_jobs WHERE message_id = %s AND channel = 'email'"
            " AND kind = 'message_email'", (message_id,))
        return (await cur.fetchone())[0]


# ---------------------------------------------------------------- a staff member writing to a client


async def open_thread(http: aiohttp.ClientSession, client_id: str) -> str:
    """The conversation with a client (secure messaging turned on for them first)."""
    async with http.post(f"/api/clients/{client_id}/secure-messaging", json={"enabled": True}) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post("/api/conversations", json={"participant_ids": [client_id]}) as resp:
        assert resp.status in (200, 201), await resp.text()
        return (await resp.json())["conversation"]["conversation_id"]


async def send(http: aiohttp.ClientSession, conversation_id: str, body: str) -> str:
    async with http.post(f"/api/conversations/{conversation_id}/messages",
                         json={"body": body, "idempotency_key": str(uuid.uuid4())}) as resp:
        assert resp.status == 201, await resp.text()
        return (await resp.json())["message"]["message_id"]


async def deliveries(http: aiohttp.ClientSession, conversation_id: str, query: str = "") -> tuple[int, dict]:
    async with http.get(f"/api/conversations/{conversation_id}/deliveries{query}",
                        headers={"Accept": "application/json"}) as resp:
        return resp.status, await resp.json()


async def wait_for_status(http: aiohttp.ClientSession, conversation_id: str, message_id: str, wanted: str,
                          within: float = 15.0) -> dict:
    """Polls (with a deadline) until the message's status line reads ``wanted``; returns the last answer."""
    deadline = time.monotonic() + within
    while True:
        status, body = await deliveries(http, conversation_id, f"?message_ids={message_id}")
        assert status == 200, body
        if body["status"].get(message_id) == wanted or time.monotonic() > deadline:
            assert body["status"].get(message_id) == wanted, body
            return body
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- the tests


async def test_a_permanent_bounce_suppresses_the_next_alert_once_however_often_sns_delivers_it(ses, ca, caplog):
    stack, fetcher = ses
    quinn = await stack.add_person("quinn", "client", "Quinn Harbor")
    river = await stack.add_person("river", "client", "River Stone")
    bounce = sign(notification(ses_event("Bounce", [quinn.email])), ca.signing_key, "1")

    with caplog.at_level(logging.INFO):
        assert await ses_post(stack, bounce) == 200
        # SNS delivers the same message again (it retries until it hears 200): no second effect.
        assert await ses_post(stack, bounce) == 200
    assert await is_suppressed(stack, quinn.email)
    assert await effects(stack, bounce["MessageId"]) == 1
    assert not any(quinn.email in str(record.__dict__) for record in caplog.records)  # no addresses in logs
    assert any(r.getMessage() == "ses feedback" for r in caplog.records)

    dana = await stack.signed_in("dana")
    try:
        # Quinn's alert is not sent, and the thread says so; River's goes out as usual.
        to_quinn = await open_thread(dana, quinn.user_id)
        suppressed_id = await send(dana, to_quinn, "See you on Thursday.")
        to_river = await open_thread(dana, river.user_id)
        sent_id = await send(dana, to_river, "See you on Friday.")
        body = await wait_for_status(dana, to_quinn, suppressed_id, "Not sent: address suppressed")
        [email] = [d for d in body["deliveries"] if d["channel"] == "email"]
        assert email["state"] == "suppressed" and "suppression list" in email["detail"]
        await wait_for_status(dana, to_river, sent_id, "Email sent")
        assert len(await stack.wait_for_emails(river.email, 1)) == 1
        assert [i for i in await stack.mailbox(quinn.email) if i["channel"] == "email"] == []
    finally:
        await dana.close()
    assert fetcher.calls.count(bounce["SigningCertURL"]) <= 1  # the certificate is cached


async def test_unauthenticated_messages_get_403_and_suppress_nothing(ses, ca):
    stack, fetcher = ses
    casey = await stack.add_person("casey", "client", "Casey Brook")
    before = await feedback_recorded(stack)

    def bounce(**kwargs) -> dict:
        return notification(ses_event("Bounce", [casey.email]), **kwargs)

    signed = sign(bounce(), ca.signing_key)
    tampered = {**signed, "Message": json.dumps(ses_event("Bounce", [casey.email, "x@client.test"]))}
    refused = [
        bounce(),  # unsigned
        {**sign(bounce(), ca.signing_key), "Signature": signed["Signature"]},  # another message's signature
        tampered,
        sign(bounce(), ca.impostor_key),  # not the key of the certificate it names
        sign(bounce(topic=TOPIC), ca.signing_key),  # the SMS topic is not on the SES list
    ]
    for message in refused:
        assert await ses_post(stack, message) == 403, message
    fetched = list(fetcher.calls)
    for url in LOOK_ALIKES:
        assert await ses_post(stack, sign(bounce(), ca.signing_key, cert_url=url)) == 403, url
    assert fetcher.calls == fetched  # a certificate URL off SNS's hosts is never fetched
    assert not await is_suppressed(stack, casey.email)
    assert await feedback_recorded(stack) == before


async def test_malformed_notifications_get_400_and_record_nothing(ses, ca):
    stack, _ = ses
    before = await feedback_recorded(stack)
    no_mail_id = ses_event("Bounce", ["a@client.test"])
    del no_mail_id["mail"]["messageId"]
    not_a_list = ses_event("Complaint", ["a@client.test"])
    not_a_list["complaint"]["complainedRecipients"] = "a@client.test"
    no_address = ses_event("Bounce", ["not an address"])
    for event in ("not JSON", json.dumps(["Bounce"]), {"mail": {}}, no_mail_id, not_a_list, no_address,
                  {"notificationType": "Bounce", "mail": {"messageId": "m-1"}}):
        assert await ses_post(stack, sign(notification(event), ca.signing_key)) == 400, event
    assert await ses_post(stack, None, raw=b"{not json") == 400
    assert await ses_post(stack, {"Type": "Notification"}) == 400
    assert await feedback_recorded(stack) == before


async def test_delivery_and_bounce_reports_show_in_the_thread(ses, ca):
    stack, _ = ses
    avery = await stack.add_person("avery", "client", "Avery Lane")
    blake = await stack.add_person("blake", "client", "Blake Moss")
    dana = await stack.signed_in("dana")
    try:
        to_avery = await open_thread(dana, avery.user_id)
        delivered_id = await send(dana, to_avery, "Your appointment is confirmed.")
        await wait_for_status(dana, to_avery, delivered_id, "Email sent")
        report = ses_event("Delivery", [avery.email], mail_id=await provider_message_id(stack, delivered_id),
                           shape="eventType")
        assert await ses_post(stack, sign(notification(report), ca.signing_key)) == 200
        await wait_for_status(dana, to_avery, delivered_id, "Delivered", within=2)

        # A transient bounce: the alert bounced, but the address is not suppressed.
        to_blake = await open_thread(dana, blake.user_id)
        bounced_id = await send(dana, to_blake, "Please call the office.")
        await wait_for_status(dana, to_blake, bounced_id, "Email sent")
        soft = ses_event("Bounce", [blake.email], mail_id=await provider_message_id(stack, bounced_id),
                         bounce_type="Transient")
        assert await ses_post(stack, sign(notification(soft), ca.signing_key)) == 200
        await wait_for_status(dana, to_blake, bounced_id, "Bounced", within=2)
        assert not await is_suppressed(stack, blake.email)
    finally:
        await dana.close()

    # A complaint suppresses the address.
    complaint = ses_event("Complaint", [avery.email], shape="eventType")
    assert await ses_post(stack, sign(notification(complaint), ca.signing_key)) == 200
    assert await is_suppressed(stack, avery.email)


async def test_subscription_is_confirmed_and_other_ses_events_are_acknowledged_and_ignored(ses, ca):
    stack, fetcher = ses
    confirmation = sign(subscription_message(topic=SES_TOPIC, subscribe_url=SES_SUBSCRIBE_URL), ca.signing_key)
    assert await ses_post(stack, confirmation) == 200
    assert SES_SUBSCRIBE_URL in fetcher.subscriptions_confirmed()

    before = await feedback_recorded(stack)
    for event in ({"eventType": "Send", "mail": {"messageId": "m-2"}, "send": {}},
                  {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have set up..."}):
        assert await ses_post(stack, sign(notification(event), ca.signing_key)) == 200
    assert await feedback_recorded(stack) == before


def test_the_route_exists_only_with_ses_topics_and_they_must_be_topic_arns(keys_dir):
    def paths(**settings: str) -> set[str]:
        app = web.Application()
        setup_routes(app, WebConfig.load(service_env(keys_dir, **settings)))
        return {r.resource.canonical for r in app.router.routes() if r.resource is not None}

    assert SES_PATH not in paths()
    assert SES_PATH not in paths(web_sns_topic_arns=TOPIC)
    assert SES_PATH in paths(web_ses_topic_arns=SES_TOPIC)
    assert WebConfig.load(service_env(keys_dir, web_ses_topic_arns=f" {SES_TOPIC} , {TOPIC}")).ses_topic_arns == (
        SES_TOPIC, TOPIC)
    with pytest.raises(ConfigError, match="WEB_SES_TOPIC_ARNS"):
        WebConfig.load(service_env(keys_dir, web_ses_topic_arns="https://evil.example/topic"))


def test_parse_reads_both_shapes_and_only_feedback():
    bounce = parse(json.dumps(ses_event("Bounce", ["Quinn Harbor <quinn@client.test>"], mail_id="m-3",
                                        shape="eventType")))
    assert bounce == ses_feedback.Feedback(ses_feedback._KINDS["Bounce"], "m-3", ("quinn@client.test",), True)
    assert parse(json.dumps(ses_event("Bounce", ["q@client.test"], bounce_type="Undetermined"))).permanent is False
    delivery = parse(json.dumps(ses_event("Delivery", ["d@client.test"], mail_id="m-4")))
    assert (delivery.provider_message_id, delivery.addresses) == ("m-4", ("d@client.test",))
    assert parse(json.dumps({"eventType": "Open", "mail": {"messageId": "m-5"}})) is None
    with pytest.raises(Malformed):
        parse(json.dumps(ses_event("Bounce", [f"r{n}@client.test" for n in range(51)])))

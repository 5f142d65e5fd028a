"""Email through Amazon SES and texts through Amazon SNS (moto in server mode, behind a fault proxy):
throttling and 5xx retried, an outage waited out, permanent refusals failed at once, bounces
suppressing later emails, and the metrics that show it."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import aiohttp
import pytest
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.pgserver import free_port
from tests.consent.harness import new_phone
from tests.notify.conftest import NotifyStack, notify_config, notify_service
from tests.notify.providers import EMAIL_FROM, aws_with_faults, provider_settings
from tests.support import channel

PRACTICE = "Lakeside Counseling"


@pytest.fixture(scope="module")
async def aws():
    async with aws_with_faults() as aws:
        yield aws


@dataclass
class Office:
    stack: NotifyStack  # bound to this test's notify
    practice: object
    metrics_url: str

    @property
    def practice_id(self) -> str:
        return self.practice.practice.practice_id

    @property
    def owner(self):
        return self.practice.owner

    async def clients(self, n: int) -> list:
        return [await self.stack.people.user(self.practice, name="Jordan Lee") for _ in range(n)]


@contextlib.asynccontextmanager
async def provider_notify(stack, fresh_database, keys_dir, aws, **overrides):
    """A notify of its own (fresh database) sending through SES and SNS via the proxy, serving metrics."""
    aws.proxy.reset()
    url = await fresh_database("notify")
    port = free_port()
    config = notify_config(keys_dir, url, stack.auth_address, stack.consent_address,
                           **provider_settings(aws, notify_metrics_listen=f"127.0.0.1:{port}",
                                               notify_metrics_refresh_seconds="0.1", **overrides))
    async with notify_service(config) as address, channel(address) as ch:
        yield stack.on(pb_grpc.NotifyServiceStub(ch), url), f"http://127.0.0.1:{port}/metrics"


@pytest.fixture
async def office(stack, fresh_database, keys_dir, aws):
    practice = await stack.people.practice(PRACTICE)
    async with provider_notify(stack, fresh_database, keys_dir, aws) as (notify, metrics_url):
        yield Office(notify, practice, metrics_url)


def conversation() -> str:
    return str(uuid.uuid4())


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


def sample(exposition: str, line_start: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- SES and SNS as they should be -----------------------------------------------------------


async def test_an_email_goes_through_ses_signed_by_the_practice(office, aws):
    (client,) = await office.clients(1)
    conv = conversation()
    message = await office.stack.alert(office.practice_id, conv, [(client.user_id, True)])
    assert ("message_email", "sent", "") in await office.stack.settled(client.user_id)
    (sent,) = await aws.wait_for_emails([client.email], 1)
    job = await office.stack.job(client.user_id)
    assert (job["transport"], job["provider_message_id"], job["attempts"]) == ("ses", sent["id"], 1)
    assert sent["source"] == f"{PRACTICE} <{EMAIL_FROM}>"
    assert sent["subject"] == "You have a new secure message"
    assert f"{PRACTICE} sent you a secure message." in sent["body"] and "/m/" in sent["body"]
    for secret in ("Jordan", "Dana", client.user_id):
        assert secret not in sent["subject"] + sent["body"]

    # SES reports delivery (through SNS and the web edge): the job is matched by SES's message id.
    await office.stack.feedback(pb.FEEDBACK_KIND_DELIVERY, sent["id"])
    (email,) = [d for d in await office.stack.deliveries(office.owner, conv, [message]) if d.channel == pb.CHANNEL_EMAIL]
    assert email.state == pb.DELIVERY_STATE_DELIVERED

    metrics = await scrape(office.metrics_url)
    assert sample(metrics, 'confidant_notify_attempts_total{channel="email",outcome="sent"}') == 1
    assert sample(metrics, 'confidant_notify_send_seconds_count{transport="ses"}') == 1
    # No address, number or name in any series.
    assert client.email not in metrics and "Jordan" not in metrics


async def test_a_text_goes_through_sns(office, aws, stack):
    (client,) = await office.clients(1)
    typed, e164 = new_phone()
    await stack.set_phone(office.owner, client, typed, True)
    await office.stack.alert(office.practice_id, conversation(), [(client.user_id, True)])
    assert ("message_sms", "sent", "") in await office.stack.settled(client.user_id)
    (text,) = await aws.texts([e164])
    assert text["message"] == f"{PRACTICE}: you have a new secure message. Check your email to read it. Reply STOP to opt out."
    job = await office.stack.job(client.user_id, "message_sms")
    assert (job["transport"], job["provider_message_id"]) == ("sns", text["message_id"])


# -- failures ------------------------------------------------------------------------------------


async def test_throttling_is_retried_with_backoff_and_the_backlog_drains(office, aws):
    clients = await office.clients(6)
    aws.proxy.fail_next(3, 400, "Throttling")
    for client in clients:
        await office.stack.alert(office.practice_id, conversation(), [(client.user_id, True)])
    for client in clients:
        assert ("message_email", "sent", "") in await office.stack.settled(client.user_id, within=20)
    emails = await aws.emails([c.email for c in clients])
    # Each exactly once, all through SES, after the three throttled calls.
    assert sorted(m["destinations"]["ToAddresses"][0] for m in emails) == sorted(c.email for c in clients)
    assert aws.proxy.failed == 3 and aws.proxy.forwarded == 6
    attempts = [(await office.stack.job(c.user_id))["attempts"] for c in clients]
    assert max(attempts) >= 2, attempts  # the first throttled job counted its attempt and tried again
    metrics = await scrape(office.metrics_url)
    assert sample(metrics, 'confidant_notify_attempts_total{channel="email",outcome="sent"}') == 6
    assert (sample(metrics, 'confidant_notify_attempts_total{channel="email",outcome="retry"}')
            + sample(metrics, 'confidant_notify_attempts_total{channel="email",outcome="deferred"}')) >= 1


async def test_an_outage_leaves_a_backlog_that_drains_when_the_provider_returns(
    stack, fresh_database, keys_dir, aws
):
    practice = await stack.people.practice(PRACTICE)
    # Two attempts only: an outage must not use them up.
    async with provider_notify(stack, fresh_database, keys_dir, aws, notify_max_attempts="2") as (notify, metrics_url):
        clients = [await stack.people.user(practice) for _ in range(5)]
        aws.proxy.fail_all(503, "ServiceUnavailable")
        for client in clients:
            await notify.alert(practice.practice.practice_id, conversation(), [(client.user_id, True)])
        # SES answers 503 again and again (probes after each pause) ...
        await aws.proxy.wait_for(lambda: aws.proxy.failed >= 6, within=20, what="probes during the outage")
        pending = await notify.notify_sql(
            "SELECT status, attempts FROM notification_jobs WHERE kind = 'message_email' ORDER BY job_id")
        # ... and the jobs wait: none failed, none has used its attempts.
        assert [status for status, _ in pending] == ["pending"] * 5
        assert all(attempts <= 1 for _, attempts in pending), pending
        metrics = await scrape(metrics_url)
        assert sample(metrics, "confidant_notify_queue_depth") >= 5
        assert sample(metrics, 'confidant_notify_attempts_total{channel="email",outcome="deferred"}') >= 1

        aws.proxy.clear()
        for client in clients:
            assert ("message_email", "sent", "") in await notify.settled(client.user_id, within=20)
        assert len(await aws.emails([c.email for c in clients])) == 5


async def test_a_permanent_rejection_fails_at_once_and_is_not_retried(office, aws):
    client, other = await office.clients(2)
    aws.proxy.fail_next(1, 400, "MessageRejected")
    conv = conversation()
    message = await office.stack.alert(office.practice_id, conv, [(client.user_id, True)])
    assert ("message_email", "failed", "ses MessageRejected") in await office.stack.settled(client.user_id)
    assert aws.proxy.received == 1 and aws.proxy.forwarded == 0
    assert (await office.stack.job(client.user_id))["attempts"] == 1
    (email,) = [d for d in await office.stack.deliveries(office.owner, conv, [message]) if d.channel == pb.CHANNEL_EMAIL]
    assert (email.state, email.detail) == (pb.DELIVERY_STATE_FAILED, "gave up: ses MessageRejected")

    # Nothing retries it: another alert goes through while the failed one stays failed.
    await office.stack.alert(office.practice_id, conversation(), [(other.user_id, True)])
    await office.stack.settled(other.user_id)
    assert aws.proxy.received == 2
    assert await aws.emails([client.email]) == []

    # The owner sends it again once the cause is fixed.
    reply = await office.stack.notify.RequeueFailedJobs(
        pb.RequeueFailedJobsRequest(), metadata=office.stack.people.as_user(office.owner), timeout=5)
    assert reply.requeued == 1
    assert ("message_email", "sent", "") in await office.stack.settled(client.user_id)
    assert len(await aws.emails([client.email])) == 1


async def test_a_bounce_suppresses_the_next_email_to_the_address(office, aws):
    (client,) = await office.clients(1)
    first_conv, second_conv = conversation(), conversation()
    await office.stack.alert(office.practice_id, first_conv, [(client.user_id, True)])
    await office.stack.settled(client.user_id)
    (sent,) = await aws.wait_for_emails([client.email], 1)

    # SES: a permanent bounce of that email (SNS may deliver the notification twice).
    for _ in range(2):
        assert await office.stack.feedback(pb.FEEDBACK_KIND_BOUNCE, sent["id"], [client.email], permanent=True,
                                           feedback_id="sns-bounce-" + sent["id"]) == 1
    states = {d.message_id: d for d in await office.stack.deliveries(office.owner, first_conv)
              if d.channel == pb.CHANNEL_EMAIL}
    assert [d.state for d in states.values()] == [pb.DELIVERY_STATE_BOUNCED]

    received = aws.proxy.received
    message = await office.stack.alert(office.practice_id, second_conv, [(client.user_id, True)])
    jobs = await office.stack.settled(client.user_id)
    assert ("message_email", "suppressed", "the address is on the suppression list: an earlier email bounced") in jobs
    # Not sent: SES was not even asked.
    assert aws.proxy.received == received
    assert len(await aws.emails([client.email])) == 1
    (email,) = [d for d in await office.stack.deliveries(office.owner, second_conv, [message])
                if d.channel == pb.CHANNEL_EMAIL]
    assert (email.state, email.detail) == (
        pb.DELIVERY_STATE_SUPPRESSED, "the address is on the suppression list: an earlier email bounced")
    metrics = await scrape(office.metrics_url)
    assert sample(metrics, 'confidant_notify_attempts_total{channel="email",outcome="suppressed"}') == 1


async def test_sns_refusals_are_permanent_and_its_throttling_is_retried(office, aws):
    web = office.stack.people.service("web")
    _, refused = new_phone()
    aws.proxy.fail_next(1, 400, "InvalidParameter")
    await office.stack.notify.SendSmsReply(pb.SendSmsReplyRequest(to_number=refused, body="You are unsubscribed."),
                                           metadata=web, timeout=5)
    assert await office.stack.settled(refused) == [("sms_reply", "failed", "sns InvalidParameter")]
    assert aws.proxy.received == 1

    _, throttled = new_phone()
    aws.proxy.fail_next(2, 400, "Throttling")
    await office.stack.notify.SendSmsReply(pb.SendSmsReplyRequest(to_number=throttled, body="You are subscribed."),
                                           metadata=web, timeout=5)
    assert await office.stack.settled(throttled) == [("sms_reply", "sent", "")]
    assert aws.proxy.received == 4
    assert [t["message"] for t in await aws.texts([refused, throttled])] == ["You are subscribed."]

"""Exactly once through a crash: a real notify process sends 500 emails through SES (moto, behind
the fault proxy), is killed with SIGKILL while it has emails in flight, and is started again.

Every alert arrives at moto exactly once and no job is left pending or failed. What makes it
hold: jobs are deduplicated when enqueued, leased when claimed (the dead process's jobs go to
the next after the lease), and marked sent with SES's message id in a short transaction right
after SES accepts each one. The proxy holds the in-flight requests (SES never saw them) while
the process is killed, and drops them when their caller is gone, as a network would. The one
window this cannot close (SES accepted, the process died before its commit) is kept closed here
by killing only once every email SES accepted is recorded; worker.py documents it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2

from bin.stack import health_check
from services.common.pgserver import free_port
from tests.conftest import REPO
from tests.notify.conftest import PUBLIC_URL
from tests.notify.providers import EMAIL_FROM, aws_with_faults
from tests.support import channel, unique

CLIENTS, CONVERSATIONS = 20, 25  # 500 alerts: one email each
LEASE_SECONDS, SEND_TIMEOUT_SECONDS = 6, 2.5


@pytest.fixture(scope="module")
async def aws():
    async with aws_with_faults() as aws:
        yield aws


class NotifyProcess:
    """``python -m services.notify`` with the environment bin/stack.py gives a service."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.address = env["CONFIDANT_NOTIFY_LISTEN"]
        self.proc: subprocess.Popen | None = None

    def _spawn(self) -> subprocess.Popen:
        with open(self.log, "a") as out:
            return subprocess.Popen([sys.executable, "-m", "services.notify"], cwd=REPO, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + 30
        while await health_check(self.address, "confidant.notify.v1.NotifyService") != health_pb2.HealthCheckResponse.SERVING:
            assert self.proc.poll() is None, f"notify exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "notify did not become ready"
            await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no last commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def test_a_notify_killed_mid_batch_delivers_every_alert_exactly_once(
    stack, fresh_database, keys_dir, aws, tmp_path
):
    started = time.monotonic()
    practice = await stack.people.practice("Lakeside Counseling")
    clients = [await stack.people.user(practice) for _ in range(CLIENTS)]
    addresses = {c.email for c in clients}
    url = await fresh_database("notify")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANT_")}
    env.update({
        "CONFIDANT_MODE": "development",
        "CONFIDANT_KEYS_DIR": str(keys_dir),
        "CONFIDANT_PUBLIC_URL": PUBLIC_URL,
        "CONFIDANT_NOTIFY_LISTEN": f"127.0.0.1:{port}",
        "CONFIDANT_NOTIFY_DATABASE_URL": url,
        "CONFIDANT_AUTH_ADDR": stack.auth_address,
        "CONFIDANT_CONSENT_ADDR": stack.consent_address,
        "CONFIDANT_MESSAGING_ADDR": "127.0.0.1:9",
        "CONFIDANT_NOTIFY_EMAIL_TRANSPORT": "ses",
        "CONFIDANT_NOTIFY_SMS_TRANSPORT": "none",
        "CONFIDANT_NOTIFY_EMAIL_FROM": EMAIL_FROM,
        # AWS credentials are moto's fake ones, set in os.environ while moto runs (tests/aws.py).
        "CONFIDANT_AWS_ENDPOINT_URL": aws.proxy.url,
        "CONFIDANT_NOTIFY_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
        "CONFIDANT_NOTIFY_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT_SECONDS),
        "CONFIDANT_NOTIFY_POLL_INTERVAL_SECONDS": "0.2",
        # These clients have no password and no invitation comes: their first alerts go at once.
        "CONFIDANT_NOTIFY_INVITATION_HOLD_SECONDS": "0",
        "CONFIDANT_NOTIFY_RETRY_BASE_SECONDS": "0.2",
        "CONFIDANT_NOTIFY_RETRY_MAX_SECONDS": "1",
        "CONFIDANT_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    notify = NotifyProcess(env, tmp_path / "notify.log")
    aws.proxy.reset()

    async def sql(query: str, params=()) -> list[tuple]:
        return await stack.on(stack.notify, url).notify_sql(query, params)

    async def accepted() -> list[dict]:
        return await aws.emails(addresses)

    try:
        await notify.start()
        async with channel(notify.address) as ch:
            stub = pb_grpc.NotifyServiceStub(ch)
            messaging = stack.people.service("messaging")

            async def relay(client) -> None:
                for _ in range(CONVERSATIONS):
                    reply = await stub.EnqueueMessageNotifications(pb.EnqueueMessageNotificationsRequest(
                        event_id=unique("event"), practice_id=practice.practice.practice_id,
                        conversation_id=str(uuid.uuid4()), message_id=unique("message"), sender_id="sender",
                        recipients=[pb.Recipient(user_id=client.user_id, is_client=True)],
                    ), metadata=messaging, timeout=10)
                    assert reply.jobs_created == 2  # the email, and the text this deployment does not send

            await asyncio.gather(*(relay(c) for c in clients))

        # Some go through ...
        await aws.wait_for_emails(addresses, 100, within=30)
        # ... then SES stops answering: the worker's next requests are held, in flight.
        aws.proxy.hold()
        await aws.proxy.wait_for(lambda: aws.proxy.held >= 3 and aws.proxy.in_flight == 0, within=10,
                                 what="requests held in flight")
        # Everything SES accepted so far is recorded (the crash window is closed, see the docstring).
        deadline = time.monotonic() + 10
        while len(await accepted()) != (await sql(
                "SELECT count(*) FROM notification_jobs WHERE kind = 'message_email' AND status = 'sent'"))[0][0]:
            assert time.monotonic() < deadline, "accepted emails not recorded"
            await asyncio.sleep(0.05)
        held = aws.proxy.held
        in_flight = (await sql(
            "SELECT count(*) FROM notification_jobs WHERE kind = 'message_email' AND status = 'pending'"
            " AND claim_id IS NOT NULL"))[0][0]
        assert in_flight >= held >= 3
        before_kill = len(await accepted())
        assert before_kill < CLIENTS * CONVERSATIONS

        await notify.kill()
        # The held requests' caller is gone: they are dropped, never reach SES.
        await aws.proxy.wait_for(lambda: aws.proxy.held == 0, within=10, what="held requests dropped")
        aws.proxy.release()
        assert aws.proxy.dropped >= held
        assert len(await accepted()) == before_kill

        await notify.start()
        # The killed process's jobs come back after their lease; the rest continue.
        deadline = time.monotonic() + 45
        while True:
            left = (await sql("SELECT count(*) FROM notification_jobs WHERE kind = 'message_email'"
                              " AND status <> 'sent'"))[0][0]
            if left == 0:
                break
            assert time.monotonic() < deadline, f"{left} emails not sent"
            await asyncio.sleep(0.2)
    finally:
        aws.proxy.release()
        await notify.stop()

    emails = await accepted()
    jobs = await sql("SELECT recipient_id, status, provider_message_id FROM notification_jobs"
                     " WHERE kind = 'message_email'")
    assert len(jobs) == CLIENTS * CONVERSATIONS and {status for _, status, _ in jobs} == {"sent"}
    # Exactly once: as many emails at SES as alerts, each the one its job recorded.
    assert len(emails) == CLIENTS * CONVERSATIONS
    assert sorted(m["id"] for m in emails) == sorted(provider for _, _, provider in jobs)
    assert Counter(m["destinations"]["ToAddresses"][0] for m in emails) == {a: CONVERSATIONS for a in addresses}
    assert time.monotonic() - started < 60

"""Sending asks first: a STOP that lands after consent once said yes, but before the text
goes, prevents it.

Real auth, consent and notify in-process. notify runs on a ManualClock with auth out of
reach: the text's first attempt asks consent (yes), then cannot reach auth and is
retried later. The client replies STOP in between; the retry asks consent again, right
before sending, and sends nothing. (test_notify_service shows the plain order: STOP,
then a new message, no text.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.clock import ManualClock
from services.notify.app import create_service
from tests.consent.harness import new_phone
from tests.notify.conftest import NotifyStack, notify_config
from tests.support import channel, running

RETRY_SECONDS = 60


async def _text_job(notify: NotifyStack, client_id: str, attempts: int, within: float = 15.0) -> tuple:
    """(status, attempts, last_error) of the client's text job once it has had ``attempts`` attempts."""
    deadline = time.monotonic() + within
    while True:
        rows = await notify.notify_sql(
            "SELECT status, attempts, last_error FROM notification_jobs WHERE recipient_id = %s"
            " AND kind = 'message_sms'",
            (client_id,),
        )
        if rows and (rows[0][1] >= attempts or rows[0][0] != "pending"):
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"the text job did not reach {attempts} attempt(s) within {within}s: {rows}")
        await asyncio.sleep(0.05)


async def _consent_answers(stack: NotifyStack, client_id: str) -> list[str]:
    rows = await stack.sql(
        "SELECT outcome FROM audit_events WHERE action = 'consent.sms_check' AND target = %s ORDER BY event_id",
        (client_id,),
    )
    return [outcome for (outcome,) in rows]


async def test_a_stop_between_consents_yes_and_the_send_prevents_the_text(stack, fresh_database, keys_dir):
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, client, typed, True)

    clock = ManualClock()
    url = await fresh_database("notify")
    # Nothing listens on port 9: every call to auth fails (after consent was asked).
    config = notify_config(keys_dir, url, "127.0.0.1:9", stack.consent_address,
                           notify_retry_base_seconds=str(RETRY_SECONDS), notify_max_attempts="5")
    async with running(await create_service(config, clock=clock)) as address, channel(address) as ch:
        notify = replace(stack, notify=pb_grpc.NotifyServiceStub(ch), notify_url=url)
        await notify.enqueue(practice.practice.practice_id, str(uuid.uuid4()), [(client.user_id, True)])

        assert await _text_job(notify, client.user_id, attempts=1) == ("pending", 1, "rpc UNAVAILABLE")
        assert await _consent_answers(stack, client.user_id) == ["allowed"]

        # The client replies STOP a moment before the retry.
        await stack.inbound(e164, "STOP")
        await clock.advance(seconds=RETRY_SECONDS)

        status, _, reason = await _text_job(notify, client.user_id, attempts=2)
        assert (status, reason) == ("skipped", "no consent")
        assert await _consent_answers(stack, client.user_id) == ["allowed", "refused"]
        assert await notify.mailbox(e164) == []

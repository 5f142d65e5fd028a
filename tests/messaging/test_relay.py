"""The outbox relay against the real notify service (with real auth and consent behind it)."""

from __future__ import annotations

import contextlib
import uuid

from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc
from confidant.notify.v1 import notify_service_pb2 as notify_pb
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc

from services.common.pgserver import free_port
from services.consent.app import create_service as create_consent
from services.consent.config import ConsentConfig
from services.messaging.relay import notification_request
from services.messaging.storage import OutboxItem
from services.notify.app import create_service as create_notify
from services.notify.config import NotifyConfig
from tests.messaging.harness import MessagingHarness, eventually, messaging_service
from tests.support import channel, running, service_env

FAST_RELAY = {"messaging_outbox_poll_seconds": "0.2", "messaging_outbox_max_backoff_seconds": "0.5"}


async def consent_address(
    stack: contextlib.AsyncExitStack, fresh_database, keys_dir, auth_address: str
) -> str:
    url = await fresh_database("consent")
    env = service_env(keys_dir, consent_database_url=url, auth_addr=auth_address)
    return await stack.enter_async_context(running(await create_consent(ConsentConfig.load(env))))


async def notify_service(fresh_database, keys_dir, auth_address: str, consent: str):
    url = await fresh_database("notify")
    env = service_env(
        keys_dir,
        notify_database_url=url,
        auth_addr=auth_address,
        consent_addr=consent,
        public_url="https://confidant.example.test",
        # No invitation reaches this notify (auth relays none here): a passwordless client's
        # first alert must not wait for one.
        notify_invitation_hold_seconds="0",
    )
    return await create_notify(NotifyConfig.load(env))


async def test_a_message_to_a_client_reaches_notify_once_and_becomes_an_email(
    fresh_database, keys_dir, tokens, auth_stub, auth_address
):
    async with contextlib.AsyncExitStack() as stack:
        consent = await consent_address(stack, fresh_database, keys_dir, auth_address)
        notify = await stack.enter_async_context(
            running(await notify_service(fresh_database, keys_dir, auth_address, consent))
        )
        address, url = await stack.enter_async_context(
            messaging_service(fresh_database, keys_dir, auth_address, notify_address=notify, **FAST_RELAY)
        )
        messaging = MessagingHarness(
            pb_grpc.MessagingServiceStub(await stack.enter_async_context(channel(address))),
            auth_stub,
            tokens,
            url,
        )
        mailbox = notify_grpc.NotifyServiceStub(await stack.enter_async_context(channel(notify)))

        async def emails_to(address: str):
            reply = await mailbox.ListMailbox(
                notify_pb.ListMailboxRequest(to_address=address),
                metadata=messaging.as_service("web"),
                timeout=5,
            )
            return list(reply.items)

        team = await messaging.team()
        cid = (await messaging.client_conversation(team)).conversation_id
        await messaging.send(team.clinician, cid, "Your results are in; let's talk Thursday.")

        async def relayed():
            rows = await messaging.sql("SELECT relayed_at IS NOT NULL, payload FROM outbox")
            return rows if rows and all(done for done, _ in rows) else None

        [(_, payload)] = await eventually(relayed)
        assert payload["recipients"] == [{"user_id": team.client.user_id, "is_client": True}]
        assert payload["sender_id"] == team.clinician.user_id and payload["conversation_id"] == cid
        assert payload["seq"] == 1  # notify skips a staff email once the cursor reaches it
        [email] = await eventually(lambda: emails_to(team.client.email))
        # No PHI in the notification: neither the text nor the clinician's name.
        assert "results" not in email.subject + email.text_body + email.html_body
        assert "Riley" not in email.subject

        # At least once: relaying the same event again (say, after a crash before the mark) changes nothing.
        await messaging.sql("UPDATE outbox SET relayed_at = NULL")
        await eventually(relayed)
        assert len(await emails_to(team.client.email)) == 1


async def test_when_notify_is_down_the_outbox_keeps_the_event_and_retries(
    fresh_database, keys_dir, tokens, auth_stub, auth_address
):
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        address, url = await stack.enter_async_context(
            messaging_service(
                fresh_database, keys_dir, auth_address, notify_address=f"127.0.0.1:{port}", **FAST_RELAY
            )
        )
        messaging = MessagingHarness(
            pb_grpc.MessagingServiceStub(await stack.enter_async_context(channel(address))),
            auth_stub,
            tokens,
            url,
        )
        team = await messaging.team()
        cid = (await messaging.client_conversation(team)).conversation_id
        # Staff-to-staff messages are relayed too (notify decides what, if anything, to send).
        staff = (await messaging.open(team.clinician, team.team_member)).conversation_id
        sent = await messaging.send(team.client, cid, "Can we move our session?")
        await messaging.send(team.clinician, staff, "FYI")

        async def failed_attempts():
            rows = await messaging.sql(
                "SELECT attempts FROM outbox WHERE relayed_at IS NULL ORDER BY outbox_id"
            )
            return rows if rows and rows[0][0] >= 1 else None

        await eventually(failed_attempts)
        # The message itself was never in doubt.
        assert sent.created

        # Notify comes up where messaging expects it: the backlog drains.
        consent = await consent_address(stack, fresh_database, keys_dir, auth_address)
        notify = await notify_service(fresh_database, keys_dir, auth_address, consent)
        await notify.start(f"127.0.0.1:{port}")
        stack.push_async_callback(notify.stop)

        async def drained():
            rows = await messaging.sql(
                "SELECT count(*) FILTER (WHERE relayed_at IS NULL), count(*) FROM outbox"
            )
            return rows[0] == (0, 2)

        await eventually(drained, within=20)
        payloads = [row[0] for row in await messaging.sql("SELECT payload FROM outbox ORDER BY outbox_id")]
        assert payloads[0]["recipients"] == [{"user_id": team.clinician.user_id, "is_client": False}]
        assert payloads[1]["recipients"] == [{"user_id": team.team_member.user_id, "is_client": False}]
        assert [p["seq"] for p in payloads] == [1, 1]


def test_the_notification_request_carries_the_seq_and_old_rows_give_zero():
    payload = {
        "event_id": str(uuid.uuid4()),
        "practice_id": str(uuid.uuid4()),
        "conversation_id": str(uuid.uuid4()),
        "message_id": str(uuid.uuid4()),
        "sender_id": str(uuid.uuid4()),
        "recipients": [{"user_id": "staff-1", "is_client": False}, {"user_id": "client-1", "is_client": True}],
        "created_at": "2026-11-27T11:00:00+00:00",
    }
    old = notification_request(OutboxItem(outbox_id=1, event_id=1, payload=payload, attempts=0))
    assert old.seq == 0
    assert [(r.user_id, r.is_client) for r in old.recipients] == [("staff-1", False), ("client-1", True)]
    new = notification_request(OutboxItem(outbox_id=2, event_id=2, payload={**payload, "seq": 7}, attempts=0))
    assert new.seq == 7 and new.message_id == payload["message_id"]

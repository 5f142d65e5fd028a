"""Delivery status, provider feedback and the suppression list, requeueing, and discreet alerts,
over real gRPC with real auth and consent (the development mailbox is the provider here;
tests/notify/test_providers.py does the same through SES and SNS on moto)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.notify.v1 import notify_service_pb2 as pb

from tests.conftest import REPO
from tests.consent.harness import new_phone, rpc_error
from tests.support import unique

PRACTICE = "Lakeside Counseling"


@pytest.fixture
async def office(stack):
    """A practice with its owner, a clinician and a client."""
    practice = await stack.people.practice(PRACTICE)
    clinician = await stack.people.user(practice, role=auth_pb.ROLE_CLINICIAN, name="Casey Morgan")
    client = await stack.people.user(practice, name="Jordan Lee")
    return practice, clinician, client


def conversation() -> str:
    return str(uuid.uuid4())


def states(deliveries) -> list[tuple]:
    return sorted((d.recipient_id, pb.Channel.Name(d.channel), pb.DeliveryState.Name(d.state)) for d in deliveries)


# -- ListDeliveryStatus ----------------------------------------------------------------------


async def test_staff_see_every_alert_of_a_message_and_where_it_is(stack, office):
    practice, clinician, client = office
    conv = conversation()
    first = await stack.alert(practice.practice.practice_id, conv, [(client.user_id, True), (clinician.user_id, False)])
    await stack.settled(client.user_id)
    deliveries = await stack.deliveries(practice.owner, conv, [first])
    assert states(deliveries) == sorted([
        (client.user_id, "CHANNEL_EMAIL", "DELIVERY_STATE_SENT"),
        # No phone number: the text is suppressed (no consent), never sent.
        (client.user_id, "CHANNEL_SMS", "DELIVERY_STATE_SUPPRESSED"),
        # The clinician's email waits 15 minutes for them to read it.
        (clinician.user_id, "CHANNEL_EMAIL", "DELIVERY_STATE_QUEUED"),
    ])
    by_channel = {(d.recipient_id, d.channel): d for d in deliveries}
    email = by_channel[(client.user_id, pb.CHANNEL_EMAIL)]
    assert (email.message_id, email.detail, email.attempts) == (first, "the provider accepted it", 1)
    assert email.updated_at.seconds > 0
    assert by_channel[(client.user_id, pb.CHANNEL_SMS)].detail == (
        "the client has not agreed to text messages or replied STOP")
    assert by_channel[(clinician.user_id, pb.CHANNEL_EMAIL)].detail == "waiting to be sent"

    # A second message in the same burst needs no alert of its own.
    second = await stack.alert(practice.practice.practice_id, conv, [(client.user_id, True)])
    await stack.settled(client.user_id)
    assert {pb.DeliveryState.Name(d.state) for d in await stack.deliveries(clinician, conv, [second])} == {
        "DELIVERY_STATE_NOT_NEEDED"}
    # Every message of the conversation when none is named; only the named ones otherwise.
    assert len(await stack.deliveries(clinician, conv)) == 5
    assert {d.message_id for d in await stack.deliveries(clinician, conv, [second, "other"])} == {second}

    # The provider reports delivery of the first email.
    job = await stack.job(client.user_id)
    assert job["provider_message_id"].startswith("mailbox-") and job["transport"] == "mailbox"
    assert await stack.feedback(pb.FEEDBACK_KIND_DELIVERY, job["provider_message_id"]) == 0
    (email,) = [d for d in await stack.deliveries(practice.owner, conv, [first])
                if d.recipient_id == client.user_id and d.channel == pb.CHANNEL_EMAIL]
    assert (email.state, email.detail) == (pb.DELIVERY_STATE_DELIVERED, "the provider reported delivery")

    # The read of who was alerted is audited (ids and counts only), under the client it is about.
    audit = await stack.notify_sql(
        "SELECT actor, target, detail, practice_id FROM audit_events WHERE action = 'delivery_status.read'"
        " AND target = %s ORDER BY event_id", (conv,))
    assert audit[0] == (practice.owner.user_id, conv, {"messages": 1, "deliveries": 3, "client_id": client.user_id},
                        practice.practice.practice_id)


async def test_delivery_status_is_for_staff_of_the_practice(stack, office):
    practice, _, client = office
    conv = conversation()
    message = await stack.alert(practice.practice.practice_id, conv, [(client.user_id, True)])
    await stack.settled(client.user_id)
    # Another practice's staff see nothing of it.
    other = await stack.people.practice("Hillside Therapy")
    assert await stack.deliveries(other.owner, conv, [message]) == []
    for metadata in (stack.people.as_user(client), stack.people.service("web"), stack.people.service("messaging")):
        err = await rpc_error(stack.notify.ListDeliveryStatus(
            pb.ListDeliveryStatusRequest(conversation_id=conv), metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.notify.ListDeliveryStatus(
        pb.ListDeliveryStatusRequest(conversation_id=" "), metadata=stack.people.as_user(practice.owner), timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "conversation_id is required.")


# -- RecordDeliveryFeedback and the suppression list ----------------------------------------------


async def test_a_complaint_suppresses_later_emails_once_however_often_it_arrives(stack, office):
    practice, _, client = office
    conv = conversation()
    await stack.alert(practice.practice.practice_id, conv, [(client.user_id, True)])
    await stack.settled(client.user_id)
    sent = await stack.job(client.user_id)
    feedback_id = unique("sns")
    for _ in range(3):  # SNS redelivers: one effect
        assert await stack.feedback(pb.FEEDBACK_KIND_COMPLAINT, sent["provider_message_id"], [client.email.upper()],
                                    feedback_id=feedback_id) == 1
    assert await stack.notify_sql("SELECT reason FROM suppressed_addresses WHERE address = %s",
                                  (client.email.lower(),)) == [("complaint",)]
    # Recorded once, about the client the email went to.
    assert await stack.notify_sql(
        "SELECT target, practice_id FROM audit_events WHERE action = 'delivery.complaint'"
        " AND detail->>'feedback_id' = %s", (feedback_id,)) == [(client.user_id, practice.practice.practice_id)]

    later = await stack.alert(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    await stack.settled(client.user_id)
    statuses = await stack.notify_sql(
        "SELECT status, last_error FROM notification_jobs WHERE message_id = %s AND kind = 'message_email'", (later,))
    assert statuses == [("suppressed", "the address is on the suppression list: the recipient reported an email as spam")]
    assert len([i for i in await stack.mailbox(client.email) if i.channel == pb.CHANNEL_EMAIL]) == 1


async def test_only_a_permanent_bounce_suppresses(stack, office):
    practice, _, client = office
    # A transient bounce (a full mailbox) leaves the address alone.
    assert await stack.feedback(pb.FEEDBACK_KIND_BOUNCE, addresses=[client.email], permanent=False) == 0
    await stack.alert(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    assert ("message_email", "sent", "") in await stack.settled(client.user_id)
    assert await stack.feedback(pb.FEEDBACK_KIND_BOUNCE, addresses=[client.email], permanent=True) == 1
    # Already suppressed: another bounce adds nothing.
    assert await stack.feedback(pb.FEEDBACK_KIND_BOUNCE, addresses=[client.email], permanent=True) == 0


async def test_feedback_comes_only_from_the_web_edge_and_is_checked(stack, office):
    practice, _, client = office
    request = pb.RecordDeliveryFeedbackRequest(feedback_id=unique("sns"), kind=pb.FEEDBACK_KIND_BOUNCE,
                                               addresses=[client.email], permanent=True)
    for metadata in (stack.people.service("messaging"), stack.people.as_user(practice.owner)):
        err = await rpc_error(stack.notify.RecordDeliveryFeedback(request, metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    web = stack.people.service("web")
    for bad, words in (
        ({"feedback_id": ""}, "feedback_id is required."),
        ({"kind": pb.FEEDBACK_KIND_UNSPECIFIED}, "Choose the kind of feedback: bounce, complaint or delivery."),
        ({"addresses": ["not an address"]}, "Every address must be an email address."),
        ({"addresses": [], "provider_message_id": ""},
         "Feedback needs the provider's message id or the addresses it is about."),
    ):
        fields = {"feedback_id": unique("sns"), "kind": pb.FEEDBACK_KIND_BOUNCE, "addresses": [client.email],
                  "permanent": True, **bad}
        err = await rpc_error(stack.notify.RecordDeliveryFeedback(
            pb.RecordDeliveryFeedbackRequest(**fields), metadata=web, timeout=5))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, words)
    assert await stack.notify_sql("SELECT 1 FROM suppressed_addresses WHERE address = %s", (client.email,)) == []


# -- RequeueFailedJobs --------------------------------------------------------------------------------


async def test_the_owner_requeues_the_practices_failed_alerts(stack, office):
    practice, clinician, _ = office
    stranger = str(uuid.uuid4())  # not a user: the email fails for good
    await stack.alert(practice.practice.practice_id, conversation(), [(stranger, True)])
    assert ("message_email", "failed", "recipient not found") in await stack.settled(stranger)
    failed = await stack.job(stranger)
    await stack.notify_sql("UPDATE notification_jobs SET attempts = 5 WHERE job_id = %s", (failed["job_id"],))

    owner = stack.people.as_user(practice.owner)
    for metadata in (
        stack.people.as_user(clinician),
        stack.people.service("messaging"),
        # A quick sign-in session is not enough.
        stack.people.tokens.metadata(stack.people.tokens.user(
            practice.owner.user_id, practice.practice.practice_id, "owner", session_kind="magic_link")),
    ):
        err = await rpc_error(stack.notify.RequeueFailedJobs(pb.RequeueFailedJobsRequest(), metadata=metadata,
                                                             timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # Another practice's owner requeues nothing of ours.
    other = await stack.people.practice("Hillside Therapy")
    reply = await stack.notify.RequeueFailedJobs(
        pb.RequeueFailedJobsRequest(job_ids=[failed["job_id"]]), metadata=stack.people.as_user(other.owner), timeout=5)
    assert reply.requeued == 0

    reply = await stack.notify.RequeueFailedJobs(pb.RequeueFailedJobsRequest(job_ids=[failed["job_id"]]),
                                                 metadata=owner, timeout=5)
    assert reply.requeued == 1
    # Sent again with its attempts reset: it fails once more (the recipient still does not exist).
    assert ("message_email", "failed", "recipient not found") in await stack.settled(stranger)
    assert (await stack.job(stranger))["attempts"] == 1
    audit = await stack.notify_sql(
        "SELECT actor, practice_id, target, detail FROM audit_events WHERE action = 'notification.requeue'"
        " AND actor = %s", (practice.owner.user_id,))
    assert audit == [(practice.owner.user_id, practice.practice.practice_id, stranger,
                      {"job_ids": [failed["job_id"]], "requeued": 1, "asked": 1})]
    err = await rpc_error(stack.notify.RequeueFailedJobs(pb.RequeueFailedJobsRequest(job_ids=[0]), metadata=owner,
                                                         timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """``python -m services.notify <args>`` as an operator runs it (off the event loop)."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.notify", *args], cwd=REPO,
                                   env=env, capture_output=True, text=True, timeout=60)


async def test_operators_requeue_from_the_command_line(stack, office):
    practice, _, _ = office
    stranger = str(uuid.uuid4())
    await stack.alert(practice.practice.practice_id, conversation(), [(stranger, True)])
    await stack.settled(stranger)
    failed = await stack.job(stranger)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANT_")}
    env["CONFIDANT_NOTIFY_DATABASE_URL"] = stack.notify_url
    done = await cli(env, "requeue", "--job", str(failed["job_id"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Requeued 1 failed job(s): {failed['job_id']}"
    await stack.settled(stranger)
    # In the practice's trail, under the person the job is for (an operator requeues across practices).
    assert await stack.notify_sql(
        "SELECT practice_id, target FROM audit_events WHERE action = 'notification.requeue'"
        " AND actor LIKE 'operator:%%' AND detail->'job_ids' = %s::jsonb", (f"[{failed['job_id']}]",)) == [
        (practice.practice.practice_id, stranger)]
    missing = await cli({k: v for k, v in env.items() if k != "CONFIDANT_NOTIFY_DATABASE_URL"}, "requeue")
    assert missing.returncode == 2 and "CONFIDANT_NOTIFY_DATABASE_URL is required" in missing.stderr


# -- discreet alerts -----------------------------------------------------------------------------------


async def settings(stack, staff, client_id: str, discreet: bool | None = None) -> bool:
    metadata = stack.people.as_user(staff)
    if discreet is None:
        reply = await stack.notify.GetClientNotificationSettings(
            pb.GetClientNotificationSettingsRequest(client_id=client_id), metadata=metadata, timeout=5)
    else:
        reply = await stack.notify.SetClientNotificationSettings(
            pb.SetClientNotificationSettingsRequest(
                settings=pb.ClientNotificationSettings(client_id=client_id, discreet=discreet)),
            metadata=metadata, timeout=5)
    assert reply.settings.client_id == client_id
    return reply.settings.discreet


async def test_a_discreet_clients_alerts_name_no_practice(stack, office):
    practice, clinician, client = office
    typed, e164 = new_phone()
    await stack.set_phone(practice.owner, client, typed, True)
    assert await settings(stack, clinician, client.user_id) is False
    assert await settings(stack, clinician, client.user_id, discreet=True) is True
    assert await settings(stack, practice.owner, client.user_id) is True

    await stack.alert(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    await stack.settled(client.user_id)
    (email,) = [i for i in await stack.mailbox(client.email) if i.channel == pb.CHANNEL_EMAIL]
    (text,) = await stack.mailbox(e164)
    assert email.subject == "You have a new secure message"
    assert email.text_body.startswith("You have a new secure message.\n\nView message: ")
    assert text.text_body == "You have a new secure message. Check your email to read it. Reply STOP to opt out."
    for part in (email.subject, email.text_body, email.html_body, text.text_body):
        for secret in (PRACTICE, "Lakeside", "Casey", "Jordan", "Dana"):
            assert secret not in part
    assert await stack.notify_sql("SELECT sender FROM mailbox WHERE item_id = %s", (email.item_id,)) == [
        ("Secure Messages",)]

    # Turned off again: the practice signs its alerts.
    assert await settings(stack, clinician, client.user_id, discreet=False) is False
    await stack.alert(practice.practice.practice_id, conversation(), [(client.user_id, True)])
    await stack.settled(client.user_id)
    newest = [i for i in await stack.mailbox(client.email) if i.channel == pb.CHANNEL_EMAIL][0]
    assert newest.text_body.startswith(f"{PRACTICE} sent you a secure message.")
    assert await stack.notify_sql("SELECT sender FROM mailbox WHERE item_id = %s", (newest.item_id,)) == [(PRACTICE,)]

    audit = await stack.notify_sql(
        "SELECT actor, action, detail FROM audit_events WHERE target = %s AND action LIKE 'client_notification%%'"
        " ORDER BY event_id", (client.user_id,))
    assert audit == [
        (clinician.user_id, "client_notification_settings.read", {}),
        (clinician.user_id, "client_notification_settings.update", {"discreet": True, "was": False}),
        (practice.owner.user_id, "client_notification_settings.read", {}),
        (clinician.user_id, "client_notification_settings.update", {"discreet": False, "was": True}),
    ]


async def test_discreet_settings_are_for_staff_of_the_clients_practice(stack, office):
    practice, clinician, client = office
    other = await stack.people.practice("Hillside Therapy")
    for staff, client_id in ((other.owner, client.user_id), (practice.owner, clinician.user_id),
                             (practice.owner, str(uuid.uuid4()))):
        for discreet in (None, True):
            err = await rpc_error(settings(stack, staff, client_id, discreet))
            assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "No such client in your practice.")
    err = await rpc_error(stack.notify.GetClientNotificationSettings(
        pb.GetClientNotificationSettingsRequest(client_id=client.user_id), metadata=stack.people.as_user(client),
        timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(stack.notify.SetClientNotificationSettings(
        pb.SetClientNotificationSettingsRequest(settings=pb.ClientNotificationSettings(client_id=client.user_id)),
        metadata=stack.people.service("web"), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(settings(stack, practice.owner, ""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await stack.notify_sql("SELECT 1 FROM client_notification_settings WHERE client_id = %s",
                                  (client.user_id,)) == []


async def test_the_owners_audit_page_reads_an_index_of_the_practices_rows_newest_first(stack):
    [(definition,)] = await stack.notify_sql(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'audit_events' AND indexname = 'audit_events_practice_idx'")
    assert definition.endswith("USING btree (practice_id, event_id DESC)")

"""Practice settings and per-client enablement: who may read and change them."""

from __future__ import annotations

import uuid

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import rpc_error


async def test_practice_settings_default_and_only_the_owner_changes_them(messaging, team):
    for person in (team.owner, team.team_member, team.client):
        reply = await messaging.stub.GetPracticeSettings(
            pb.GetPracticeSettingsRequest(), metadata=messaging.as_user(person), timeout=5
        )
        assert reply.settings.secure_messaging_enabled is True
        assert reply.settings.auto_enable_new_clients is False

    wanted = pb.PracticeSettings(secure_messaging_enabled=True, auto_enable_new_clients=True)
    for person in (team.clinician, team.team_member, team.client):
        err = await rpc_error(
            messaging.stub.UpdatePracticeSettings(
                pb.UpdatePracticeSettingsRequest(settings=wanted),
                metadata=messaging.as_user(person),
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    reply = await messaging.stub.UpdatePracticeSettings(
        pb.UpdatePracticeSettingsRequest(settings=wanted), metadata=messaging.as_user(team.owner), timeout=5
    )
    assert reply.settings.auto_enable_new_clients is True
    reply = await messaging.stub.GetPracticeSettings(
        pb.GetPracticeSettingsRequest(), metadata=messaging.as_user(team.clinician), timeout=5
    )
    assert reply.settings == wanted
    audit = await messaging.sql(
        "SELECT actor, outcome, target FROM audit_events WHERE action = 'practice_settings.update'"
    )
    assert audit == [(team.owner.user_id, "ok", team.practice_id)]

    err = await rpc_error(
        messaging.stub.UpdatePracticeSettings(
            pb.UpdatePracticeSettingsRequest(), metadata=messaging.as_user(team.owner), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_update_mask_changes_only_the_fields_it_names(messaging, team):
    owner = messaging.as_user(team.owner)

    async def update(settings: pb.PracticeSettings, *paths: str) -> pb.PracticeSettings:
        request = pb.UpdatePracticeSettingsRequest(settings=settings)
        request.update_mask.paths.extend(paths)
        return (await messaging.stub.UpdatePracticeSettings(request, metadata=owner, timeout=5)).settings

    # Only "automatically enable": the message's other (false) fields are left as they are.
    after = await update(pb.PracticeSettings(auto_enable_new_clients=True), "auto_enable_new_clients")
    assert (after.secure_messaging_enabled, after.auto_enable_new_clients, after.team_messaging_enabled) == (
        True, True, True)
    after = await update(pb.PracticeSettings(), "team_messaging_enabled")
    assert (after.secure_messaging_enabled, after.auto_enable_new_clients, after.team_messaging_enabled) == (
        True, True, False)
    # Without a mask, the whole message is the new settings.
    after = await update(pb.PracticeSettings(secure_messaging_enabled=True))
    assert (after.secure_messaging_enabled, after.auto_enable_new_clients, after.team_messaging_enabled) == (
        True, False, False)
    err = await rpc_error(update(pb.PracticeSettings(), "auto_enable_new_clients", "colour"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'colour'" in err.details()


async def test_settings_need_a_person_and_a_token(messaging):
    err = await rpc_error(
        messaging.stub.GetPracticeSettings(
            pb.GetPracticeSettingsRequest(), metadata=messaging.as_service("web"), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(messaging.stub.GetPracticeSettings(pb.GetPracticeSettingsRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_staff_enable_a_client_idempotently_and_it_is_audited(messaging, team):
    def get(person, client_id):
        return messaging.stub.GetClientMessaging(
            pb.GetClientMessagingRequest(client_id=client_id), metadata=messaging.as_user(person), timeout=5
        )

    assert (await get(team.team_member, team.client.user_id)).enabled is False
    for _ in range(2):
        reply = await messaging.stub.EnableClientMessaging(
            pb.EnableClientMessagingRequest(client_id=team.client.user_id),
            metadata=messaging.as_user(team.team_member),
            timeout=5,
        )
        assert reply.enabled is True
    assert (await get(team.clinician, team.client.user_id)).enabled is True
    assert (await get(team.clinician, team.other_client.user_id)).enabled is False

    audit = await messaging.sql(
        "SELECT actor, outcome, target, practice_id FROM audit_events"
        " WHERE action = 'client_messaging.enable' ORDER BY event_id"
    )
    assert audit == [
        (team.team_member.user_id, "enabled", team.client.user_id, team.practice_id),
        (team.team_member.user_id, "already_enabled", team.client.user_id, team.practice_id),
    ]


async def test_enablement_refusals(messaging, team):
    other = await messaging.team()

    async def enable(person, client_id, **token):
        return await rpc_error(
            messaging.stub.EnableClientMessaging(
                pb.EnableClientMessagingRequest(client_id=client_id),
                metadata=messaging.as_user(person, **token),
                timeout=5,
            )
        )

    # A client cannot enable anyone, themselves included.
    assert (await enable(team.client, team.client.user_id)).code() == grpc.StatusCode.PERMISSION_DENIED
    # Another practice's client, a staff member and a stranger are all "no such client".
    for client_id in (other.client.user_id, team.team_member.user_id, str(uuid.uuid4())):
        err = await enable(team.clinician, client_id)
        assert err.code() == grpc.StatusCode.NOT_FOUND, client_id
        assert err.details() == "No such client."
    err = await enable(team.clinician, "not-a-uuid")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(
        messaging.stub.GetClientMessaging(
            pb.GetClientMessagingRequest(client_id=other.client.user_id),
            metadata=messaging.as_user(team.clinician),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(
        messaging.stub.EnableClientMessaging(
            pb.EnableClientMessagingRequest(client_id=team.client.user_id),
            metadata=messaging.as_service("web"),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_practice_with_messaging_off_cannot_enable_clients(messaging, team):
    await messaging.stub.UpdatePracticeSettings(
        pb.UpdatePracticeSettingsRequest(settings=pb.PracticeSettings(secure_messaging_enabled=False)),
        metadata=messaging.as_user(team.owner),
        timeout=5,
    )
    err = await rpc_error(
        messaging.stub.EnableClientMessaging(
            pb.EnableClientMessagingRequest(client_id=team.client.user_id),
            metadata=messaging.as_user(team.clinician),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

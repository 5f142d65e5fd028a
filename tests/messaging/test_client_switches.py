"""The team-messaging switch, disabling a client, and auth's new-client hook
(automatic enablement and the portal invitation)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as pb

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from tests.messaging.harness import MessagingHarness, Team, eventually, rpc_error
from tests.messaging.test_service_accounts import _account_token
from tests.support import running, service_env

OFF_FOR_CLIENT = "Secure messaging is turned off for this client."


@pytest.fixture(scope="module")
async def auth_service_and_database(fresh_database, keys_dir):
    """auth with a known database, to see the invitations it issued."""
    url = await fresh_database("auth")
    service = await create_auth(AuthConfig.load(service_env(keys_dir, auth_database_url=url)))
    async with running(service) as address:
        yield address, url


@pytest.fixture(scope="module")
def auth_address(auth_service_and_database):
    return auth_service_and_database[0]


async def auth_sql(auth_service_and_database, query: str, params=()) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(auth_service_and_database[1]) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def save_settings(messaging: MessagingHarness, team: Team, **settings: bool) -> pb.PracticeSettings:
    wanted = {"secure_messaging_enabled": True, "team_messaging_enabled": True, **settings}
    reply = await messaging.stub.UpdatePracticeSettings(
        pb.UpdatePracticeSettingsRequest(settings=pb.PracticeSettings(**wanted)),
        metadata=messaging.as_user(team.owner),
        timeout=5,
    )
    return reply.settings


async def conversation(messaging: MessagingHarness, person, cid: str) -> pb.Conversation:
    reply = await messaging.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(person), timeout=5
    )
    return reply.conversation


# -- team messaging -------------------------------------------------------------------


async def test_team_messaging_governs_staff_only_conversations(messaging, team):
    reply = await messaging.stub.GetPracticeSettings(
        pb.GetPracticeSettingsRequest(), metadata=messaging.as_user(team.team_member), timeout=5
    )
    assert reply.settings.team_messaging_enabled is True  # the default
    with_client = (await messaging.client_conversation(team)).conversation_id
    staff = await messaging.open(team.clinician, team.team_member)
    assert staff.can_send is True
    assert staff.cannot_send_reason == pb.CANNOT_SEND_REASON_UNSPECIFIED
    await messaging.send(team.team_member, staff.conversation_id, "Morning!")  # listed from now on

    saved = await save_settings(messaging, team, team_messaging_enabled=False)
    assert saved.team_messaging_enabled is False and saved.secure_messaging_enabled is True
    audit = await messaging.sql(
        "SELECT detail FROM audit_events WHERE action = 'practice_settings.update' ORDER BY event_id DESC LIMIT 1"
    )
    assert audit[0][0]["team_messaging_enabled"] is False

    for call in (
        messaging.send(team.clinician, staff.conversation_id, "lunch?"),
        messaging.open(team.owner, team.team_member),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == "Team messaging is turned off for this practice."
    # Conversations with a client follow the other switch.
    assert (await messaging.send(team.clinician, with_client, "See you at 3.")).created
    got = await conversation(messaging, team.clinician, staff.conversation_id)
    assert (got.can_send, got.cannot_send_reason) == (False, pb.CANNOT_SEND_REASON_TEAM_DISABLED)
    assert (await conversation(messaging, team.clinician, with_client)).can_send is True
    listed = await messaging.stub.ListConversations(
        pb.ListConversationsRequest(), metadata=messaging.as_user(team.clinician), timeout=5
    )
    assert {c.conversation_id: (c.can_send, c.cannot_send_reason) for c in listed.conversations} == {
        with_client: (True, pb.CANNOT_SEND_REASON_UNSPECIFIED),
        staff.conversation_id: (False, pb.CANNOT_SEND_REASON_TEAM_DISABLED),
    }

    await save_settings(messaging, team, team_messaging_enabled=True)
    assert (await messaging.send(team.clinician, staff.conversation_id, "lunch?")).created


# -- disabling a client ---------------------------------------------------------------


async def test_a_disabled_client_stays_readable_and_nobody_can_send(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "Welcome.")
    _, token = await _account_token(messaging, team.owner, ["messaging.send"])

    async def disable(person):
        reply = await messaging.stub.DisableClientMessaging(
            pb.DisableClientMessagingRequest(client_id=team.client.user_id),
            metadata=messaging.as_user(person),
            timeout=5,
        )
        return reply.enabled

    # A team member may not (clinicians and the owner decide); nothing changes, nothing is audited.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await disable(team.team_member)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await disable(team.clinician) is False
    assert await disable(team.owner) is False  # again: no change
    audit = await messaging.sql(
        "SELECT actor, outcome, target, practice_id, detail FROM audit_events"
        " WHERE action = 'client_messaging.disable' ORDER BY event_id"
    )
    assert audit == [
        (team.clinician.user_id, "disabled", team.client.user_id, team.practice_id, {"changed": True}),
        (team.owner.user_id, "already_disabled", team.client.user_id, team.practice_id, {"changed": False}),
    ]
    got = await messaging.stub.GetClientMessaging(
        pb.GetClientMessagingRequest(client_id=team.client.user_id),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    assert got.enabled is False

    # Readable by its participants...
    for person in (team.client, team.clinician):
        assert [m.body for m in await messaging.messages(person, cid)] == ["Welcome."]
    assert (await conversation(messaging, team.client, cid)).can_send is False
    # ...but no one sends in it: staff, the client (full or quick session), a practice system.
    for call in (
        messaging.send(team.clinician, cid, "Hello?"),
        messaging.send(team.client, cid, "Hi"),
        messaging.send(team.client, cid, "Hi", metadata=messaging.as_user(team.client, "magic_link", cid)),
        messaging.send(team.owner, cid, "Reminder", metadata=messaging.tokens.metadata(token)),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == OFF_FOR_CLIENT
    # A new conversation with them cannot be opened either.
    err = await rpc_error(messaging.open(team.team_member, team.client))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Enabled again: sending works, and the change is audited as one.
    await messaging.enable(team.clinician, team.client)
    assert (await messaging.send(team.client, cid, "Thanks!")).created
    enabled = await messaging.sql(
        "SELECT outcome, detail FROM audit_events WHERE action = 'client_messaging.enable' ORDER BY event_id"
    )
    assert enabled == [("enabled", {"changed": True}), ("enabled", {"changed": True})]


async def test_a_send_racing_a_disable_never_lands_after_it(messaging, team):
    """The switch is checked again inside the send's transaction: a disable that commits
    while a send is on its way (past the handler's check) still refuses it."""
    cid = (await messaging.client_conversation(team)).conversation_id
    async with await psycopg.AsyncConnection.connect(messaging.database_url) as disabler:
        # A disable in flight: it holds the client's row until it commits.
        await disabler.execute(
            "UPDATE client_messaging SET enabled = false WHERE client_id = %s", (team.client.user_id,)
        )
        send = asyncio.ensure_future(messaging.send(team.clinician, cid, "Are you there?"))

        async def waiting_for_the_lock():
            rows = await messaging.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s", ("%client_messaging%FOR SHARE%",)
            )
            return rows[0][0] == 1

        await eventually(waiting_for_the_lock)
        await disabler.commit()
    err = await rpc_error(send)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details() == OFF_FOR_CLIENT
    assert await messaging.sql("SELECT count(*) FROM messages WHERE conversation_id = %s", (cid,)) == [(0,)]


async def test_disable_refusals(messaging, team):
    other = await messaging.team()
    await messaging.enable(team.clinician, team.client)
    _, token = await _account_token(messaging, team.owner, ["messaging.send", "messaging.read"])

    def disable(client_id: str, metadata):
        return messaging.stub.DisableClientMessaging(
            pb.DisableClientMessagingRequest(client_id=client_id), metadata=metadata, timeout=5
        )

    cid = (await messaging.open(team.clinician, team.client)).conversation_id
    for metadata in (
        messaging.as_user(team.client),
        messaging.as_user(team.client, "magic_link", cid),
        messaging.as_user(team.clinician, "magic_link", cid),
        messaging.as_service("web"),
        messaging.tokens.metadata(token),
    ):
        err = await rpc_error(disable(team.client.user_id, metadata))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    for client_id in (other.client.user_id, team.team_member.user_id, str(uuid.uuid4())):
        err = await rpc_error(disable(client_id, messaging.as_user(team.clinician)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(disable("not-an-id", messaging.as_user(team.clinician)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(disable(team.client.user_id, ()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing changed: the client can still be messaged.
    assert (await messaging.send(team.clinician, cid, "Still on.")).created


# -- auth's new-client hook -----------------------------------------------------------


def client_created(messaging: MessagingHarness, practice_id: str, client_id: str, metadata=None):
    return messaging.stub.HandleClientCreated(
        pb.HandleClientCreatedRequest(practice_id=practice_id, client_id=client_id),
        metadata=metadata if metadata is not None else messaging.as_service("auth"),
        timeout=5,
    )


async def invitations(auth_service_and_database, user_id: str) -> int:
    rows = await auth_sql(
        auth_service_and_database,
        "SELECT count(*) FROM credential_links WHERE user_id = %s AND purpose = 'invitation'",
        (user_id,),
    )
    return rows[0][0]


async def test_a_new_client_is_enabled_and_invited_once_when_the_practice_says_so(
    messaging, team, auth_service_and_database
):
    # Automatic enablement off (the default): nothing happens.
    reply = await client_created(messaging, team.practice_id, team.client.user_id)
    assert reply.enabled is False
    assert await messaging.sql("SELECT * FROM client_messaging") == []
    assert await invitations(auth_service_and_database, team.client.user_id) == 0

    await save_settings(messaging, team, auto_enable_new_clients=True)
    newcomer = await messaging.user(team.practice_id, auth_pb.ROLE_CLIENT, "Morgan Diaz")
    for _ in range(2):  # auth's outbox delivers at least once
        reply = await client_created(messaging, team.practice_id, newcomer.user_id)
        assert reply.enabled is True
    assert await invitations(auth_service_and_database, newcomer.user_id) == 1
    audit = await messaging.sql(
        "SELECT actor, outcome, target, practice_id, detail FROM audit_events"
        " WHERE action = 'client_messaging.enable' ORDER BY event_id"
    )
    assert audit == [
        ("service:auth", "enabled", newcomer.user_id, team.practice_id, {"automatic": True, "changed": True}),
        (
            "service:auth",
            "left_unchanged",
            newcomer.user_id,
            team.practice_id,
            {"automatic": True, "changed": False},
        ),
    ]
    # Staff can message them right away.
    assert (await messaging.open(team.clinician, newcomer)).can_send is True

    # Disabled by staff later, a late repeat of the hook leaves them disabled.
    await messaging.stub.DisableClientMessaging(
        pb.DisableClientMessagingRequest(client_id=newcomer.user_id),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    assert (await client_created(messaging, team.practice_id, newcomer.user_id)).enabled is False

    # With secure messaging off for the practice, no automatic enablement either.
    await save_settings(messaging, team, secure_messaging_enabled=False, auto_enable_new_clients=True)
    later = await messaging.user(team.practice_id, auth_pb.ROLE_CLIENT, "Quinn Roberts")
    assert (await client_created(messaging, team.practice_id, later.user_id)).enabled is False
    assert await invitations(auth_service_and_database, later.user_id) == 0
    rows = await messaging.sql("SELECT 1 FROM client_messaging WHERE client_id = %s", (later.user_id,))
    assert rows == []


async def test_only_auth_reports_new_clients_and_only_real_ones(messaging, team):
    other = await messaging.team()
    await save_settings(messaging, team, auto_enable_new_clients=True)
    _, token = await _account_token(messaging, team.owner, ["messaging.send", "messaging.read"])
    for metadata in (
        messaging.as_service("web"),
        messaging.as_service("notify"),
        messaging.as_user(team.owner),
        messaging.tokens.metadata(token),
    ):
        err = await rpc_error(client_created(messaging, team.practice_id, team.client.user_id, metadata))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(client_created(messaging, team.practice_id, team.client.user_id, ()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # Another practice's client, a staff member, nobody: not a client of this practice.
    for client_id in (other.client.user_id, team.clinician.user_id, str(uuid.uuid4())):
        err = await rpc_error(client_created(messaging, team.practice_id, client_id))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert err.details() == "No such client in this practice."
    for practice_id, client_id in (("", team.client.user_id), (team.practice_id, "x")):
        err = await rpc_error(client_created(messaging, practice_id, client_id))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await messaging.sql("SELECT * FROM client_messaging") == []

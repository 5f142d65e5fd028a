"""Why nobody can send (defect 5): the practice's switch wins over the client's own, team
messaging governs staff-only conversations, and every Conversation, FindConversation and
refused send says which."""

from __future__ import annotations

import itertools

import grpc
import pytest
from confidant.messaging.v1 import messaging_service_pb2 as pb

from services.messaging.sending import CannotSend, cannot_send
from tests.messaging.harness import MessagingHarness, Team, rpc_error

UNSPECIFIED = pb.CANNOT_SEND_REASON_UNSPECIFIED
PRACTICE = pb.CANNOT_SEND_REASON_PRACTICE_DISABLED
CLIENT = pb.CANNOT_SEND_REASON_CLIENT_DISABLED
TEAM = pb.CANNOT_SEND_REASON_TEAM_DISABLED

WORDS = {
    PRACTICE: "Secure messaging with clients is turned off for this practice.",
    CLIENT: "Secure messaging is turned off for this client.",
    TEAM: "Team messaging is turned off for this practice.",
}


@pytest.mark.parametrize(
    "has_client, client_enabled, secure, team", list(itertools.product([True, False], repeat=4))
)
def test_the_rule(has_client, client_enabled, secure, team):
    reason = cannot_send(
        client_id="c1" if has_client else None,
        client_enabled=client_enabled,
        secure_messaging_enabled=secure,
        team_messaging_enabled=team,
    )
    if not has_client:
        # Between staff only team messaging counts.
        assert reason == (None if team else CannotSend.TEAM_DISABLED)
    elif not secure:
        # The practice's switch wins: enabling the client would change nothing.
        assert reason == CannotSend.PRACTICE_DISABLED
    else:
        assert reason == (None if client_enabled else CannotSend.CLIENT_DISABLED)


async def settings(messaging: MessagingHarness, team: Team, secure: bool = True, team_messaging: bool = True):
    await messaging.stub.UpdatePracticeSettings(
        pb.UpdatePracticeSettingsRequest(
            settings=pb.PracticeSettings(secure_messaging_enabled=secure, team_messaging_enabled=team_messaging)
        ),
        metadata=messaging.as_user(team.owner),
        timeout=5,
    )


async def switch_client(messaging: MessagingHarness, team: Team, on: bool):
    if on:
        await messaging.enable(team.clinician, team.client)
    else:
        await messaging.stub.DisableClientMessaging(
            pb.DisableClientMessagingRequest(client_id=team.client.user_id),
            metadata=messaging.as_user(team.clinician),
            timeout=5,
        )


async def reasons(messaging: MessagingHarness, team: Team, cid: str, others) -> set[tuple[bool, int]]:
    """(can_send, reason) as the clinician sees the conversation through every RPC that returns it."""
    me = messaging.as_user(team.clinician)
    got = (
        await messaging.stub.GetConversation(pb.GetConversationRequest(conversation_id=cid), metadata=me, timeout=5)
    ).conversation
    [listed] = [c for c in await messaging.listed(team.clinician) if c.conversation_id == cid]
    found = await messaging.find(team.clinician, others)
    assert found.found and found.conversation.conversation_id == cid
    return {
        (got.can_send, got.cannot_send_reason),
        (listed.can_send, listed.cannot_send_reason),
        (found.can_send, found.cannot_send_reason),
        (found.conversation.can_send, found.conversation.cannot_send_reason),
    }


async def client_switches(messaging: MessagingHarness, team: Team) -> tuple[bool, bool]:
    reply = await messaging.stub.GetClientMessaging(
        pb.GetClientMessagingRequest(client_id=team.client.user_id),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    return reply.enabled, reply.practice_enabled


async def test_each_conversation_says_why_nobody_can_send(messaging, team):
    await messaging.enable(team.clinician, team.client)
    cid = (await messaging.send_to(team.clinician, [team.client], "Hello")).message.conversation_id
    staff = (await messaging.send_to(team.clinician, [team.team_member], "Lunch?")).message.conversation_id
    assert await reasons(messaging, team, cid, [team.client]) == {(True, UNSPECIFIED)}
    assert await client_switches(messaging, team) == (True, True)

    async def refusal(conversation_id: str, others) -> tuple[grpc.StatusCode, str]:
        by_id = await rpc_error(messaging.send(team.clinician, conversation_id, "Are you there?"))
        by_people = await rpc_error(messaging.send_to(team.clinician, others, "Are you there?"))
        assert (by_id.code(), by_id.details()) == (by_people.code(), by_people.details())
        return by_id.code(), by_id.details()

    # The client's own switch off.
    await switch_client(messaging, team, on=False)
    assert await reasons(messaging, team, cid, [team.client]) == {(False, CLIENT)}
    assert await refusal(cid, [team.client]) == (grpc.StatusCode.FAILED_PRECONDITION, WORDS[CLIENT])
    assert await client_switches(messaging, team) == (False, True)

    # The practice's switch off wins, whatever the client's says.
    for client_on in (False, True):
        await settings(messaging, team, secure=True)  # (a client is enabled only while it is on)
        await switch_client(messaging, team, on=client_on)
        await settings(messaging, team, secure=False)
        assert await reasons(messaging, team, cid, [team.client]) == {(False, PRACTICE)}
        assert await refusal(cid, [team.client]) == (grpc.StatusCode.FAILED_PRECONDITION, WORDS[PRACTICE])
        assert await client_switches(messaging, team) == (client_on, False)
    # Staff among themselves are not concerned.
    assert await reasons(messaging, team, staff, [team.team_member]) == {(True, UNSPECIFIED)}

    # Team messaging off: only the staff-only conversation.
    await settings(messaging, team, secure=True, team_messaging=False)
    assert await reasons(messaging, team, staff, [team.team_member]) == {(False, TEAM)}
    assert await refusal(staff, [team.team_member]) == (grpc.StatusCode.FAILED_PRECONDITION, WORDS[TEAM])
    assert await reasons(messaging, team, cid, [team.client]) == {(True, UNSPECIFIED)}
    # Nothing that was refused was stored.
    assert await messaging.sql("SELECT count(*) FROM messages") == [(2,)]


async def test_find_says_why_for_people_who_have_no_conversation_yet(messaging, team):
    async def why(others) -> tuple[bool, bool, int]:
        found = await messaging.find(team.clinician, others)
        return found.found, found.can_send, found.cannot_send_reason

    # A client never enabled; then enabled.
    assert await why([team.client]) == (False, False, CLIENT)
    await messaging.enable(team.clinician, team.client)
    assert await why([team.client]) == (False, True, UNSPECIFIED)
    await settings(messaging, team, secure=False, team_messaging=False)
    assert await why([team.client]) == (False, False, PRACTICE)
    assert await why([team.client, team.team_member]) == (False, False, PRACTICE)
    assert await why([team.team_member]) == (False, False, TEAM)
    # Nothing was created by asking, and a first send is refused with the same reason.
    err = await rpc_error(messaging.send_to(team.clinician, [team.team_member], "Lunch?"))
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, WORDS[TEAM])
    assert await messaging.sql("SELECT count(*) FROM conversations") == [(0,)]

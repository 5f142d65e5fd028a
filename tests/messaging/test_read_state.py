"""GetReadState: notify asks whether a participant has read up to a message (notify only)."""

from __future__ import annotations

import uuid

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import rpc_error
from tests.messaging.test_service_accounts import _account_token


def read_state(messaging, conversation_id: str, user_id: str, metadata=None):
    return messaging.stub.GetReadState(
        pb.GetReadStateRequest(conversation_id=conversation_id, user_id=user_id),
        metadata=metadata if metadata is not None else messaging.as_service("notify"),
        timeout=5,
    )


async def test_notify_reads_a_participants_cursor_as_it_moves(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.client, cid, "Can we talk tomorrow?")
    await messaging.send(team.client, cid, "Any time after 10 works.")

    state = await read_state(messaging, cid, team.clinician.user_id)
    assert (state.participant, state.read_seq, state.last_seq) == (True, 0, 2)
    # The sender has read their own messages.
    state = await read_state(messaging, cid, team.client.user_id)
    assert (state.participant, state.read_seq, state.last_seq) == (True, 2, 2)

    await messaging.stub.MarkRead(
        pb.MarkReadRequest(conversation_id=cid, read_seq=1), metadata=messaging.as_user(team.clinician), timeout=5
    )
    state = await read_state(messaging, cid, team.clinician.user_id)
    assert (state.read_seq, state.last_seq) == (1, 2)

    # Not in the conversation, or no such conversation: not a participant.
    for conversation_id, user_id in (
        (cid, team.team_member.user_id),
        (str(uuid.uuid4()), team.clinician.user_id),
    ):
        state = await read_state(messaging, conversation_id, user_id)
        assert (state.participant, state.read_seq, state.last_seq) == (False, 0, 0)


async def test_only_notify_may_read_the_state(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    _, token = await _account_token(messaging, team.owner, ["messaging.read", "messaging.send"])
    for metadata in (
        messaging.tokens.metadata(token),
        messaging.as_service("web"),
        messaging.as_service("auth"),
        messaging.as_user(team.clinician),
        messaging.as_user(team.client),
        messaging.as_user(team.client, "magic_link", cid),
    ):
        err = await rpc_error(read_state(messaging, cid, team.clinician.user_id, metadata))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(read_state(messaging, cid, team.clinician.user_id, ()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    for conversation_id, user_id in (("nope", team.clinician.user_id), (cid, "")):
        err = await rpc_error(read_state(messaging, conversation_id, user_id))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

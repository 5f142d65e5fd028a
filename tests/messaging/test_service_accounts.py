"""A service account can send a message through messaging's gRPC API and is
refused outside its scopes (real auth issues the token; real messaging checks it)."""

from __future__ import annotations

import grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import MessagingHarness, Team, rpc_error
from tests.support import unique


async def _account_token(
    messaging: MessagingHarness, owner: auth_pb.User, scopes: list[str]
) -> tuple[str, str]:
    """(service account id, access token) for a new account of the owner's practice."""
    created = await messaging.auth.CreateServiceAccount(
        auth_pb.CreateServiceAccountRequest(display_name="Practice EHR", scopes=scopes),
        metadata=messaging.as_user(owner),
        timeout=5,
    )
    issued = await messaging.auth.IssueServiceAccountToken(
        auth_pb.IssueServiceAccountTokenRequest(
            client_id=created.account.client_id, client_secret=created.client_secret
        ),
        timeout=5,
    )
    return created.account.service_account_id, issued.access_token


async def test_a_service_account_sends_into_its_practice_and_is_refused_outside_its_scopes(
    messaging: MessagingHarness, team: Team
):
    conversation = await messaging.client_conversation(team)
    account_id, token = await _account_token(messaging, team.owner, ["messaging.send"])
    sender = messaging.tokens.metadata(token)

    sent = await messaging.send(
        team.owner, conversation.conversation_id, "Your appointment is confirmed.", metadata=sender
    )
    assert sent.created and sent.message.sender_id == account_id
    # It reaches the client's conversation.
    seen = await messaging.messages(team.client, conversation.conversation_id)
    assert [(m.sender_id, m.body) for m in seen] == [(account_id, "Your appointment is confirmed.")]
    # An idempotent retry makes no second message.
    retry = await messaging.stub.SendMessage(
        pb.SendMessageRequest(
            conversation_id=conversation.conversation_id, body="Hello", idempotency_key="ehr-1"
        ),
        metadata=sender,
        timeout=5,
    )
    again = await messaging.stub.SendMessage(
        pb.SendMessageRequest(
            conversation_id=conversation.conversation_id, body="Hello", idempotency_key="ehr-1"
        ),
        metadata=sender,
        timeout=5,
    )
    assert retry.created and not again.created and again.message.message_id == retry.message.message_id

    # OpenConversation with a client of its practice (and a clinician) finds the same conversation.
    opened = await messaging.stub.OpenConversation(
        pb.OpenConversationRequest(participant_ids=[team.client.user_id, team.clinician.user_id]),
        metadata=sender,
        timeout=5,
    )
    assert opened.conversation.conversation_id == conversation.conversation_id and not opened.created
    alone = await rpc_error(
        messaging.stub.OpenConversation(
            pb.OpenConversationRequest(participant_ids=[team.client.user_id]), metadata=sender, timeout=5
        )
    )
    assert alone.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Outside its scopes: reading is refused, and so is anything not granted to service accounts.
    for call in (
        messaging.stub.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation.conversation_id), metadata=sender, timeout=5
        ),
        messaging.stub.ListMessages(
            pb.ListMessagesRequest(conversation_id=conversation.conversation_id), metadata=sender, timeout=5
        ),
        messaging.stub.ListConversations(pb.ListConversationsRequest(), metadata=sender, timeout=5),
        messaging.stub.GetPracticeSettings(pb.GetPracticeSettingsRequest(), metadata=sender, timeout=5),
        messaging.stub.EnableClientMessaging(
            pb.EnableClientMessagingRequest(client_id=team.other_client.user_id), metadata=sender, timeout=5
        ),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err

    # Another practice's conversation does not exist for it.
    other = await messaging.team()
    elsewhere = await messaging.client_conversation(other)
    err = await rpc_error(messaging.send(team.owner, elsewhere.conversation_id, "Hi", metadata=sender))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(
        messaging.stub.OpenConversation(
            pb.OpenConversationRequest(participant_ids=[other.client.user_id, other.clinician.user_id]),
            metadata=sender,
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_a_reading_service_account_lists_the_practice_and_is_audited(
    messaging: MessagingHarness, team: Team
):
    conversation = await messaging.client_conversation(team)
    await messaging.send(team.clinician, conversation.conversation_id, "See you Tuesday.")
    account_id, token = await _account_token(messaging, team.owner, ["messaging.read"])
    reader = messaging.tokens.metadata(token)

    listed = await messaging.stub.ListConversations(pb.ListConversationsRequest(), metadata=reader, timeout=5)
    assert [c.conversation_id for c in listed.conversations] == [conversation.conversation_id]
    read = await messaging.stub.ListMessages(
        pb.ListMessagesRequest(conversation_id=conversation.conversation_id), metadata=reader, timeout=5
    )
    assert [m.body for m in read.messages] == ["See you Tuesday."]
    got = await messaging.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=conversation.conversation_id), metadata=reader, timeout=5
    )
    assert got.conversation.client_id == team.client.user_id and got.conversation.last_seq == 1
    assert got.conversation.can_send is True and got.conversation.unread_count == 0
    other = await messaging.team()
    elsewhere = await messaging.client_conversation(other)
    err = await rpc_error(
        messaging.stub.GetConversation(
            pb.GetConversationRequest(conversation_id=elsewhere.conversation_id), metadata=reader, timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(
        messaging.send(team.owner, conversation.conversation_id, "Hi", key=unique("k"), metadata=reader)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    audited = await messaging.sql(
        "SELECT action, outcome FROM audit_events WHERE actor = %s ORDER BY event_id", (account_id,)
    )
    assert ("conversations.list", "ok") in audited and ("messages.read", "ok") in audited

"""Sending, reading and read cursors; limits, idempotency, ordering, audit, encryption at rest."""

from __future__ import annotations

import asyncio

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import rpc_error


async def test_send_list_read_and_unread(messaging, team):
    conversation = await messaging.client_conversation(team)
    cid = conversation.conversation_id
    sent = await messaging.send(team.clinician, cid, "  Hello Jordan, how was the week?  ")
    assert sent.created is True
    assert sent.message.seq == 1
    assert sent.message.body == "Hello Jordan, how was the week?"  # trimmed
    assert sent.message.sender_id == team.clinician.user_id
    await messaging.send(team.clinician, cid, "Reply when you can.")

    summary = await messaging.unread(team.client)
    assert (summary.unread_messages, summary.unread_conversations) == (2, 1)
    assert (await messaging.unread(team.clinician)).unread_messages == 0  # own messages are read

    messages = await messaging.messages(team.client, cid)
    assert [(m.seq, m.body) for m in messages] == [
        (1, "Hello Jordan, how was the week?"),
        (2, "Reply when you can."),
    ]
    assert [m.body for m in await messaging.messages(team.client, cid, after_seq=1)] == [
        "Reply when you can."
    ]
    assert [m.seq for m in await messaging.messages(team.client, cid, page_size=1)] == [1]

    async def mark(read_seq):
        reply = await messaging.stub.MarkRead(
            pb.MarkReadRequest(conversation_id=cid, read_seq=read_seq),
            metadata=messaging.as_user(team.client),
            timeout=5,
        )
        return reply.read_seq

    assert await mark(1) == 1
    assert (await messaging.unread(team.client)).unread_messages == 1
    assert await mark(0) == 1  # never backwards
    assert await mark(99) == 2  # never past the last message
    summary = await messaging.unread(team.client)
    assert (summary.unread_messages, summary.unread_conversations) == (0, 0)

    reply = await messaging.send(team.client, cid, "It was good, thanks.")
    assert reply.message.seq == 3
    assert (await messaging.unread(team.clinician)).unread_messages == 1
    got = await messaging.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(team.clinician), timeout=5
    )
    assert got.conversation.last_seq == 3 and got.conversation.unread_count == 1
    assert {p.user_id: p.read_seq for p in got.conversation.participants} == {
        team.clinician.user_id: 2,
        team.client.user_id: 3,
    }
    err = await rpc_error(
        messaging.stub.MarkRead(
            pb.MarkReadRequest(conversation_id=cid, read_seq=-1),
            metadata=messaging.as_user(team.client),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_message_limits_by_role(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    # Characters, not bytes: 1,000 accented letters are fine from a client.
    assert (await messaging.send(team.client, cid, "é" * 1000)).created
    err = await rpc_error(messaging.send(team.client, cid, "x" * 1001))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Messages from clients can be at most 1,000 characters."
    assert (await messaging.send(team.clinician, cid, "y" * 5000)).created
    err = await rpc_error(messaging.send(team.clinician, cid, "y" * 5001))
    assert err.details() == "Messages from staff can be at most 5,000 characters."
    for body in ("", "   \n\t "):
        err = await rpc_error(messaging.send(team.clinician, cid, body))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "A message cannot be empty."
    for key in ("", "k" * 201):
        err = await rpc_error(
            messaging.stub.SendMessage(
                pb.SendMessageRequest(conversation_id=cid, body="hi", idempotency_key=key),
                metadata=messaging.as_user(team.clinician),
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(messaging.send(team.clinician, "not-an-id", "hi"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [m.seq for m in await messaging.messages(team.client, cid)] == [1, 2]


async def test_idempotent_retries(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    first = await messaging.send(team.clinician, cid, "See you at 3pm.", key="retry-1")
    again = await messaging.send(team.clinician, cid, "See you at 3pm.", key="retry-1")
    assert again.created is False
    assert again.message == first.message
    err = await rpc_error(messaging.send(team.clinician, cid, "See you at 4pm.", key="retry-1"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "This idempotency key was already used for a different message."
    # Keys belong to their sender: the client may use the same one.
    assert (await messaging.send(team.client, cid, "OK", key="retry-1")).created is True
    assert [m.seq for m in await messaging.messages(team.client, cid)] == [1, 2]
    # One message, one notification event.
    assert (await messaging.sql("SELECT count(*) FROM outbox"))[0][0] == 2


async def test_concurrent_sends_take_consecutive_seqs(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    replies = await asyncio.gather(
        *(messaging.send(team.clinician, cid, f"message {i}", key=f"parallel-{i}") for i in range(20))
    )
    assert sorted(r.message.seq for r in replies) == list(range(1, 21))
    listed = await messaging.messages(team.client, cid)
    assert [m.seq for m in listed] == list(range(1, 21))
    # Each body sits at the seq its send was given.
    assert {m.seq: m.body for m in listed} == {r.message.seq: r.message.body for r in replies}
    rows = await messaging.sql("SELECT last_seq FROM conversations WHERE conversation_id = %s", (cid,))
    assert rows == [(20,)]


async def test_concurrent_sends_with_one_key_make_one_message(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    replies = await asyncio.gather(
        *(messaging.send(team.clinician, cid, "Just once, please.", key="double-click") for _ in range(8))
    )
    assert len({r.message.message_id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    assert (await messaging.sql("SELECT count(*), max(seq) FROM messages"))[0] == (1, 1)
    assert (await messaging.sql("SELECT last_seq FROM conversations"))[0] == (1,)
    assert (await messaging.sql("SELECT count(*) FROM outbox"))[0] == (1,)


async def test_bodies_are_encrypted_at_rest(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    secret = "I have been feeling anxious about the new job."
    await messaging.send(team.client, cid, secret)
    [(ciphertext, nonce, key_version, digest)] = await messaging.sql(
        "SELECT body_ciphertext, nonce, key_version, body_sha256 FROM messages"
    )
    assert secret.encode() not in bytes(ciphertext)
    assert b"anxious" not in bytes(ciphertext)
    assert len(bytes(nonce)) == 12 and key_version == 1 and len(bytes(digest)) == 32
    # Nothing else holds the text either: events and outbox carry ids only.
    dump = await messaging.sql(
        "SELECT (SELECT coalesce(string_agg(payload::text, ''), '') FROM outbox)"
        " || (SELECT coalesce(string_agg(row_to_json(e)::text, ''), '') FROM events e)"
        " || (SELECT coalesce(string_agg(detail::text, ''), '') FROM audit_events)"
    )
    assert "anxious" not in dump[0][0]


async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "first")
    await messaging.send(team.clinician, cid, "second")
    # Someone with database access copies message 1's sealed body over message 2's.
    await messaging.sql(
        "UPDATE messages m SET body_ciphertext = s.body_ciphertext, nonce = s.nonce"
        "  FROM messages s WHERE s.conversation_id = m.conversation_id AND s.seq = 1 AND m.seq = 2"
    )
    assert [m.body for m in await messaging.messages(team.client, cid, page_size=1)] == ["first"]
    err = await rpc_error(messaging.messages(team.client, cid))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "first" not in err.details()


async def test_every_list_messages_call_is_audited(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "hello")
    await messaging.messages(team.client, cid)
    await rpc_error(messaging.messages(team.team_member, cid))
    await rpc_error(messaging.messages(team.client, "nonsense"))
    await rpc_error(
        messaging.stub.ListMessages(
            pb.ListMessagesRequest(conversation_id=cid), metadata=messaging.as_service("web"), timeout=5
        )
    )
    rows = await messaging.sql(
        "SELECT actor, target, outcome, practice_id, detail FROM audit_events"
        " WHERE action = 'messages.read' ORDER BY event_id"
    )
    assert [(actor, target, outcome) for actor, target, outcome, _, _ in rows] == [
        (team.client.user_id, cid, "ok"),
        (team.team_member.user_id, cid, "not_found"),
        (team.client.user_id, "", "invalid_argument"),
        ("service:web", "", "permission_denied"),
    ]
    assert rows[0][3] == team.practice_id
    # Rows about the client's conversation name the client, a refused read's too.
    assert rows[0][4] == {"after_seq": 0, "count": 1, "client_id": team.client.user_id}
    assert rows[1][4] == {"client_id": team.client.user_id}
    assert rows[2][4] == rows[3][4] == {}
    sends = await messaging.sql(
        "SELECT actor, outcome, detail FROM audit_events WHERE action = 'message.send'"
    )
    assert sends == [
        (team.clinician.user_id, "ok", {"conversation_id": cid, "seq": 1, "client_id": team.client.user_id})
    ]


async def test_turning_messaging_off_stops_new_messages_but_keeps_history(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    staff = (await messaging.open(team.clinician, team.team_member)).conversation_id
    await messaging.send(team.clinician, cid, "before")
    await messaging.stub.UpdatePracticeSettings(
        pb.UpdatePracticeSettingsRequest(
            settings=pb.PracticeSettings(secure_messaging_enabled=False, team_messaging_enabled=True)
        ),
        metadata=messaging.as_user(team.owner),
        timeout=5,
    )
    for call, details in (
        (messaging.send(team.client, cid, "after"), "Secure messaging with clients is turned off for this practice."),
        (messaging.send(team.clinician, cid, "after"), "Secure messaging with clients is turned off for this practice."),
        # OpenConversation keeps the words it always had.
        (messaging.open(team.clinician, team.client, team.team_member), "Secure messaging is turned off for this practice."),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == details
    reply = await messaging.stub.GetClientMessaging(
        pb.GetClientMessagingRequest(client_id=team.client.user_id),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    # The client's own switch is still on; the practice's is what stops messages.
    assert (reply.enabled, reply.practice_enabled) == (True, False)
    assert [m.body for m in await messaging.messages(team.client, cid)] == ["before"]
    # Staff among themselves follow the team switch, still on.
    assert (await messaging.send(team.team_member, staff, "still here")).created
    assert (await messaging.open(team.owner, team.team_member)).client_id == ""

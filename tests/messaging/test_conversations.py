"""Opening, reading and listing conversations; who may see which."""

from __future__ import annotations

import uuid

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import rpc_error


async def test_open_needs_an_enabled_client_and_finds_the_same_conversation_again(messaging, team):
    err = await rpc_error(messaging.open(team.clinician, team.client))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "Secure messaging is not enabled for this client."

    await messaging.enable(team.clinician, team.client)
    first = await messaging.stub.OpenConversation(
        pb.OpenConversationRequest(participant_ids=[team.client.user_id]),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    assert first.created is True
    conversation = first.conversation
    assert conversation.practice_id == team.practice_id
    assert conversation.client_id == team.client.user_id
    assert {(p.user_id, p.is_staff) for p in conversation.participants} == {
        (team.clinician.user_id, True),
        (team.client.user_id, False),
    }
    assert conversation.last_seq == 0 and conversation.unread_count == 0

    # The same people (the caller named too, ids repeated) give the same conversation.
    again = await messaging.stub.OpenConversation(
        pb.OpenConversationRequest(
            participant_ids=[team.client.user_id.upper(), team.clinician.user_id, team.client.user_id]
        ),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    assert again.created is False
    assert again.conversation.conversation_id == conversation.conversation_id

    # Different people, a different conversation; staff-only conversations have no client.
    group = await messaging.open(team.clinician, team.client, team.team_member)
    assert group.conversation_id != conversation.conversation_id
    staff_only = await messaging.open(team.team_member, team.clinician)
    assert staff_only.client_id == ""
    assert all(p.is_staff for p in staff_only.participants)


async def test_open_refusals(messaging, team):
    other = await messaging.team()
    await messaging.enable(team.clinician, team.client)
    await messaging.enable(team.clinician, team.other_client)

    async def open_as(person, ids, **token):
        return await rpc_error(
            messaging.stub.OpenConversation(
                pb.OpenConversationRequest(participant_ids=ids),
                metadata=messaging.as_user(person, **token),
                timeout=5,
            )
        )

    assert (await open_as(team.client, [team.clinician.user_id])).code() == grpc.StatusCode.PERMISSION_DENIED
    for ids in ([other.clinician.user_id], [other.client.user_id], [str(uuid.uuid4())]):
        err = await open_as(team.clinician, ids)
        assert err.code() == grpc.StatusCode.NOT_FOUND
    for ids in ([], [team.clinician.user_id], ["nope"], [team.client.user_id, team.other_client.user_id]):
        err = await open_as(team.clinician, ids)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, ids
    err = await rpc_error(
        messaging.stub.OpenConversation(
            pb.OpenConversationRequest(participant_ids=[team.client.user_id]),
            metadata=messaging.as_service("web"),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_only_participants_see_a_conversation(messaging, team):
    conversation = await messaging.client_conversation(team)
    cid = conversation.conversation_id
    for person in (team.clinician, team.client):
        reply = await messaging.stub.GetConversation(
            pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(person), timeout=5
        )
        assert reply.conversation.conversation_id == cid

    other = await messaging.team()
    # Not in it (same practice or another): as if it did not exist.
    for person in (team.team_member, team.owner, team.other_client, other.clinician):
        for call in (
            messaging.stub.GetConversation(
                pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(person), timeout=5
            ),
            messaging.stub.ListMessages(
                pb.ListMessagesRequest(conversation_id=cid), metadata=messaging.as_user(person), timeout=5
            ),
            messaging.stub.SendMessage(
                pb.SendMessageRequest(conversation_id=cid, body="hi", idempotency_key="k"),
                metadata=messaging.as_user(person),
                timeout=5,
            ),
            messaging.stub.MarkRead(
                pb.MarkReadRequest(conversation_id=cid, read_seq=1),
                metadata=messaging.as_user(person),
                timeout=5,
            ),
        ):
            err = await rpc_error(call)
            assert err.code() == grpc.StatusCode.NOT_FOUND
            assert err.details() == "No such conversation."
    err = await rpc_error(
        messaging.stub.GetConversation(
            pb.GetConversationRequest(conversation_id="123"),
            metadata=messaging.as_user(team.client),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Services are never participants.
    for call in (
        messaging.stub.GetConversation(
            pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_service("web"), timeout=5
        ),
        messaging.stub.ListConversations(
            pb.ListConversationsRequest(), metadata=messaging.as_service("web"), timeout=5
        ),
        messaging.stub.GetUnreadSummary(
            pb.GetUnreadSummaryRequest(), metadata=messaging.as_service("notify"), timeout=5
        ),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_conversations_are_listed_newest_activity_first_in_pages(messaging, team):
    # Five conversations for the clinician: with each staff member or client of the practice.
    others = [team.owner, team.team_member, team.client, team.other_client]
    extra = await messaging.user(team.practice_id, 3, "Casey Moore")  # a team member
    others.append(extra)
    for person in others:
        if person in (team.client, team.other_client):
            await messaging.enable(team.clinician, person)
    conversations = [await messaging.open(team.clinician, person) for person in others]
    # Listed from their first message on, by activity: the third, then the first, had messages last.
    for i in (1, 3, 4):
        await messaging.send(team.clinician, conversations[i].conversation_id, "good morning")
    await messaging.send(team.clinician, conversations[2].conversation_id, "hello")
    await messaging.send(others[0], conversations[0].conversation_id, "hi there")
    # Opened but nothing said in it: listed to nobody.
    await messaging.open(team.clinician, team.owner, team.team_member)

    expected = [conversations[0], conversations[2], conversations[4], conversations[3], conversations[1]]
    seen, token, pages = [], "", 0
    while True:
        reply = await messaging.stub.ListConversations(
            pb.ListConversationsRequest(page_size=2, page_token=token),
            metadata=messaging.as_user(team.clinician),
            timeout=5,
        )
        pages += 1
        seen.extend(reply.conversations)
        token = reply.next_page_token
        if not token:
            break
    assert pages == 3
    assert [c.conversation_id for c in seen] == [c.conversation_id for c in expected]
    first = seen[0]
    assert first.last_seq == 1 and first.unread_count == 1  # the owner wrote; the clinician has not read
    assert seen[1].last_seq == 1 and seen[1].unread_count == 0  # the clinician's own message
    assert {p.user_id for p in first.participants} == {team.clinician.user_id, team.owner.user_id}

    # The client sees only their own conversation.
    reply = await messaging.stub.ListConversations(
        pb.ListConversationsRequest(), metadata=messaging.as_user(team.client), timeout=5
    )
    assert [c.conversation_id for c in reply.conversations] == [conversations[2].conversation_id]
    assert reply.conversations[0].unread_count == 1

    for bad in (
        pb.ListConversationsRequest(page_token="garbage!"),
        pb.ListConversationsRequest(page_size=-1),
    ):
        err = await rpc_error(
            messaging.stub.ListConversations(bad, metadata=messaging.as_user(team.clinician), timeout=5)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_recent_contacts_are_the_people_last_messaged(messaging, team):
    await messaging.enable(team.clinician, team.client)
    with_client = await messaging.open(team.clinician, team.client)
    with_sam = await messaging.open(team.clinician, team.team_member)
    await messaging.open(team.clinician, team.owner, team.team_member)
    await messaging.send(team.clinician, with_sam.conversation_id, "lunch?")
    await messaging.send(team.clinician, with_client.conversation_id, "see you thursday")

    reply = await messaging.stub.ListRecentContacts(
        pb.ListRecentContactsRequest(), metadata=messaging.as_user(team.clinician), timeout=5
    )
    assert list(reply.user_ids) == [team.client.user_id, team.team_member.user_id, team.owner.user_id]
    reply = await messaging.stub.ListRecentContacts(
        pb.ListRecentContactsRequest(page_size=1), metadata=messaging.as_user(team.clinician), timeout=5
    )
    assert list(reply.user_ids) == [team.client.user_id]
    err = await rpc_error(
        messaging.stub.ListRecentContacts(
            pb.ListRecentContactsRequest(), metadata=messaging.as_user(team.client), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_magic_link_session_reaches_only_its_conversation(messaging, team):
    conversation = await messaging.client_conversation(team)
    cid = conversation.conversation_id
    await messaging.enable(team.clinician, team.other_client)
    # A second conversation with the same client (a group one) that the link was not sent for.
    group = await messaging.open(team.clinician, team.client, team.team_member)
    await messaging.send(team.clinician, cid, "Your appointment is confirmed.")
    await messaging.send(team.clinician, group.conversation_id, "Welcome, both of you.")
    magic = messaging.as_user(team.client, session_kind="magic_link", conversation_id=cid)

    reply = await messaging.stub.ListMessages(
        pb.ListMessagesRequest(conversation_id=cid), metadata=magic, timeout=5
    )
    assert [m.body for m in reply.messages] == ["Your appointment is confirmed."]
    reply = await messaging.send(team.client, cid, "Thank you!", metadata=magic)
    assert reply.created is True
    listed = await messaging.stub.ListConversations(pb.ListConversationsRequest(), metadata=magic, timeout=5)
    assert [c.conversation_id for c in listed.conversations] == [cid]
    summary = await messaging.stub.GetUnreadSummary(pb.GetUnreadSummaryRequest(), metadata=magic, timeout=5)
    assert (summary.unread_messages, summary.unread_conversations) == (0, 0)  # the reply read up to its seq
    full = await messaging.unread(team.client)
    assert (full.unread_messages, full.unread_conversations) == (1, 1)  # the group message

    gid = group.conversation_id
    for call in (
        messaging.stub.GetConversation(
            pb.GetConversationRequest(conversation_id=gid), metadata=magic, timeout=5
        ),
        messaging.stub.ListMessages(pb.ListMessagesRequest(conversation_id=gid), metadata=magic, timeout=5),
        messaging.stub.SendMessage(
            pb.SendMessageRequest(conversation_id=gid, body="hi", idempotency_key="m1"),
            metadata=magic,
            timeout=5,
        ),
        messaging.stub.MarkRead(
            pb.MarkReadRequest(conversation_id=gid, read_seq=1), metadata=magic, timeout=5
        ),
        messaging.stub.OpenConversation(
            pb.OpenConversationRequest(participant_ids=[team.clinician.user_id]), metadata=magic, timeout=5
        ),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED

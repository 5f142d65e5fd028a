"""Archiving a conversation for oneself (a new message brings it back), and the
conversation list's previews, last sender and unread counts."""

from __future__ import annotations

import uuid

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import MessagingHarness, rpc_error
from tests.messaging.test_service_accounts import _account_token


def archive(messaging: MessagingHarness, cid: str, archived: bool = True, metadata=None, person=None):
    return messaging.stub.ArchiveConversation(
        pb.ArchiveConversationRequest(conversation_id=cid, archived=archived),
        metadata=metadata if metadata is not None else messaging.as_user(person),
        timeout=5,
    )


async def listed(
    messaging: MessagingHarness, person=None, archived: bool = False, page_size: int = 0, metadata=None
) -> list[pb.Conversation]:
    """Every page of the list, in order."""
    seen, token = [], ""
    while True:
        reply = await messaging.stub.ListConversations(
            pb.ListConversationsRequest(page_size=page_size, page_token=token, archived=archived),
            metadata=metadata if metadata is not None else messaging.as_user(person),
            timeout=5,
        )
        seen.extend(reply.conversations)
        token = reply.next_page_token
        if not token:
            return seen


def ids(conversations) -> list[str]:
    return [c.conversation_id for c in conversations]


async def test_archive_hides_for_the_caller_only_and_a_new_message_brings_it_back(messaging, team):
    with_client = (await messaging.client_conversation(team)).conversation_id
    with_sam = (await messaging.open(team.clinician, team.team_member)).conversation_id
    await messaging.send(team.clinician, with_client, "Hello")
    await messaging.send(team.team_member, with_sam, "Hi")  # the newest activity

    reply = await archive(messaging, with_client, person=team.clinician)
    assert reply.archived is True
    await archive(messaging, with_client, person=team.clinician)  # again: no change
    assert ids(await listed(messaging, team.clinician)) == [with_sam]
    archived = await listed(messaging, team.clinician, archived=True)
    assert ids(archived) == [with_client] and archived[0].archived is True
    # Only for the clinician: the client still sees it.
    client_view = await listed(messaging, team.client)
    assert ids(client_view) == [with_client] and client_view[0].archived is False
    assert await listed(messaging, team.client, archived=True) == []

    # The client writes: it is back, on top, for everyone who had archived it.
    await messaging.send(team.client, with_client, "Are you there?")
    back = await listed(messaging, team.clinician)
    assert ids(back) == [with_client, with_sam] and back[0].archived is False
    assert await listed(messaging, team.clinician, archived=True) == []

    # Both archive; a message from either brings it back for both.
    await archive(messaging, with_sam, person=team.clinician)
    await archive(messaging, with_sam, person=team.team_member)
    assert with_sam not in ids(await listed(messaging, team.team_member))
    await messaging.send(team.team_member, with_sam, "Lunch?")
    assert ids(await listed(messaging, team.team_member)) == [with_sam]
    assert ids(await listed(messaging, team.clinician))[0] == with_sam

    # Brought back by hand.
    await archive(messaging, with_client, person=team.client)
    assert (await archive(messaging, with_client, False, person=team.client)).archived is False
    assert ids(await listed(messaging, team.client)) == [with_client]

    audit = await messaging.sql(
        "SELECT actor, action, target, detail FROM audit_events"
        " WHERE action LIKE 'conversation.%%archive' ORDER BY event_id"
    )
    client = {"client_id": team.client.user_id}  # rows about the client's conversation name the client
    assert audit == [
        (team.clinician.user_id, "conversation.archive", with_client, {"changed": True, **client}),
        (team.clinician.user_id, "conversation.archive", with_client, {"changed": False, **client}),
        (team.clinician.user_id, "conversation.archive", with_sam, {"changed": True}),
        (team.team_member.user_id, "conversation.archive", with_sam, {"changed": True}),
        (team.client.user_id, "conversation.archive", with_client, {"changed": True, **client}),
        (team.client.user_id, "conversation.unarchive", with_client, {"changed": True, **client}),
    ]


async def test_archive_refusals_and_the_quick_sign_in(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    group = (await messaging.open(team.clinician, team.client, team.team_member)).conversation_id
    for listed_from_now_on in (cid, group):
        await messaging.send(team.clinician, listed_from_now_on, "Hello")
    other = await messaging.team()
    _, token = await _account_token(messaging, team.owner, ["messaging.send", "messaging.read"])

    # Not a participant (same practice or another): no such conversation.
    for person in (team.team_member, team.other_client, other.clinician):
        err = await rpc_error(archive(messaging, cid, person=person))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(archive(messaging, str(uuid.uuid4()), person=team.clinician))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    for metadata in (
        messaging.as_service("web"),
        messaging.tokens.metadata(token),  # practice systems archive nothing
        messaging.as_user(team.client, "magic_link", group),  # not the link's conversation
    ):
        err = await rpc_error(archive(messaging, cid, metadata=metadata))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(archive(messaging, "nope", person=team.clinician))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(archive(messaging, cid, metadata=()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    # A quick sign-in may archive the conversation its link was sent for (its own view only).
    magic = messaging.as_user(team.client, "magic_link", cid)
    assert (await archive(messaging, cid, metadata=magic)).archived is True
    assert ids(await listed(messaging, metadata=magic, archived=True)) == [cid]
    assert await listed(messaging, metadata=magic) == []
    assert ids(await listed(messaging, team.client)) == [group]


async def test_archived_and_other_lists_page_without_gaps_or_repeats(messaging, team):
    people = [team.owner, team.team_member, team.client, team.other_client]
    people.append(await messaging.user(team.practice_id, 3, "Casey Moore"))
    people.append(await messaging.user(team.practice_id, 2, "Robin Hale"))
    for client in (team.client, team.other_client):
        await messaging.enable(team.clinician, client)
    conversations = [(await messaging.open(team.clinician, p)).conversation_id for p in people]
    for cid in conversations:  # activity order: the last one is the newest
        await messaging.send(team.clinician, cid, "hello")
    newest_first = conversations[::-1]
    hidden = {conversations[1], conversations[4]}
    for cid in hidden:
        await archive(messaging, cid, person=team.clinician)

    for size in (1, 2, 3, 10):
        shown = await listed(messaging, team.clinician, page_size=size)
        assert ids(shown) == [c for c in newest_first if c not in hidden], size
        archived = await listed(messaging, team.clinician, archived=True, page_size=size)
        assert ids(archived) == [c for c in newest_first if c in hidden], size
    # A token from the archived list, used on it again, continues where it stopped.
    first = await messaging.stub.ListConversations(
        pb.ListConversationsRequest(page_size=1, archived=True),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    rest = await messaging.stub.ListConversations(
        pb.ListConversationsRequest(page_size=5, archived=True, page_token=first.next_page_token),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    assert ids(first.conversations) + ids(rest.conversations) == [conversations[4], conversations[1]]
    assert rest.next_page_token == ""


async def test_previews_are_for_participants_and_listing_is_audited(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    staff = (await messaging.open(team.clinician, team.team_member)).conversation_id
    await messaging.open(team.clinician, team.owner)  # opened, nothing said in it
    long_body = "Thank you for today. " * 10  # 210 characters
    await messaging.send(team.team_member, staff, "Lunch at noon?")
    await messaging.send(team.clinician, cid, "First, a short note.")
    await messaging.send(team.client, cid, "é" + long_body)

    for person, unread in ((team.clinician, 1), (team.client, 0)):
        [conversation] = [c for c in await listed(messaging, person) if c.conversation_id == cid]
        assert conversation.preview == ("é" + long_body.strip())[:100]
        assert len(conversation.preview) == 100
        assert conversation.last_sender_id == team.client.user_id
        assert conversation.unread_count == unread
        assert conversation.can_send is True
    # A conversation nothing was said in is listed to nobody.
    assert ids(await listed(messaging, team.clinician)) == [cid, staff]
    assert ids(await listed(messaging, team.owner)) == []

    # A practice system reading the practice's conversations is no participant: no preview.
    account_id, token = await _account_token(messaging, team.owner, ["messaging.read"])
    system = await listed(messaging, metadata=messaging.tokens.metadata(token))
    [seen] = [c for c in system if c.conversation_id == cid]
    assert seen.preview == "" and seen.last_sender_id == team.client.user_id
    assert await listed(messaging, metadata=messaging.tokens.metadata(token), archived=True) == []

    # Other views of a conversation carry no preview (they are not audited reads).
    got = await messaging.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(team.client), timeout=5
    )
    assert got.conversation.preview == "" and got.conversation.last_sender_id == team.client.user_id

    rows = await messaging.sql(
        "SELECT actor, outcome, practice_id, detail FROM audit_events"
        " WHERE action = 'conversations.list' ORDER BY event_id"
    )
    # One row per client whose conversations the page showed (naming them), one for the rest.
    assert rows[:2] == [
        (
            team.clinician.user_id,
            "ok",
            team.practice_id,
            {"conversation_ids": [cid], "archived": False, "client_id": team.client.user_id},
        ),
        (team.clinician.user_id, "ok", team.practice_id, {"conversation_ids": [staff], "archived": False}),
    ]
    assert rows[2][0] == team.client.user_id and rows[2][3]["conversation_ids"] == [cid]
    assert rows[2][3]["client_id"] == team.client.user_id
    assert (account_id, "ok", team.practice_id) in [r[:3] for r in rows]
    # The text itself is nowhere in the audit trail.
    assert not any("Thank you" in str(detail) for *_, detail in rows)


async def test_a_preview_that_cannot_be_decrypted_is_left_empty(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "first")
    await messaging.send(team.clinician, cid, "second")
    # A sealed body copied onto another row no longer opens: the list still answers.
    await messaging.sql(
        "UPDATE messages m SET body_ciphertext = s.body_ciphertext, nonce = s.nonce"
        "  FROM messages s WHERE s.conversation_id = m.conversation_id AND s.seq = 1 AND m.seq = 2"
    )
    [conversation] = await listed(messaging, team.client)
    assert conversation.preview == "" and conversation.last_seq == 2

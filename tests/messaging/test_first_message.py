"""A conversation is created with its first message (defect 12): FindConversation creates
nothing, SendMessage to participant_ids creates the conversation and its message in one
transaction, and a conversation nothing was said in is listed to nobody."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import MessagingHarness, rpc_error
from tests.messaging.test_service_accounts import _account_token
from tests.messaging.test_stream import last_event_id, stream


async def counts(messaging: MessagingHarness) -> dict[str, int]:
    """How many rows each table a send writes to holds."""
    tables = ("conversations", "participants", "messages", "events", "outbox")
    rows = await messaging.sql("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables))
    return dict(zip(tables, rows[0], strict=True))


async def test_find_creates_nothing_and_the_first_send_creates_the_conversation(messaging, team):
    await messaging.enable(team.clinician, team.client)
    before = await counts(messaging)
    found = await messaging.find(team.clinician, [team.client])
    assert (found.found, found.can_send, found.cannot_send_reason) == (
        False,
        True,
        pb.CANNOT_SEND_REASON_UNSPECIFIED,
    )
    assert not found.HasField("conversation")
    assert await counts(messaging) == before
    assert await messaging.listed(team.client) == []

    sent = await messaging.send_to(team.clinician, [team.client], "Welcome to the practice.")
    assert (sent.created, sent.conversation_created, sent.message.seq) == (True, True, 1)
    cid = sent.message.conversation_id
    after = await counts(messaging)
    assert {t: after[t] - before[t] for t in after} == {
        "conversations": 1, "participants": 2, "messages": 1, "events": 2, "outbox": 1,
    }
    # Told in the order the other side needs: the conversation, then its first message.
    events = await messaging.sql(
        "SELECT kind, seq, actor_id, recipient_ids FROM events WHERE conversation_id = %s ORDER BY event_id",
        (cid,),
    )
    everyone = sorted([team.clinician.user_id, team.client.user_id])
    assert [(kind, seq, actor, sorted(to)) for kind, seq, actor, to in events] == [
        ("conversation_created", 0, team.clinician.user_id, everyone),
        ("message_created", 1, team.clinician.user_id, everyone),
    ]
    audit = await messaging.sql(
        "SELECT action, target, detail FROM audit_events"
        " WHERE action IN ('conversation.create', 'message.send') ORDER BY event_id"
    )
    assert audit == [
        ("conversation.create", cid, {"participants": 2, "client_id": team.client.user_id}),
        (
            "message.send",
            sent.message.message_id,
            {"conversation_id": cid, "seq": 1, "conversation_created": True, "client_id": team.client.user_id},
        ),
    ]

    # Found now, as the caller names the people in any way; the client reads it.
    for others in ([team.client], [team.client.user_id.upper(), team.clinician.user_id, team.client.user_id]):
        found = await messaging.find(team.clinician, others)
        assert found.found and found.can_send and found.conversation.conversation_id == cid
        assert found.conversation.last_seq == 1 and found.conversation.client_id == team.client.user_id
        assert found.conversation.cannot_send_reason == pb.CANNOT_SEND_REASON_UNSPECIFIED
    [theirs] = await messaging.listed(team.client)
    assert theirs.conversation_id == cid and theirs.preview == "Welcome to the practice."
    assert [m.body for m in await messaging.messages(team.client, cid)] == ["Welcome to the practice."]

    # The next send to the same people goes into the same conversation.
    again = await messaging.send_to(team.clinician, [team.client], "See you Thursday.")
    assert (again.created, again.conversation_created, again.message.conversation_id, again.message.seq) == (
        True, False, cid, 2,
    )
    # Other people, another conversation: a group one, and one among staff.
    group = await messaging.send_to(team.clinician, [team.client, team.team_member], "Hello, both.")
    staff = await messaging.send_to(team.clinician, [team.team_member], "Lunch?")
    assert group.conversation_created and staff.conversation_created
    assert len({cid, group.message.conversation_id, staff.message.conversation_id}) == 3
    found = await messaging.find(team.team_member, [team.clinician])
    assert found.found and found.conversation.conversation_id == staff.message.conversation_id


async def test_a_retried_first_send_returns_the_first_message_and_creates_nothing(messaging, team):
    await messaging.enable(team.clinician, team.client)
    first = await messaging.send_to(team.clinician, [team.client], "Your forms are ready.", key="first-1")
    before = await counts(messaging)
    retry = await messaging.send_to(team.clinician, [team.client], "Your forms are ready.", key="first-1")
    assert (retry.created, retry.conversation_created) == (False, False)
    assert retry.message == first.message
    assert await counts(messaging) == before

    # The same key for another text, or for other people, is refused and creates nothing.
    for others, body in (([team.client], "Something else"), ([team.team_member], "Your forms are ready.")):
        err = await rpc_error(messaging.send_to(team.clinician, others, body, key="first-1"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == "This idempotency key was already used for a different message."
    assert await counts(messaging) == before


async def test_concurrent_first_sends_to_the_same_people_make_one_conversation(messaging, team):
    await messaging.enable(team.clinician, team.client)
    replies = await asyncio.gather(
        *(messaging.send_to(team.clinician, [team.client], f"note {i}", key=f"race-{i}") for i in range(6))
    )
    [cid] = {r.message.conversation_id for r in replies}
    assert all(r.created for r in replies)
    assert sum(r.conversation_created for r in replies) == 1
    assert sorted(r.message.seq for r in replies) == list(range(1, 7))
    assert await messaging.sql("SELECT count(*) FROM conversations") == [(1,)]
    assert await messaging.sql(
        "SELECT count(*) FROM events WHERE kind = 'conversation_created'"
    ) == [(1,)]
    bodies = {m.body for m in await messaging.messages(team.client, cid)}
    assert bodies == {f"note {i}" for i in range(6)}

    # The same first send retried concurrently (one key): one message, the rest replay it.
    replies = await asyncio.gather(
        *(messaging.send_to(team.clinician, [team.team_member], "Lunch?", key="same-key") for _ in range(4))
    )
    assert sum(r.created for r in replies) == 1 and sum(r.conversation_created for r in replies) == 1
    assert len({r.message.message_id for r in replies}) == 1
    assert await messaging.sql("SELECT count(*) FROM messages WHERE idempotency_key = 'same-key'") == [(1,)]


async def test_the_other_side_is_told_of_the_new_conversation_with_its_first_message(messaging, team):
    await messaging.enable(team.clinician, team.client)
    start = await last_event_id(messaging)
    client_stream = stream(messaging, messaging.as_user(team.client), after_event_id=start)
    sent = await messaging.send_to(team.clinician, [team.client], "Hello from the practice.")
    cid = sent.message.conversation_id

    created = await client_stream.next()
    assert (created.kind, created.conversation_id) == (pb.EVENT_KIND_CONVERSATION_CREATED, cid)
    # Whoever is told of the conversation finds it listed with its first message already.
    [listed] = await messaging.listed(team.client)
    assert (listed.conversation_id, listed.preview, listed.unread_count) == (cid, "Hello from the practice.", 1)
    message = await client_stream.next()
    assert (message.kind, message.conversation_id, message.seq) == (pb.EVENT_KIND_MESSAGE_CREATED, cid, 1)
    assert message.event_id > created.event_id
    client_stream.cancel()


async def test_a_conversation_without_messages_is_listed_to_nobody(messaging, team):
    await messaging.enable(team.clinician, team.client)
    _, token = await _account_token(messaging, team.owner, ["messaging.read"])
    system = messaging.tokens.metadata(token)
    # OpenConversation (practice systems still use it) makes an empty one.
    opened = await messaging.stub.OpenConversation(
        pb.OpenConversationRequest(participant_ids=[team.client.user_id]),
        metadata=messaging.as_user(team.clinician),
        timeout=5,
    )
    cid = opened.conversation.conversation_id
    assert opened.created
    for person in (team.clinician, team.client):
        assert await messaging.listed(person) == []
        archived = await messaging.stub.ListConversations(
            pb.ListConversationsRequest(archived=True), metadata=messaging.as_user(person), timeout=5
        )
        assert list(archived.conversations) == []
    assert await messaging.listed(team.owner, metadata=system) == []
    # Its participants still reach it by id, and it has nothing unread.
    got = await messaging.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(team.client), timeout=5
    )
    assert got.conversation.conversation_id == cid and got.conversation.last_seq == 0
    assert (await messaging.unread(team.client)).unread_conversations == 0

    # Its first message makes it visible to everyone who may see it.
    sent = await messaging.send_to(team.clinician, [team.client], "Hello")
    assert sent.message.conversation_id == cid and not sent.conversation_created
    for person in (team.clinician, team.client):
        assert [c.conversation_id for c in await messaging.listed(person)] == [cid]
    assert [c.conversation_id for c in await messaging.listed(team.owner, metadata=system)] == [cid]


async def test_a_practice_system_starts_a_conversation_with_its_first_message(messaging, team):
    await messaging.enable(team.clinician, team.client)
    account_id, token = await _account_token(messaging, team.owner, ["messaging.send"])
    system = messaging.tokens.metadata(token)
    people = [team.client, team.clinician]
    found = await messaging.find(team.owner, people, metadata=system)
    assert not found.found and found.can_send
    sent = await messaging.send_to(team.owner, people, "Your appointment is confirmed.", metadata=system)
    assert sent.conversation_created and sent.message.sender_id == account_id
    found = await messaging.find(team.owner, people, metadata=system)
    assert found.found and found.conversation.conversation_id == sent.message.conversation_id
    # The account is no participant: the conversation is the clinician's with the client.
    assert {p.user_id for p in found.conversation.participants} == {team.client.user_id, team.clinician.user_id}
    mine = await messaging.find(team.clinician, [team.client])
    assert mine.conversation.conversation_id == sent.message.conversation_id
    # Alone with a client it may not start one.
    err = await rpc_error(messaging.send_to(team.owner, [team.client], "Hi", metadata=system))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_where_a_message_goes_must_be_said_once_and_by_someone_who_may_start_one(messaging, team):
    other = await messaging.team()
    await messaging.enable(team.clinician, team.client)
    await messaging.enable(team.clinician, team.other_client)
    cid = (await messaging.send_to(team.clinician, [team.client], "Hello")).message.conversation_id
    before = await counts(messaging)

    def send(request: pb.SendMessageRequest, person=team.clinician, metadata=None):
        return messaging.stub.SendMessage(request, metadata=metadata or messaging.as_user(person), timeout=5)

    both = pb.SendMessageRequest(
        conversation_id=cid, participant_ids=[team.client.user_id], body="hi", idempotency_key="k1"
    )
    neither = pb.SendMessageRequest(body="hi", idempotency_key="k2")
    for request, details in (
        (both, "Give either the conversation or the people to send to, not both."),
        (neither, "Say where the message goes: a conversation or the people to send to."),
    ):
        err = await rpc_error(send(request))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)

    async def refused(others, *, person=team.clinician, metadata=None, body="hi") -> grpc.StatusCode:
        err = await rpc_error(messaging.send_to(person, others, body, metadata=metadata))
        found = await rpc_error(messaging.find(person, others, metadata=metadata))
        assert found.code() == err.code(), others  # FindConversation has OpenConversation's rules too
        return err.code()

    # Clients reply in conversations; they do not start them (nor do quick sign-ins or services).
    assert await refused([team.clinician], person=team.client) == grpc.StatusCode.PERMISSION_DENIED
    magic = messaging.as_user(team.clinician, "magic_link", cid)
    assert await refused([team.client], metadata=magic) == grpc.StatusCode.PERMISSION_DENIED
    assert await refused([team.client], metadata=messaging.as_service("web")) == grpc.StatusCode.PERMISSION_DENIED
    # People outside the practice, or nobody: as if they did not exist.
    for others in ([other.client], [other.clinician], [str(uuid.uuid4())]):
        assert await refused(others) == grpc.StatusCode.NOT_FOUND
    for others in ([team.clinician], ["nope"], [team.client, team.other_client]):
        assert await refused(others) == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(messaging.send_to(team.clinician, [team.other_client], "   "))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await counts(messaging) == before

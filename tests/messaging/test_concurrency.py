"""Ordering, unread counts and live streams while several people write and read at once."""

from __future__ import annotations

import asyncio

from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import MessagingHarness, Team
from tests.messaging.test_stream import last_event_id, stream


async def group_conversation(messaging: MessagingHarness, team: Team) -> str:
    """The clinician, the team member and the (enabled) client in one conversation."""
    await messaging.enable(team.clinician, team.client)
    return (await messaging.open(team.clinician, team.team_member, team.client)).conversation_id


async def test_three_senders_each_keep_their_order_and_seqs_stay_contiguous(messaging, team):
    cid = await group_conversation(messaging, team)
    senders = (team.clinician, team.team_member, team.client)

    async def write(sender, count: int = 20) -> list[int]:
        """One person sending one message after another (as a person does)."""
        return [
            (await messaging.send(sender, cid, f"{sender.display_name} {i}", key=f"{sender.user_id}-{i}")).message.seq
            for i in range(count)
        ]

    seqs = await asyncio.gather(*(write(sender) for sender in senders))
    assert sorted(s for per_sender in seqs for s in per_sender) == list(range(1, 61))
    for per_sender in seqs:
        assert per_sender == sorted(per_sender)  # each sender's messages in the order sent

    rows = await messaging.sql(
        "SELECT seq, sender_id, created_at FROM messages WHERE conversation_id = %s ORDER BY seq", (cid,)
    )
    assert [seq for seq, _, _ in rows] == list(range(1, 61))
    created = [at for _, _, at in rows]
    assert created == sorted(created)  # seq order is creation order
    listed = await messaging.messages(team.client, cid, page_size=100)
    assert [m.seq for m in listed] == list(range(1, 61))
    for sender in senders:
        bodies = [m.body for m in listed if m.sender_id == sender.user_id]
        assert bodies == [f"{sender.display_name} {i}" for i in range(20)]
    # Live streams hand events out by id: the events are in seq order too.
    events = await messaging.sql(
        "SELECT seq FROM events WHERE conversation_id = %s AND kind = 'message_created' ORDER BY event_id",
        (cid,),
    )
    assert [seq for (seq,) in events] == list(range(1, 61))


async def test_unread_counts_are_exact_with_concurrent_senders_and_readers(messaging, team):
    cid = await group_conversation(messaging, team)
    cursors: dict[str, list[int]] = {team.client.user_id: [], team.clinician.user_id: []}

    async def burst(sender, count: int = 20) -> list[int]:
        replies = await asyncio.gather(*(messaging.send(sender, cid, f"note {i}") for i in range(count)))
        return [r.message.seq for r in replies]

    async def read(reader, times: int = 15) -> None:
        for _ in range(times):
            reply = await messaging.stub.MarkRead(
                pb.MarkReadRequest(conversation_id=cid, read_seq=10**9),  # "all I have seen"
                metadata=messaging.as_user(reader),
                timeout=5,
            )
            cursors[reader.user_id].append(reply.read_seq)

    clinician_seqs, member_seqs, _, _ = await asyncio.gather(
        burst(team.clinician), burst(team.team_member), read(team.client), read(team.clinician)
    )
    assert sorted(clinician_seqs + member_seqs) == list(range(1, 41))

    got = await messaging.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=cid), metadata=messaging.as_user(team.client), timeout=5
    )
    read_seqs = {p.user_id: p.read_seq for p in got.conversation.participants}
    # Cursors never went back: each ends at the furthest it was moved to, by reading or by sending.
    assert read_seqs[team.client.user_id] == max(cursors[team.client.user_id])
    assert read_seqs[team.clinician.user_id] == max(cursors[team.clinician.user_id] + clinician_seqs)
    assert read_seqs[team.team_member.user_id] == max(member_seqs)

    for person in (team.client, team.clinician, team.team_member):
        expected = 40 - read_seqs[person.user_id]
        summary = await messaging.unread(person)
        assert (summary.unread_messages, summary.unread_conversations) == (expected, int(expected > 0))
        reply = await messaging.stub.ListConversations(
            pb.ListConversationsRequest(), metadata=messaging.as_user(person), timeout=5
        )
        assert [c.unread_count for c in reply.conversations] == [expected]

    await messaging.stub.MarkRead(
        pb.MarkReadRequest(conversation_id=cid, read_seq=40), metadata=messaging.as_user(team.client), timeout=5
    )
    summary = await messaging.unread(team.client)
    assert (summary.unread_messages, summary.unread_conversations) == (0, 0)


async def test_a_stream_resumed_from_its_last_event_misses_and_repeats_nothing(messaging, team):
    cid = await group_conversation(messaging, team)
    start = await last_event_id(messaging)
    # The client's events: the two staff members' messages, and the client's own reads.
    sending = asyncio.gather(
        *(messaging.send(sender, cid, f"m{i}") for sender in (team.clinician, team.team_member) for i in range(15))
    )

    async def reading() -> None:
        for seq in (5, 10, 20):
            await messaging.stub.MarkRead(
                pb.MarkReadRequest(conversation_id=cid, read_seq=seq),
                metadata=messaging.as_user(team.client),
                timeout=5,
            )

    reads = asyncio.ensure_future(reading())
    received: list[pb.StreamEventsResponse] = []
    cursor = start
    # Drop the connection twice mid-burst, each time resuming from the last event received.
    for take in (7, 9):
        call = stream(messaging, messaging.as_user(team.client), after_event_id=cursor)
        for _ in range(take):
            received.append(await call.next())
        call.cancel()
        cursor = received[-1].event_id
    await sending
    await reads
    expected = await messaging.sql(
        "SELECT event_id FROM events WHERE event_id > %s AND recipient_ids @> ARRAY[%s]::text[] ORDER BY event_id",
        (start, team.client.user_id),
    )
    call = stream(messaging, messaging.as_user(team.client), after_event_id=cursor)
    while len(received) < len(expected):
        received.append(await call.next())
    await call.nothing_more()
    call.cancel()

    assert [e.event_id for e in received] == [event_id for (event_id,) in expected]
    messages = [e.seq for e in received if e.kind == pb.EVENT_KIND_MESSAGE_CREATED]
    assert messages == list(range(1, 31))

"""Messaging's audit trail as the practice owner reads it (confidant.audit.v1.AuditService):
every row about a conversation with a client names the client, so the trail filtered by
the client finds its thread's reads and sends, and filtered by a person finds theirs."""

from __future__ import annotations

import json

import psycopg
from confidant.audit.v1 import audit_service_pb2 as audit_pb
from confidant.messaging.v1 import messaging_service_pb2 as pb

from tests.messaging.harness import MessagingHarness, Team, rpc_error


async def trail(messaging: MessagingHarness, team: Team, **filters) -> list[audit_pb.AuditEvent]:
    """Every page of messaging's trail for the practice, as its owner lists it."""
    rows, token = [], ""
    while True:
        reply = await messaging.audit.ListAuditEvents(
            audit_pb.ListAuditEventsRequest(page_size=100, page_token=token, **filters),
            metadata=messaging.as_user(team.owner),
            timeout=5,
        )
        rows.extend(reply.events)
        token = reply.next_page_token
        if not token:
            return rows


def mentions(row: audit_pb.AuditEvent, conversation_id: str) -> bool:
    detail = json.loads(row.detail_json)
    return conversation_id in (row.target, detail.get("conversation_id")) or conversation_id in detail.get(
        "conversation_ids", []
    )


async def test_the_owner_finds_a_clients_thread_by_the_client_and_a_persons_acts_by_them(messaging, team):
    client, clinician, member = team.client, team.clinician, team.team_member
    await messaging.enable(clinician, client)
    cid = (await messaging.send_to(clinician, [client], "How was the week?")).message.conversation_id
    await messaging.listed(client)
    await messaging.messages(client, cid)
    await messaging.send(client, cid, "Better, thank you.")
    await messaging.stub.MarkRead(
        pb.MarkReadRequest(conversation_id=cid, read_seq=2), metadata=messaging.as_user(clinician), timeout=5
    )
    await messaging.messages(clinician, cid)
    for archived in (True, False):
        await messaging.stub.ArchiveConversation(
            pb.ArchiveConversationRequest(conversation_id=cid, archived=archived),
            metadata=messaging.as_user(clinician),
            timeout=5,
        )
    await rpc_error(messaging.messages(member, cid))  # not in it: refused, and still about the client
    # Elsewhere in the practice: a staff-only conversation, and another client's.
    staff = (await messaging.send_to(clinician, [member], "Lunch?")).message.conversation_id
    await messaging.messages(member, staff)
    await messaging.enable(clinician, team.other_client)
    other = (await messaging.send_to(clinician, [team.other_client], "Hello")).message.conversation_id
    await messaging.listed(clinician)  # a page showing all three

    everything = await trail(messaging, team)
    about_client = await trail(messaging, team, client_id=client.user_id)
    assert all(r.target == client.user_id or r.client_id == client.user_id for r in about_client)
    # The reads and sends of the client's thread, by whoever made them.
    by_action: dict[str, list[tuple[str, str]]] = {}
    for row in reversed(about_client):
        by_action.setdefault(row.action, []).append((row.actor, row.outcome))
    assert by_action["message.send"] == [(clinician.user_id, "ok"), (client.user_id, "ok")]
    assert by_action["messages.read"] == [
        (client.user_id, "ok"),
        (clinician.user_id, "ok"),
        (member.user_id, "not_found"),
    ]
    assert [actor for actor, _ in by_action["conversations.list"]] == [client.user_id, clinician.user_id]
    assert by_action["client_messaging.enable"] == [(clinician.user_id, "enabled")]
    for action in ("conversation.create", "conversation.archive", "conversation.unarchive"):
        assert by_action[action] == [(clinician.user_id, "ok")], action
    # Every row about the client's conversation is there, and nothing about the others.
    ids = {r.event_id for r in about_client}
    assert {r.event_id for r in everything if mentions(r, cid)} <= ids
    assert not any(mentions(r, staff) or mentions(r, other) for r in about_client)
    assert {r.event_id for r in everything if mentions(r, other)} <= {
        r.event_id for r in await trail(messaging, team, client_id=team.other_client.user_id)
    }

    # Filtered by a person (the actor): their acts only, in every conversation.
    theirs = await trail(messaging, team, actor=clinician.user_id)
    assert theirs and all(r.actor == clinician.user_id for r in theirs)
    assert {(r.action, r.target) for r in theirs if r.action == "conversation.create"} == {
        ("conversation.create", cid),
        ("conversation.create", staff),
        ("conversation.create", other),
    }
    assert {json.loads(r.detail_json)["conversation_id"] for r in theirs if r.action == "message.send"} == {
        cid, staff, other,
    }
    assert [r.target for r in theirs if r.action == "messages.read"] == [cid]
    # Both filters and an action: the clinician's reads of the client's thread.
    reads = await trail(messaging, team, actor=clinician.user_id, client_id=client.user_id, actions=["messages.read"])
    assert [(r.action, r.target, r.client_id) for r in reads] == [("messages.read", cid, client.user_id)]


async def test_the_owners_page_reads_an_index(messaging, team):
    async with await psycopg.AsyncConnection.connect(messaging.database_url, autocommit=True) as conn:
        await conn.execute("SET enable_seqscan = off")
        cur = await conn.execute(
            "EXPLAIN SELECT event_id FROM audit_events WHERE practice_id = %s ORDER BY event_id DESC LIMIT 50",
            (team.practice_id,),
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "audit_events_practice_idx" in plan, plan

"""StreamEvents: live delivery through LISTEN/NOTIFY, resume without loss or repeats, scoping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
import pytest
from confidant.messaging.v1 import messaging_service_pb2 as pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from tests.messaging.harness import MessagingHarness, eventually, messaging_service
from tests.support import channel

# Long enough that only NOTIFY can explain an event arriving within a test.
NO_POLL = {"messaging_stream_poll_seconds": "300"}


class Stream:
    """Reads a StreamEvents call in the background, so waiting for "nothing more" never
    cancels the call (cancelling a pending read cancels the whole RPC)."""

    def __init__(self, call) -> None:
        self.call = call
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._read_all())

    async def _read_all(self) -> None:
        try:
            async for event in self.call:
                self._queue.put_nowait(event)
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            self._queue.put_nowait(exc)
        self._queue.put_nowait(grpc.aio.EOF)

    async def next(self, within: float = 5.0) -> pb.StreamEventsResponse:
        item = await asyncio.wait_for(self._queue.get(), within)
        if isinstance(item, BaseException):
            raise item
        assert item is not grpc.aio.EOF, "the stream ended"
        return item

    async def end(self, within: float = 5.0):
        """The stream's end: EOF, or the error it ended with."""
        return await asyncio.wait_for(self._queue.get(), within)

    async def nothing_more(self, within: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self._queue.get(), within)

    def cancel(self) -> None:
        self.call.cancel()


def stream(messaging: MessagingHarness, metadata, after_event_id: int = 0) -> Stream:
    return Stream(
        messaging.stub.StreamEvents(
            pb.StreamEventsRequest(after_event_id=after_event_id), metadata=metadata, timeout=60
        )
    )


async def last_event_id(messaging: MessagingHarness) -> int:
    return (await messaging.sql("SELECT coalesce(max(event_id), 0) FROM events"))[0][0]


@contextlib.asynccontextmanager
async def replica(fresh_database, keys_dir, tokens, auth_stub, auth_address, database_url="", **settings):
    async with (
        messaging_service(fresh_database, keys_dir, auth_address, database_url=database_url, **settings) as (
            address,
            url,
        ),
        channel(address) as ch,
    ):
        yield MessagingHarness(pb_grpc.MessagingServiceStub(ch), auth_stub, tokens, url)


async def test_live_delivery_across_replicas_and_resume_without_loss_or_repeats(
    fresh_database, keys_dir, tokens, auth_stub, auth_address
):
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            replica(fresh_database, keys_dir, tokens, auth_stub, auth_address, **NO_POLL)
        )
        # A second replica on the same database: streams there see sends made through the first.
        b = await stack.enter_async_context(
            replica(
                fresh_database,
                keys_dir,
                tokens,
                auth_stub,
                auth_address,
                database_url=a.database_url,
                **NO_POLL,
            )
        )
        team = await a.team()
        cid = (await a.client_conversation(team)).conversation_id
        opened = await last_event_id(a)
        await a.send(team.clinician, cid, "one")

        client_stream = stream(b, b.as_user(team.client), after_event_id=opened)
        first = await client_stream.next()  # caught up from the table
        assert (first.kind, first.conversation_id, first.seq, first.actor_id) == (
            pb.EVENT_KIND_MESSAGE_CREATED,
            cid,
            1,
            team.clinician.user_id,
        )
        # Now live: the stream is waiting, and only a NOTIFY can wake it this soon.
        started = time.monotonic()
        await a.send(team.clinician, cid, "two")
        second = await client_stream.next()
        assert time.monotonic() - started < 3
        assert (second.kind, second.seq) == (pb.EVENT_KIND_MESSAGE_CREATED, 2)
        assert second.event_id > first.event_id
        client_stream.cancel()

        # While the client is away: two messages, and the clinician reading (not the client's event).
        await a.send(team.clinician, cid, "three")
        await a.stub.MarkRead(
            pb.MarkReadRequest(conversation_id=cid, read_seq=3), metadata=a.as_user(team.clinician), timeout=5
        )
        await a.send(team.clinician, cid, "four")

        resumed = stream(a, a.as_user(team.client), after_event_id=second.event_id)
        got = [await resumed.next(), await resumed.next()]
        assert [(e.kind, e.seq) for e in got] == [
            (pb.EVENT_KIND_MESSAGE_CREATED, 3),
            (pb.EVENT_KIND_MESSAGE_CREATED, 4),
        ]
        await resumed.nothing_more()
        # The client reads: their own other tabs learn it.
        await b.stub.MarkRead(
            pb.MarkReadRequest(conversation_id=cid, read_seq=4), metadata=b.as_user(team.client), timeout=5
        )
        read = await resumed.next()
        assert (read.kind, read.seq, read.actor_id) == (pb.EVENT_KIND_READ_UPDATED, 4, team.client.user_id)
        resumed.cancel()


async def test_a_new_stream_gets_only_new_events_and_only_its_own(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "before the stream")
    staff_only = (await messaging.open(team.clinician, team.team_member)).conversation_id

    member_stream = stream(messaging, messaging.as_user(team.team_member))
    client_stream = stream(messaging, messaging.as_user(team.client))
    # The streams start at "now" at some moment after the call: send until one arrives.
    for i in range(50):
        await messaging.send(team.clinician, cid, f"after {i}")
        with contextlib.suppress(TimeoutError):
            event = await client_stream.next(within=0.2)
            break
    else:
        raise AssertionError("no live event reached the client")
    assert event.kind == pb.EVENT_KIND_MESSAGE_CREATED and event.seq >= 2  # never the old message

    # The team member is in neither conversation with the client: nothing for them...
    await member_stream.nothing_more()
    # ...until something happens in their own conversation.
    await messaging.send(team.clinician, staff_only, "are you free at noon?")
    got = await member_stream.next()
    assert (got.conversation_id, got.seq) == (staff_only, 1)
    member_stream.cancel()
    client_stream.cancel()


async def test_magic_link_stream_sees_only_its_conversation(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    group = (await messaging.open(team.clinician, team.client, team.team_member)).conversation_id
    start = await last_event_id(messaging)
    await messaging.send(team.clinician, group, "group hello")
    await messaging.send(team.clinician, cid, "just for you")
    call = stream(messaging, messaging.as_user(team.client, "magic_link", cid), after_event_id=start)
    event = await call.next()
    assert (event.conversation_id, event.seq) == (cid, 1)
    await call.nothing_more()
    call.cancel()


async def test_stream_refusals(messaging, team):
    for metadata, after, code in (
        (messaging.as_service("web"), 0, grpc.StatusCode.PERMISSION_DENIED),
        ((), 0, grpc.StatusCode.UNAUTHENTICATED),
        (messaging.as_user(team.client), -1, grpc.StatusCode.INVALID_ARGUMENT),
        (messaging.as_user(team.client), 10**12, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        err = await stream(messaging, metadata, after_event_id=after).end()
        assert isinstance(err, grpc.aio.AioRpcError)
        assert err.code() == code


async def test_a_stream_ends_when_its_access_token_expires(messaging, team, caplog):
    caplog.set_level(logging.INFO)
    token = messaging.tokens.user(team.client.user_id, team.practice_id, "client", ttl=1)
    call = stream(messaging, messaging.tokens.metadata(token))
    assert await call.end() is grpc.aio.EOF
    assert await call.call.code() == grpc.StatusCode.OK
    # Ended cleanly on the server too: its access-log line says OK, and nothing was logged as an error.
    async def logged():
        return _grpc_records(caplog, "/StreamEvents")

    await eventually(logged)
    assert [r.fields["code"] for r in _grpc_records(caplog, "/StreamEvents")] == ["OK"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_stopping_the_server_ends_open_streams(
    fresh_database, keys_dir, tokens, auth_stub, auth_address
):
    # A long grace period: streams must end at once anyway (the hub closes them as
    # shutdown begins), not hold the process until the grace period runs out.
    service = messaging_service(fresh_database, keys_dir, auth_address, grace_seconds=10)
    address, url = await service.__aenter__()
    try:
        async with channel(address) as ch:
            harness = MessagingHarness(pb_grpc.MessagingServiceStub(ch), auth_stub, tokens, url)
            team = await harness.team()
            call = stream(harness, harness.as_user(team.client))
            await call.nothing_more(0.2)
            stopping = time.monotonic()
            await service.__aexit__(None, None, None)
            service = None
            # The stream ended cleanly and at once; the client reconnects from its last event.
            ended = await call.end()
            assert time.monotonic() - stopping < 3
            assert ended is grpc.aio.EOF, ended
    finally:
        if service is not None:
            await service.__aexit__(None, None, None)


async def test_archiving_tells_only_the_archivers_own_streams(messaging, team):
    cid = (await messaging.client_conversation(team)).conversation_id
    await messaging.send(team.clinician, cid, "hello")
    start = await last_event_id(messaging)
    mine = stream(messaging, messaging.as_user(team.clinician), after_event_id=start)
    theirs = stream(messaging, messaging.as_user(team.client), after_event_id=start)

    async def archive(archived: bool) -> None:
        await messaging.stub.ArchiveConversation(
            pb.ArchiveConversationRequest(conversation_id=cid, archived=archived),
            metadata=messaging.as_user(team.clinician), timeout=5,
        )

    await archive(True)
    await archive(True)  # no change: no event
    await archive(False)
    got = [await mine.next(), await mine.next()]
    assert [(e.kind, e.conversation_id, e.seq, e.actor_id) for e in got] == [
        (pb.EVENT_KIND_CONVERSATION_ARCHIVED, cid, 1, team.clinician.user_id),
        (pb.EVENT_KIND_CONVERSATION_ARCHIVED, cid, 0, team.clinician.user_id),
    ]
    await mine.nothing_more()
    await theirs.nothing_more()  # the client's view of the conversation did not change
    mine.cancel()
    theirs.cancel()


# -- defect 20: "ContextVar ... created in a different Context" -----------------------


def _grpc_records(caplog, method: str) -> list:
    return [
        r for r in caplog.records
        if r.name == "confidant.grpc" and getattr(r, "fields", {}).get("method", "").endswith(method)
    ]


async def test_a_stream_its_client_cancels_mid_batch_ends_without_an_error(messaging, team, caplog):
    """The browser leaves while the server is still writing a backlog: the server's write is
    cancelled with the stream's generator suspended at a yield. That generator used to be
    finalised later, in another task's context, where resetting the call's context variables
    failed and the interceptor logged an ERROR traceback."""
    caplog.set_level(logging.INFO)
    cid = (await messaging.client_conversation(team)).conversation_id
    start = await last_event_id(messaging)
    # A backlog larger than the HTTP/2 window, so the server is blocked in a write when the
    # client goes away.
    await messaging.sql(
        "INSERT INTO events (kind, conversation_id, seq, actor_id, recipient_ids)"
        " SELECT 'read_updated', %s, n, %s, ARRAY[%s] FROM generate_series(1, 5000) AS n",
        (cid, team.client.user_id, team.client.user_id),
    )
    for _ in range(3):
        call = messaging.stub.StreamEvents(
            pb.StreamEventsRequest(after_event_id=start), metadata=messaging.as_user(team.client), timeout=30
        )
        async for _event in call:
            break
        call.cancel()

    def errors():
        return [r for r in caplog.records if r.levelno >= logging.ERROR]

    async def all_streams_ended_or_failed():
        return len(_grpc_records(caplog, "/StreamEvents")) == 3 or errors()

    await eventually(all_streams_ended_or_failed)
    assert [r.getMessage() for r in errors()] == []
    assert [r.fields["code"] for r in _grpc_records(caplog, "/StreamEvents")] == ["CANCELLED"] * 3

"""Live updates: Server-Sent Events fed by messaging.StreamEvents.

One gRPC stream per open page, on the person's behalf. The stream is re-opened
(with a freshly authenticated session, resuming after the last event id) before
the access token expires and at least every ``stream_deadline_seconds``; when
the session has ended the page gets a ``session_ended`` event and the stream
closes. A comment line every ``keepalive_seconds`` keeps proxies from cutting
an idle stream and lets us notice a browser that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

import grpc
from aiohttp import web
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb

from services.web.presenters import iso
from services.web.resources import BACKENDS, CONFIG, LIVE
from services.web.session import Person, api, authenticate

log = logging.getLogger("confidant.web.events")

KIND_NAMES = {
    msg_pb.EVENT_KIND_MESSAGE_CREATED: "message_created",
    msg_pb.EVENT_KIND_READ_UPDATED: "read_updated",
    msg_pb.EVENT_KIND_CONVERSATION_CREATED: "conversation_created",
    msg_pb.EVENT_KIND_CONVERSATION_ARCHIVED: "conversation_archived",
}
# Re-open the stream this long before the access token or the session ends.
RENEW_MARGIN_SECONDS = 15.0
MIN_STREAM_SECONDS = 1.0
# The browser waits this long before reconnecting after the stream closed.
RETRY_MILLISECONDS = 3000


def format_event(event: msg_pb.StreamEventsResponse) -> bytes:
    kind = KIND_NAMES.get(event.kind, "unknown")
    data = {
        "event_id": event.event_id,
        "kind": kind,
        "conversation_id": event.conversation_id,
        "seq": event.seq,
        "actor_id": event.actor_id,
        "created_at": iso(event.created_at),
    }
    return f"id: {event.event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def resume_point(request: web.Request) -> int:
    """The browser's Last-Event-ID on reconnect (or ?after=); 0 means only new events."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


@dataclass
class _End:
    error: grpc.aio.AioRpcError | None


async def _read(call, queue: asyncio.Queue) -> None:
    try:
        async for event in call:
            await queue.put(event)
        await queue.put(_End(None))
    except grpc.aio.AioRpcError as exc:
        await queue.put(_End(exc))


class _Stop(Exception):
    """The server is shutting down."""


@api
async def stream_events(request: web.Request, person: Person) -> web.StreamResponse:
    config = request.app[CONFIG]
    backends = request.app[BACKENDS]
    live = request.app[LIVE]
    last_event_id = resume_point(request)

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MILLISECONDS}\n: connected\n\n".encode())

    stopping = asyncio.create_task(live.stopping.wait())
    live.count += 1
    try:
        while True:
            seconds = min(
                config.stream_deadline_seconds,
                person.access_seconds_left() - RENEW_MARGIN_SECONDS,
                person.session_seconds_left(),
            )
            call = backends.messaging.StreamEvents(
                msg_pb.StreamEventsRequest(after_event_id=last_event_id),
                metadata=person.metadata,
                timeout=max(MIN_STREAM_SECONDS, seconds),
            )
            queue: asyncio.Queue = asyncio.Queue(maxsize=256)
            reader = asyncio.create_task(_read(call, queue))
            getter: asyncio.Task | None = None
            try:
                while True:
                    if getter is None:
                        getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, stopping}, timeout=config.keepalive_seconds, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stopping in done:
                        raise _Stop
                    if getter not in done:
                        await response.write(b": keep-alive\n\n")
                        continue
                    item, getter = getter.result(), None
                    if isinstance(item, _End):
                        break
                    last_event_id = item.event_id
                    await response.write(format_event(item))
            finally:
                for task in (reader, getter):
                    if task is not None:
                        task.cancel()
                call.cancel()
            error = item.error
            if error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT and last_event_id:
                # A cursor messaging does not know (say, from before a reset): start from now.
                last_event_id = 0
                continue
            if error is not None and error.code() not in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.CANCELLED,
            ):
                # Messaging is away or refused: close; the browser reconnects with Last-Event-ID.
                log.info("event stream ended", extra={"fields": {"code": error.code().name, "user": person.user_id}})
                break
            try:
                renewed = await authenticate(backends, person.session_token, background=True)
            except grpc.aio.AioRpcError as exc:
                log.info("event stream ended", extra={"fields": {"code": exc.code().name, "user": person.user_id}})
                break
            if renewed is None:
                await response.write(b"event: session_ended\ndata: {}\n\n")
                break
            person = renewed
    except _Stop:
        pass
    except (ConnectionResetError, ConnectionError):
        # The browser went away.
        pass
    finally:
        live.count -= 1
        stopping.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response

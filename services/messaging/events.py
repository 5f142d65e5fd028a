"""Live wake-ups: one LISTEN connection per process, and the hub that live streams wait on.

NOTIFY only says "something happened"; every stream then reads the events table
from its own cursor, up to the hub's high-water mark. So a stream resumed on
another replica, or after a missed notification, neither loses nor repeats an
event. A poll every few seconds is the safety net for lost wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import psycopg
from psycopg import sql

from services.common.errors import DomainError
from services.messaging.storage import Storage

log = logging.getLogger("confidant.messaging.events")


class NotificationListener:
    """One dedicated connection that LISTENs on our channels and calls their handlers.

    Each handler is called with the payload, and with None after every
    (re)connection because notifications sent while we were away are lost.
    """

    def __init__(
        self,
        database_url: str,
        handlers: dict[str, Callable[[str | None], None]],
        reconnect_seconds: float = 1.0,
    ) -> None:
        self._url = database_url
        self._handlers = handlers
        self._reconnect_seconds = reconnect_seconds

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning(
                    "listen connection lost; reconnecting", extra={"fields": {"error": type(exc).__name__}}
                )
                await asyncio.sleep(self._reconnect_seconds)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            for channel in self._handlers:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            for handler in self._handlers.values():
                handler(None)
            async for notification in conn.notifies():
                handler = self._handlers.get(notification.channel)
                if handler is not None:
                    handler(notification.payload)


class EventHub:
    """Publishes the event high-water mark to this process's open streams.

    ``wake()`` (from NOTIFY or the poll) asks for a refresh; refreshes are
    coalesced, and none run while no stream is open.
    """

    def __init__(self, storage: Storage, poll_seconds: float) -> None:
        self._storage = storage
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._subscribers = 0
        self.high_water = 0
        self.closed = False

    def wake(self, _payload: str | None = None) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll())
            group.create_task(self._refresh_on_wake())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            self._wake.set()

    async def _refresh_on_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._subscribers == 0:
                continue
            try:
                await self.publish(await self._storage.event_high_water())
            except (psycopg.Error, DomainError) as exc:
                log.warning(
                    "event high-water refresh failed", extra={"fields": {"error": type(exc).__name__}}
                )

    async def publish(self, high_water: int) -> None:
        async with self._changed:
            if high_water > self.high_water:
                self.high_water = high_water
                self._changed.notify_all()

    async def current(self) -> int:
        """A fresh high-water mark (published to the other streams too)."""
        high_water = await self._storage.event_high_water()
        await self.publish(high_water)
        return max(high_water, self.high_water)

    async def wait_beyond(self, seen: int) -> int:
        """Wait until the high-water mark passes ``seen`` (or the hub closes); return it."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.high_water > seen or self.closed)
            return self.high_water

    async def close(self) -> None:
        """Server shutdown: open streams deliver what they have and end now."""
        async with self._changed:
            self.closed = True
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[None]:
        self._subscribers += 1
        try:
            yield
        finally:
            self._subscribers -= 1

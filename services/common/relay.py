"""The loop every outbox relay shares: drain due rows in batches, then sleep until
woken (right after a commit that wrote a row) or until the poll interval passes (the
safety net, and the retry pace for rows whose hand-over failed)."""

from __future__ import annotations

import asyncio
import contextlib


class PolledRelay:
    """Subclasses implement ``relay_once``: hand over up to ``batch_size`` due rows, return how many."""

    batch_size = 20

    def __init__(self, poll_seconds: float) -> None:
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            while await self.relay_once() >= self.batch_size:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    async def relay_once(self) -> int:
        raise NotImplementedError

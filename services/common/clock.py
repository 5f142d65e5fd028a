"""Where time-based decisions get "now": the system clock, or a clock a test moves by hand.

Rules such as "one email per burst of two minutes" or "an email after 15 minutes
unread" are decided against an injected ``Clock`` (passed to SQL as a parameter
rather than PostgreSQL's ``now()``), so tests show them by advancing a
``ManualClock`` instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

Listener = Callable[[], Awaitable[None]]


class Clock:
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        raise NotImplementedError

    def on_advance(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` each time the clock jumps forward; returns the unsubscribe function.

        The system clock never jumps (pollers see its time pass), so this is a no-op there;
        a ManualClock awaits every listener on ``advance`` so due work is done when it returns.
        """
        return lambda: None


class SystemClock(Clock):
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(Clock):
    """A clock that stands still until ``advance``/``set`` moves it (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime.now(UTC)).astimezone(UTC)
        self._listeners: list[Listener] = []

    def now(self) -> datetime:
        return self._now

    def on_advance(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Move forward (``advance(30)``, ``advance(minutes=15)``), then run the listeners."""
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta(0):
            raise ValueError("A clock does not run backwards.")
        return await self.set(self._now + step)

    async def set(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("Give the clock an aware datetime.")
        if when < self._now:
            raise ValueError("A clock does not run backwards.")
        self._now = when.astimezone(UTC)
        for listener in list(self._listeners):
            await listener()
        return self._now

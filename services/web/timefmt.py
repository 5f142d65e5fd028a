"""Times as people read them, in the practice's time zone (never the server's or the browser's).

A practice has one time zone (auth's ``Practice.time_zone``); every time on a page, in a
thread or in an export is given in it, so a clinician and a client, or two staff members
in different places, read the same time for the same message. The same rules are written
once more in ``static/js/core.js`` (``Confidant.formatTime``) for what the script draws;
``tests/web/test_timefmt.py`` pins both to the same answers.

- ``short``: lists and message groups: "2:14 PM" today, "Tue 2:14 PM" within the last six
  days, "Nov 3" this year, "Nov 3, 2025" before.
- ``full``: the ``title`` of a ``<time>``: "Tuesday, December 1, 2026, 2:14 PM EST".
- ``table``: tables and CSV exports: "Dec 1, 2026, 2:14 PM" (the column header names the zone).
- ``day``: day separators in a thread: "Today", "Yesterday", "Tuesday, December 1" (with the
  year when it is not this year).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIME_ZONE = "America/New_York"


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The named IANA zone; UTC when the name is empty or unknown (auth validates names)."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local(moment: datetime, tz: str) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone(tz))


def _clock(local: datetime) -> str:
    return f"{local.hour % 12 or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


# The abbreviations browsers (ICU, en-US) use; elsewhere they say "GMT+1", and so do we, so
# the script and the server name a zone alike.
_NAMED_ZONES = frozenset({"UTC", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT", "AKST", "AKDT", "HST"})


def _zone_label(local: datetime) -> str:
    name = local.tzname() or ""
    if name in _NAMED_ZONES:
        return name
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "GMT"
    sign, minutes = ("+" if minutes > 0 else "-"), abs(minutes)
    return f"GMT{sign}{minutes // 60}" + (f":{minutes % 60:02d}" if minutes % 60 else "")


def abbreviation(tz: str, at: datetime | None = None) -> str:
    """The zone's name at a moment, as browsers say it ("EST", "EDT", "UTC", "GMT+1")."""
    return _zone_label(_local(at or datetime.now(UTC), tz))


def short(moment: datetime, tz: str, now: datetime | None = None) -> str:
    local = _local(moment, tz)
    today = _local(now or datetime.now(UTC), tz).date()
    day = local.date()
    if day == today:
        return _clock(local)
    if timedelta(0) < today - day < timedelta(days=7):
        return f"{local:%a} {_clock(local)}"
    if day.year == today.year:
        return f"{local:%b} {local.day}"
    return f"{local:%b} {local.day}, {local.year}"


def full(moment: datetime, tz: str) -> str:
    local = _local(moment, tz)
    return f"{local:%A, %B} {local.day}, {local.year}, {_clock(local)} {_zone_label(local)}"


def table(moment: datetime, tz: str) -> str:
    local = _local(moment, tz)
    return f"{local:%b} {local.day}, {local.year}, {_clock(local)}"


def day(moment: datetime, tz: str, now: datetime | None = None) -> str:
    local = _local(moment, tz)
    today = _local(now or datetime.now(UTC), tz).date()
    if local.date() == today:
        return "Today"
    if local.date() == today - timedelta(days=1):
        return "Yesterday"
    label = f"{local:%A, %B} {local.day}"
    return label if local.year == today.year else f"{label}, {local.year}"


def date_of_birth(value: str) -> str:
    """auth's "YYYY-MM-DD" as "Mar 14, 1991" (a calendar date: no time zone)."""
    try:
        born = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return ""
    return f"{born:%b} {born.day}, {born.year}"

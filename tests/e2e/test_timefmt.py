"""Times in the practice's time zone, the same from the server and from the script (defect 10).

services/web/timefmt.py formats what pages render; static/js/core.js formats what the script
draws (live messages, lists). Both are asked the same questions here, in Chromium with the
browser's own zone set elsewhere, and must give the same answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.web import timefmt

CORE_JS = Path(__file__).resolve().parents[2] / "services" / "web" / "static" / "js" / "core.js"
NOW = datetime(2026, 12, 1, 19, 30, tzinfo=UTC)  # 2:30 PM in New York, Tuesday
MOMENTS = [
    NOW - timedelta(minutes=5),
    datetime(2026, 12, 1, 5, 1, tzinfo=UTC),  # 12:01 AM in New York: still today there, not in UTC's day
    datetime(2026, 12, 1, 4, 59, tzinfo=UTC),  # 11:59 PM the day before, in New York
    NOW - timedelta(days=3),
    NOW - timedelta(days=6, hours=1),
    NOW - timedelta(days=8),
    datetime(2026, 7, 4, 16, 0, tzinfo=UTC),  # summer time: EDT
    datetime(2025, 11, 3, 15, 0, tzinfo=UTC),
]


def test_the_server_gives_times_in_the_practice_zone():
    ny = "America/New_York"
    assert timefmt.short(NOW - timedelta(minutes=5), ny, NOW) == "2:25 PM"
    assert timefmt.short(datetime(2026, 12, 1, 4, 59, tzinfo=UTC), ny, NOW) == "Mon 11:59 PM"
    assert timefmt.short(NOW - timedelta(days=8), ny, NOW) == "Nov 23"
    assert timefmt.short(datetime(2025, 11, 3, 15, 0, tzinfo=UTC), ny, NOW) == "Nov 3, 2025"
    assert timefmt.full(NOW, ny) == "Tuesday, December 1, 2026, 2:30 PM EST"
    assert timefmt.full(datetime(2026, 7, 4, 16, 0, tzinfo=UTC), ny) == "Saturday, July 4, 2026, 12:00 PM EDT"
    assert timefmt.table(NOW, ny) == "Dec 1, 2026, 2:30 PM"
    assert timefmt.day(NOW, ny, NOW) == "Today"
    assert timefmt.day(datetime(2026, 12, 1, 4, 59, tzinfo=UTC), ny, NOW) == "Yesterday"
    assert timefmt.day(NOW - timedelta(days=3), ny, NOW) == "Saturday, November 28"
    assert timefmt.day(datetime(2025, 11, 3, 15, 0, tzinfo=UTC), ny, NOW) == "Monday, November 3, 2025"
    # The same moment in another practice's zone.
    assert timefmt.short(NOW, "America/Los_Angeles", NOW) == "11:30 AM"
    assert timefmt.abbreviation("America/Los_Angeles", NOW) == "PST"
    assert timefmt.date_of_birth("1991-03-14") == "Mar 14, 1991"


@pytest.mark.parametrize("tz", ["America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata", "UTC"])
async def test_the_script_gives_the_same_times_as_the_server(browser, tz):
    # The browser itself is in another zone: its own clock must not leak into what it shows.
    context = await browser.new_context(timezone_id="Asia/Tokyo")
    try:
        page = await context.new_page()
        await page.set_content(f'<!doctype html><html><body data-time-zone="{tz}"></body></html>')
        await page.add_script_tag(content=CORE_JS.read_text())
        for moment in MOMENTS:
            for style in ("short", "full", "table", "day"):
                got = await page.evaluate("([iso, style, now]) => Confidant.formatTime(iso, style, now)",
                                          [moment.isoformat(), style, NOW.isoformat()])
                want = {"short": timefmt.short(moment, tz, NOW), "full": timefmt.full(moment, tz),
                        "table": timefmt.table(moment, tz), "day": timefmt.day(moment, tz, NOW)}[style]
                assert got == want, (moment, style)
    finally:
        await context.close()

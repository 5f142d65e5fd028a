"""The event high-water mark never passes an event id whose transaction is still open.

This is what lets a stream hand out events in id order and resume from an id
without ever skipping an event that committed late.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from services.common.db import open_pool
from services.messaging.storage import Storage

INSERT_EVENT = (
    "INSERT INTO events (kind, conversation_id, actor_id, recipient_ids)"
    " VALUES ('read_updated', %s, 'someone', ARRAY['someone']) RETURNING event_id"
)


@pytest.fixture
async def storage_and_url(fresh_database):
    url = await fresh_database("messaging")
    pool = await open_pool(url, 1, 4)
    try:
        yield Storage(pool), url
    finally:
        await pool.close()


async def test_high_water_waits_for_an_earlier_id_still_in_flight(storage_and_url):
    storage, url = storage_and_url
    assert await storage.event_high_water() == 0
    async with (
        await psycopg.AsyncConnection.connect(url) as slow,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as fast,
    ):
        # The slow transaction draws the first id and does not commit yet...
        early = (await (await slow.execute(INSERT_EVENT, (uuid.uuid4(),))).fetchone())[0]
        # ...while a later id commits at once.
        late = (await (await fast.execute(INSERT_EVENT, (uuid.uuid4(),))).fetchone())[0]
        assert early < late
        waiting = asyncio.ensure_future(storage.event_high_water())
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done, "the high-water mark passed an id whose transaction is still open"
        await slow.commit()
        assert await asyncio.wait_for(waiting, 5) == late
        rows = await storage.events_for("someone", 0, late, 10)
        assert [e.event_id for e in rows] == [early, late]

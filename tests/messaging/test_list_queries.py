"""A page of conversations, with every participant, unread count and last message,
is one query however many rows it holds (counted at the storage layer)."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from services.common.db import open_pool
from services.messaging.storage import Storage


class _CountingCursor:
    def __init__(self, cursor, counter) -> None:
        self._cursor, self._counter = cursor, counter

    async def execute(self, *args, **kwargs):
        self._counter.statements += 1
        return await self._cursor.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _CountingConnection:
    def __init__(self, conn, counter) -> None:
        self._conn, self._counter = conn, counter

    async def execute(self, *args, **kwargs):
        self._counter.statements += 1
        return await self._conn.execute(*args, **kwargs)

    def cursor(self, *args, **kwargs):
        return _CountingCursor(self._conn.cursor(*args, **kwargs), self._counter)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class CountingPool:
    """A pool whose connections count the statements run through them."""

    def __init__(self, pool) -> None:
        self._pool = pool
        self.statements = 0

    @contextlib.asynccontextmanager
    async def connection(self):
        async with self._pool.connection() as conn:
            yield _CountingConnection(conn, self)


@pytest.fixture
async def pool_and_storage(fresh_database):
    pool = await open_pool(await fresh_database("messaging"), 1, 2)
    try:
        counting = CountingPool(pool)
        yield pool, counting, Storage(counting)
    finally:
        await pool.close()


async def _conversations(pool, practice_id: str, me: str, count: int) -> None:
    """``count`` conversations of ``me`` with a client each, with two messages apiece."""
    async with pool.connection() as conn:
        for i in range(count):
            cid, client = uuid.uuid4(), str(uuid.uuid4())
            await conn.execute(
                "INSERT INTO conversations (conversation_id, practice_id, client_id, participant_key, last_seq)"
                " VALUES (%s, %s, %s, %s, 2)",
                (cid, practice_id, client, f"{me},{client}"),
            )
            await conn.execute(
                "INSERT INTO participants (conversation_id, user_id, is_staff, read_seq, archived)"
                " VALUES (%s, %s, true, 1, %s), (%s, %s, false, 2, false)",
                (cid, me, i % 3 == 0, cid, client),
            )
            for seq, sender in ((1, me), (2, client)):
                await conn.execute(
                    "INSERT INTO messages (message_id, conversation_id, seq, sender_id, body_ciphertext, nonce,"
                    " key_version, body_sha256, idempotency_key)"
                    " VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s)",
                    (uuid.uuid4(), cid, seq, sender, b"sealed", b"n" * 12, b"d" * 32, f"k{i}-{seq}"),
                )


@pytest.mark.parametrize("count", [3, 40])
async def test_a_page_is_one_query_whatever_its_size(pool_and_storage, count):
    pool, counting, storage = pool_and_storage
    practice_id, me = str(uuid.uuid4()), str(uuid.uuid4())
    await _conversations(pool, practice_id, me, count)

    for archived in (False, True):
        counting.statements = 0
        page = await storage.list_conversations(me, practice_id, 100, archived=archived)
        assert counting.statements == 1
        assert len(page) == sum(1 for i in range(count) if (i % 3 == 0) == archived)
        assert all(c.archived is archived for c in page)
        assert all(c.unread_count == 1 and c.last_sender_id != me for c in page)
        assert all(c.last_message is not None and c.last_message.seq == 2 for c in page)
        assert all(len(c.participants) == 2 for c in page)

    counting.statements = 0
    page = await storage.practice_conversations(practice_id, 100)
    assert counting.statements == 1 and len(page) == count


async def test_a_conversation_without_messages_is_in_no_page(pool_and_storage):
    pool, counting, storage = pool_and_storage
    practice_id, me = str(uuid.uuid4()), str(uuid.uuid4())
    await _conversations(pool, practice_id, me, 2)
    async with pool.connection() as conn:
        empty, client = uuid.uuid4(), str(uuid.uuid4())
        await conn.execute(
            "INSERT INTO conversations (conversation_id, practice_id, client_id, participant_key)"
            " VALUES (%s, %s, %s, %s)",
            (empty, practice_id, client, f"{me},{client}"),
        )
        await conn.execute(
            "INSERT INTO participants (conversation_id, user_id, is_staff) VALUES (%s, %s, true), (%s, %s, false)",
            (empty, me, empty, client),
        )
    for archived in (False, True):
        counting.statements = 0
        page = await storage.list_conversations(me, practice_id, 100, archived=archived)
        assert counting.statements == 1
        assert str(empty) not in [c.conversation_id for c in page]
    assert await storage.list_conversations(client, practice_id, 100) == []
    counting.statements = 0
    page = await storage.practice_conversations(practice_id, 100)
    assert counting.statements == 1 and len(page) == 2

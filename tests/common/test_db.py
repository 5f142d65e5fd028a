"""Migrations and the audit trail against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from services.common import audit
from services.common.db import apply_migrations, migration_files
from tests.support import unique


@pytest.fixture
async def empty_db(pg):
    return await asyncio.to_thread(pg.create_database, unique("common"))


async def test_migrations_apply_once_even_when_replicas_race(empty_db, tmp_path):
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_second.sql").write_text("INSERT INTO a VALUES (1);")
    results = await asyncio.gather(*(apply_migrations(empty_db, tmp_path) for _ in range(3)))
    assert sorted(v for r in results for v in r) == [1, 2]
    assert await apply_migrations(empty_db, tmp_path) == []
    async with await psycopg.AsyncConnection.connect(empty_db) as conn:
        rows = await (await conn.execute("SELECT count(*) FROM a")).fetchone()
        assert rows == (1,)


async def test_a_failing_migration_leaves_nothing_half_written(empty_db, tmp_path):
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE b (id int); SELECT no_such_function();")
    with pytest.raises(psycopg.Error):
        await apply_migrations(empty_db, tmp_path)
    async with await psycopg.AsyncConnection.connect(empty_db) as conn:
        found = await (await conn.execute("SELECT to_regclass('b')")).fetchone()
        assert found == (None,)


def test_migration_names_are_checked(tmp_path):
    (tmp_path / "first.sql").write_text("")
    with pytest.raises(ValueError, match="NNNN"):
        migration_files(tmp_path)


async def test_audit_chain_detects_tampering(empty_db):
    async with await psycopg.AsyncConnection.connect(empty_db, autocommit=True) as conn:
        await conn.execute(audit.AUDIT_TABLE_DDL)
        for n in range(3):
            await audit.record(conn, actor=f"user-{n}", action="sign_in", outcome="success", detail={"n": n})
        assert await audit.verify_chain(conn)
        # The chain does not depend on the reader's time zone.
        await conn.execute("SET TIME ZONE 'America/New_York'")
        assert await audit.verify_chain(conn)
        await conn.execute("UPDATE audit_events SET outcome = 'failure' WHERE event_id = 2")
        assert not await audit.verify_chain(conn)

"""The audit trail: who did what, to what, when, with what outcome.

Every service keeps its own append-only ``audit_events`` table (the DDL below
is part of each service's first migration). Rows are hash-chained: each row
stores the hash of the row before it, so a removed or altered row breaks the
chain. Only identifiers go in; never message text, names, emails or numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

AUDIT_TABLE_DDL = """
CREATE TABLE audit_events (
    event_id     bigserial PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    practice_id  text NOT NULL DEFAULT '',
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text NOT NULL DEFAULT '',
    outcome      text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    text NOT NULL,
    row_hash     text NOT NULL
);
"""

_CHAIN_LOCK = 7_146_003
GENESIS = "0" * 64


def _row_hash(prev_hash: str, occurred_at: datetime, practice_id: str, actor: str, action: str,
              target: str, outcome: str, detail: dict) -> str:
    canonical = json.dumps(
        # In UTC: the same instant hashes alike whatever the session's time zone.
        [prev_hash, occurred_at.astimezone(UTC).isoformat(), practice_id, actor, action, target, outcome, detail],
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record(
    conn: psycopg.AsyncConnection,
    *,
    actor: str,
    action: str,
    outcome: str,
    target: str = "",
    practice_id: str = "",
    detail: dict | None = None,
) -> None:
    """Append one audit row inside the caller's transaction (or its own)."""
    detail = detail or {}
    async with conn.transaction():
        # Serialise appends so each row's prev_hash is the true predecessor.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
        cur = await conn.execute("SELECT row_hash FROM audit_events ORDER BY event_id DESC LIMIT 1")
        last = await cur.fetchone()
        prev_hash = last[0] if last else GENESIS
        now = datetime.now(UTC)
        occurred_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        row_hash = _row_hash(prev_hash, occurred_at, practice_id, actor, action, target, outcome, detail)
        await conn.execute(
            "INSERT INTO audit_events (occurred_at, practice_id, actor, action, target, outcome, detail,"
            " prev_hash, row_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (occurred_at, practice_id, actor, action, target, outcome, json.dumps(detail), prev_hash, row_hash),
        )


async def record_many(conn: psycopg.AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append several rows (each with ``record``'s keyword fields), chained in order, in one
    round trip: a list that shows many clients audits one row per client without a statement each."""
    if not rows:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
        cur = await conn.execute("SELECT row_hash FROM audit_events ORDER BY event_id DESC LIMIT 1")
        last = await cur.fetchone()
        prev_hash = last[0] if last else GENESIS
        now = datetime.now(UTC)
        occurred_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        values = []
        for row in rows:
            fields = (row.get("practice_id", ""), row["actor"], row["action"], row.get("target", ""),
                      row["outcome"], row.get("detail") or {})
            row_hash = _row_hash(prev_hash, occurred_at, *fields)
            values.append((occurred_at, *fields[:5], json.dumps(fields[5]), prev_hash, row_hash))
            prev_hash = row_hash
        async with conn.cursor() as many:
            await many.executemany(
                "INSERT INTO audit_events (occurred_at, practice_id, actor, action, target, outcome, detail,"
                " prev_hash, row_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                values,
            )


async def verify_chain(conn: psycopg.AsyncConnection) -> bool:
    """True when every row's hashes are intact and linked."""
    cur = await conn.execute(
        "SELECT occurred_at, practice_id, actor, action, target, outcome, detail, prev_hash, row_hash"
        " FROM audit_events ORDER BY event_id"
    )
    prev = GENESIS
    async for occurred_at, practice_id, actor, action, target, outcome, detail, prev_hash, row_hash in cur:
        if prev_hash != prev:
            return False
        if _row_hash(prev_hash, occurred_at, practice_id, actor, action, target, outcome, detail) != row_hash:
            return False
        prev = row_hash
    return True

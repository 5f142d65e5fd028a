"""All of consent's SQL, each query a named method."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.consent.ledger import Entry

# The first keys of the two-key advisory locks that serialise changes per client, the
# provider opt-in decision per number, and the automatic answer per number.
_CLIENT_LOCK_SPACE = 53_001
_NUMBER_LOCK_SPACE = 53_002
_AUTO_REPLY_LOCK_SPACE = 53_003
_LEDGER_COLUMNS = (
    "entry_id, client_id, practice_id, event, actor, source, phone_e164, provider_message_id, created_at, provider"
)


@dataclass(frozen=True)
class LedgerRow:
    entry_id: int
    client_id: str
    practice_id: str
    event: str
    actor: str
    source: str
    phone_e164: str | None
    provider_message_id: str | None
    created_at: datetime
    provider: str | None

    def as_entry(self) -> Entry:
        return Entry(self.event, self.phone_e164, self.created_at)


@dataclass(frozen=True)
class NumberHolder:
    client_id: str
    practice_id: str


class ConsentStorage:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    async def lock_client(self, conn: psycopg.AsyncConnection, client_id: str) -> None:
        """Serialise consent changes of one client until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_CLIENT_LOCK_SPACE, client_id))

    async def lock_number(self, conn: psycopg.AsyncConnection, phone: str) -> None:
        """Serialise the provider opt-in decision for one number (across clients) until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_NUMBER_LOCK_SPACE, phone))

    async def lock_auto_reply(self, conn: psycopg.AsyncConnection, phone: str) -> None:
        """Serialise the once-a-day answer to ``phone`` until the transaction ends. Taken before
        any client's lock, and never while holding one, so it cannot deadlock with them."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_AUTO_REPLY_LOCK_SPACE, phone))

    async def ledger_for_client(self, conn: psycopg.AsyncConnection, client_id: str) -> list[LedgerRow]:
        async with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            await cur.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM consent_ledger WHERE client_id = %s ORDER BY entry_id",
                (client_id,),
            )
            return await cur.fetchall()

    async def opt_in_requested_within(self, conn: psycopg.AsyncConnection, phone: str, days: int) -> bool:
        """Whether we asked the provider to opt ``phone`` in within the last ``days`` days, for any client."""
        cur = await conn.execute(
            "SELECT EXISTS (SELECT FROM consent_ledger WHERE event = 'provider_opt_in_requested'"
            " AND phone_e164 = %s AND created_at > now() - make_interval(days => %s))",
            (phone, days),
        )
        (found,) = await cur.fetchone()
        return bool(found)

    async def auto_reply_sent_within(self, conn: psycopg.AsyncConnection, phone: str, hours: int) -> bool:
        """Whether ``phone`` got the automatic answer within the last ``hours`` hours, for any client."""
        cur = await conn.execute(
            "SELECT EXISTS (SELECT FROM consent_ledger WHERE event = 'auto_reply_sent'"
            " AND phone_e164 = %s AND created_at > now() - make_interval(hours => %s))",
            (phone, hours),
        )
        (found,) = await cur.fetchone()
        return bool(found)

    async def append_ledger(
        self,
        conn: psycopg.AsyncConnection,
        *,
        client_id: str,
        practice_id: str,
        entries: Sequence[Entry],
        actor: str,
        source: str,
        provider_message_id: str | None = None,
        provider: str | None = None,
    ) -> list[LedgerRow]:
        """Append ``entries`` (oldest first); returns them as stored, with their ids and times."""
        stored: list[LedgerRow] = []
        async with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            for e in entries:
                await cur.execute(
                    "INSERT INTO consent_ledger (client_id, practice_id, event, actor, source, phone_e164,"
                    " provider_message_id, provider) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING {_LEDGER_COLUMNS}",
                    (client_id, practice_id, str(e.event), actor, source, e.phone, provider_message_id, provider),
                )
                stored.append(await cur.fetchone())
        return stored

    async def save_current_number(
        self, conn: psycopg.AsyncConnection, client_id: str, practice_id: str, phone: str | None, text_ok: bool
    ) -> None:
        """Keep the phone_numbers row in step with the ledger's fold (``text_ok``: texts may be sent now)."""
        await conn.execute(
            "INSERT INTO phone_numbers (client_id, practice_id, phone_e164, text_ok, updated_at)"
            " VALUES (%s, %s, %s, %s, now())"
            " ON CONFLICT (client_id) DO UPDATE SET practice_id = EXCLUDED.practice_id,"
            " phone_e164 = EXCLUDED.phone_e164, text_ok = EXCLUDED.text_ok, updated_at = now()",
            (client_id, practice_id, phone, text_ok),
        )

    async def clients_with_number(self, conn: psycopg.AsyncConnection, phone: str) -> list[NumberHolder]:
        async with conn.cursor(row_factory=class_row(NumberHolder)) as cur:
            await cur.execute(
                "SELECT client_id, practice_id FROM phone_numbers WHERE phone_e164 = %s ORDER BY client_id",
                (phone,),
            )
            return await cur.fetchall()

    async def record_inbound_sms(
        self, conn: psycopg.AsyncConnection, provider: str, provider_message_id: str, phone: str, to: str | None
    ) -> bool:
        """Remember an inbound SMS; False when this provider's message id was seen before.

        A concurrent delivery of the same id waits here for the first one's transaction,
        then finds it: one of them acts, whatever the timing.
        """
        cur = await conn.execute(
            "INSERT INTO inbound_sms (provider, provider_message_id, from_e164, to_e164) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (provider, provider_message_id) DO NOTHING RETURNING provider_message_id",
            (provider, provider_message_id, phone, to),
        )
        return await cur.fetchone() is not None

    async def set_inbound_action(
        self, conn: psycopg.AsyncConnection, provider: str, provider_message_id: str, action: str,
        practice_ids: list[str],
    ) -> None:
        await conn.execute(
            "UPDATE inbound_sms SET action = %s, practice_ids = %s WHERE provider = %s AND provider_message_id = %s",
            (action, sorted(practice_ids), provider, provider_message_id),
        )

    async def inbound_outcome(
        self, conn: psycopg.AsyncConnection, provider: str, provider_message_id: str
    ) -> tuple[str, list[str]]:
        """What an inbound message already did: (action, the practices it acted for)."""
        cur = await conn.execute(
            "SELECT action, practice_ids FROM inbound_sms WHERE provider = %s AND provider_message_id = %s",
            (provider, provider_message_id),
        )
        row = await cur.fetchone()
        return (row[0], list(row[1])) if row else ("none", [])

    async def audit(self, conn: psycopg.AsyncConnection, **fields) -> None:
        await audit.record(conn, **fields)

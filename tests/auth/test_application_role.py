"""auth's queries run as a database role that cannot rewrite the audit trail."""

from __future__ import annotations

import psycopg
import pytest

from services.common.db import open_pool

APP_ROLE = "confidant_auth_app"


async def test_the_application_role_may_append_to_the_audit_trail_but_never_change_it(auth):
    _, owner = await auth.practice()  # writes audit rows through the running service
    async with await psycopg.AsyncConnection.connect(auth.database_url, autocommit=True) as conn:
        await conn.execute(f"SET ROLE {APP_ROLE}")
        (rows,) = await (await conn.execute("SELECT count(*) FROM audit_events")).fetchone()
        assert rows > 0
        for statement in (
            "UPDATE audit_events SET outcome = 'edited'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(statement)
        # Its ordinary work is allowed: sessions come and go.
        await conn.execute("DELETE FROM sessions WHERE false")


async def test_the_service_pool_runs_as_the_application_role(auth):
    pool = await open_pool(auth.database_url, role=APP_ROLE)
    try:
        async with pool.connection() as conn:
            (who,) = await (await conn.execute("SELECT current_user")).fetchone()
        assert who == APP_ROLE
    finally:
        await pool.close()

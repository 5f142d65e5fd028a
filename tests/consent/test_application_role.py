"""consent's queries run as a database role that cannot rewrite the ledger or the audit trail."""

from __future__ import annotations

import dataclasses

import grpc
import psycopg
import pytest
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from services.common.config import Env
from services.common.db import open_pool
from services.consent.config import ConsentConfig
from tests.consent.harness import consent_service, new_phone, rpc_error
from tests.support import channel

APP_ROLE = "confidant_consent_app"


async def test_the_application_role_appends_to_the_ledger_and_audit_trail_but_never_changes_them(stack):
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    typed, _ = new_phone()
    await stack.set_phone(practice.owner, client, typed, True)  # through the running service, as the role
    async with await psycopg.AsyncConnection.connect(stack.consent_url, autocommit=True) as conn:
        await conn.execute(f"SET ROLE {APP_ROLE}")
        for table in ("consent_ledger", "audit_events"):
            (rows,) = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
            assert rows > 0
            for statement in (f"UPDATE {table} SET actor = 'edited'", f"DELETE FROM {table}", f"TRUNCATE {table}"):
                # Refused for want of the right, before any trigger is reached.
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                    await conn.execute(statement)
        # Its ordinary work is allowed: the current number row and the inbound dedupe are kept up to date.
        await conn.execute("UPDATE phone_numbers SET updated_at = updated_at WHERE false")
        await conn.execute("UPDATE inbound_sms SET action = action WHERE false")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT * FROM schema_migrations")
    assert [e.event for e in await stack.ledger(practice.owner, client)] == ["number_added", "text_ok_checked"]


async def test_the_running_service_queries_as_the_application_role(stack, fresh_database, keys_dir, auth_address):
    """Take the role's right to append to the ledger away (in a database of its own): the service's
    saves fail, which they would not as the login user; given back, they work."""
    practice = await stack.people.practice()
    client = await stack.people.user(practice)
    typed, _ = new_phone()
    async with consent_service(fresh_database, keys_dir, auth_address) as (address, url), channel(address) as ch:
        own = dataclasses.replace(stack, consent=pb_grpc.ConsentServiceStub(ch), consent_url=url)
        await own.sql(f"REVOKE INSERT ON consent_ledger FROM {APP_ROLE}")
        err = await rpc_error(own.set_phone(practice.owner, client, typed, True))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert await own.sql("SELECT count(*) FROM consent_ledger") == [(0,)]
        await own.sql(f"GRANT INSERT ON consent_ledger TO {APP_ROLE}")
        assert (await own.set_phone(practice.owner, client, typed, True)).text_ok


async def test_a_pool_with_the_role_runs_as_it(stack):
    pool = await open_pool(stack.consent_url, role=APP_ROLE)
    try:
        async with pool.connection() as conn:
            (who,) = await (await conn.execute("SELECT current_user")).fetchone()
        assert who == APP_ROLE
    finally:
        await pool.close()


def test_the_role_is_configurable_and_none_turns_it_off():
    base = {"CONFIDANT_CONSENT_DATABASE_URL": "postgresql:///x"}
    assert ConsentConfig.load(Env(base)).database_app_role == APP_ROLE
    named = ConsentConfig.load(Env({**base, "CONFIDANT_CONSENT_DATABASE_APP_ROLE": "consent_writer"}))
    assert named.database_app_role == "consent_writer"
    assert ConsentConfig.load(Env({**base, "CONFIDANT_CONSENT_DATABASE_APP_ROLE": "None"})).database_app_role == ""

"""Start-up waits for the database: bounded, each failed attempt logged with its reason,
the end one sentence naming the host, and never the password."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import pytest

from services.common.db import DatabaseUnavailable, database_host, wait_for_database
from services.common.pgserver import free_port

PASSWORD = "pw-canary-71"


def attempts(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "database not ready"]


async def test_a_database_nobody_serves_fails_in_time_with_the_host_and_no_password(caplog):
    caplog.set_level(logging.INFO, logger="confidant.db")
    port = free_port()
    url = f"postgresql://confidant:{PASSWORD}@127.0.0.1:{port}/confidant_auth"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as err:
        await wait_for_database(url, timeout_seconds=1.0)
    assert time.monotonic() - started < 4
    message = str(err.value)
    assert message.startswith(f"The database at 127.0.0.1:{port} did not answer within 1 seconds (")
    assert "refused" in message.lower() and message.endswith(").")
    failed = attempts(caplog)
    assert len(failed) >= 2
    assert all(r.fields["host"] == f"127.0.0.1:{port}" and r.fields["reason"] for r in failed)
    assert [r.fields["attempt"] for r in failed] == list(range(1, len(failed) + 1))
    everything = message + " ".join(str(r.__dict__) for r in caplog.records)
    assert PASSWORD not in everything and "confidant_auth" not in everything


def test_the_host_of_either_connection_string_form():
    assert database_host(f"postgresql://u:{PASSWORD}@db.example.com:6432/x?sslmode=verify-full") == "db.example.com:6432"
    assert database_host(f"host=db.internal dbname=x user=u password={PASSWORD}") == "db.internal:5432"
    assert database_host("dbname=x") == "the local socket:5432"


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_database_that_appears_during_the_wait_is_used(pg, caplog):
    """PostgreSQL comes up (here: starts being reachable on its address) after the first failures."""
    caplog.set_level(logging.INFO, logger="confidant.db")
    target = urlsplit(pg.admin_url)
    port = free_port()
    url = pg.admin_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{port}")

    async def relay(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(_forward(client_reader, server_writer), _forward(server_reader, client_writer))

    waiting = asyncio.create_task(wait_for_database(url, timeout_seconds=20))
    deadline = time.monotonic() + 10
    while len(attempts(caplog)) < 2:
        assert time.monotonic() < deadline and not waiting.done()
        await asyncio.sleep(0.02)
    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        await asyncio.wait_for(waiting, timeout=15)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    answered = [r for r in caplog.records if r.getMessage() == "database answered"]
    assert len(answered) == 1 and answered[0].fields["attempt"] == len(attempts(caplog)) + 1

"""PostgreSQL access shared by every service: the pool and numbered migrations.

Each service keeps its schema in ``services/<name>/migrations/NNNN_name.sql``.
``apply_migrations`` applies the ones not yet recorded in ``schema_migrations``,
each in its own transaction, under an advisory lock so that several replicas
starting at once migrate exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("confidant.db")

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 7_146_002  # any constant: one migration run per database at a time


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if not match:
            raise ValueError(f"Migration file {path.name} must be named NNNN_lowercase_words.sql.")
        found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"Two migrations in {directory} share a number.")
    return found


async def apply_migrations(url: str, directory: Path) -> list[int]:
    """Apply pending migrations; return the versions applied now."""
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name)
                    )
                applied_now.append(version)
                log.info("migration applied", extra={"fields": {"version": version, "file": path.name}})
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


class DatabaseUnavailable(RuntimeError):
    """The database did not answer within the start-up wait; the message names its host."""


def database_host(url: str) -> str:
    """host:port of a connection URL or key=value string, for messages (never the URL: it may hold a password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    host = str(params.get("host") or params.get("hostaddr") or "the local socket")
    return f"{host}:{params.get('port') or 5432}"


def _reason(exc: BaseException, url: str) -> str:
    """Why a connection attempt failed, with the password (should libpq ever echo it) removed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    return text.replace(str(password), "***") if password else text


async def wait_for_database(url: str, timeout_seconds: float = 30.0) -> None:
    """Bounded retry at start-up: log each failed attempt's reason, and give up after
    ``timeout_seconds`` with one sentence naming the host, rather than hang or crash-loop silently."""
    host = database_host(url)
    deadline = time.monotonic() + timeout_seconds
    attempt, pause = 0, 0.25
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            # libpq's connect_timeout is whole seconds, at least 2; the outer timeout keeps the bound.
            connect = psycopg.AsyncConnection.connect(url, connect_timeout=max(2, min(10, int(remaining) + 1)))
            async with await asyncio.wait_for(connect, timeout=max(remaining, 0.5)):
                if attempt > 1:
                    log.info("database answered", extra={"fields": {"host": host, "attempt": attempt}})
                return
        except (psycopg.OperationalError, TimeoutError) as exc:
            reason = _reason(exc, url) if isinstance(exc, psycopg.OperationalError) else "no answer in time"
            log.warning("database not ready", extra={"fields": {"host": host, "attempt": attempt, "reason": reason}})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"The database at {host} did not answer within {timeout_seconds:g} seconds "
                    f"({attempt} attempts; the last said: {reason})."
                ) from None
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 2.0)


async def open_pool(url: str, min_size: int = 1, max_size: int = 10, role: str | None = None) -> AsyncConnectionPool:
    """The service's pool; with ``role``, every connection runs its queries as that role."""

    async def configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))

    # No per-checkout check (check_connection): it costs a round trip on every
    # query. A connection that broke while idle fails its one request (retryable:
    # sends carry idempotency keys) and the pool replaces it; idle connections are
    # recycled after max_idle.
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        max_idle=300,
        kwargs={"autocommit": True},
        configure=configure if role else None,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def usable_role(url: str, role: str) -> bool:
    """Whether ``role`` exists and the login user may SET ROLE to it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)"
            " AND pg_has_role(current_user, %s, 'MEMBER')",
            (role, role),
        )
        (ok,) = await cur.fetchone()
        return bool(ok)


async def prepare_database(
    url: str, migrations: Path, min_size: int = 1, max_size: int = 10, app_role: str | None = None,
    wait_seconds: float = 30.0,
) -> AsyncConnectionPool:
    """Wait for the database, migrate it and open the pool: every service's start-up.

    Migrations run as the login user; with ``app_role`` (when it exists and the login
    user is a member) the service's own queries run with that role's narrower rights.
    (run_service has already waited CONFIDANT_DATABASE_WAIT_SECONDS; this wait is for
    services built in-process.)
    """
    await wait_for_database(url, wait_seconds)
    await apply_migrations(url, migrations)
    role = None
    if app_role:
        if await usable_role(url, app_role):
            role = app_role
        else:
            log.warning("application role not usable; running as the login user",
                        extra={"fields": {"role": app_role}})
    return await open_pool(url, min_size, max_size, role)

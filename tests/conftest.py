"""Session-wide fixtures: one throwaway PostgreSQL, development keys, databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.common import pgserver
from services.common.db import apply_migrations
from services.common.tokens import ensure_dev_keys
from tests.support import Tokens, unique

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> pgserver.PostgresServer:
    try:
        server = pgserver.provide(tmp_path_factory.mktemp("pg") / "data", fast=True)
    except pgserver.PostgresUnavailable as exc:
        pytest.exit(str(exc), returncode=3)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    ensure_dev_keys(path)
    return path


@pytest.fixture(scope="session")
def tokens(keys_dir) -> Tokens:
    return Tokens(keys_dir)


@pytest.fixture(scope="session")
def fresh_database(pg):
    """``await fresh_database("auth")`` gives the URL of a new, migrated database.

    Each service's migrations run once into a template; every call clones it,
    which takes milliseconds and keeps tests isolated from each other.
    """
    templates: dict[str, str] = {}
    lock = asyncio.Lock()

    async def make(service: str) -> str:
        async with lock:
            if service not in templates:
                name = f"template_{service}"
                url = await asyncio.to_thread(pg.create_database, name)
                await apply_migrations(url, REPO / "services" / service / "migrations")
                templates[service] = name
        return await asyncio.to_thread(pg.create_database, unique(service), templates[service])

    return make

"""``python -m services.<name> migrate`` applies the migrations and exits 0 (an init container)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from services.common.db import migration_files
from tests.support import unique

REPO = Path(__file__).resolve().parents[2]


def run(service: str, url: str, keys_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "CONFIDANT_MODE": "development", "CONFIDANT_KEYS_DIR": str(keys_dir),
           f"CONFIDANT_{service.upper()}_DATABASE_URL": url, "CONFIDANT_DATABASE_WAIT_SECONDS": "10"}
    return subprocess.run([sys.executable, "-m", f"services.{service}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def migrated_line(stderr: str) -> dict:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return next(line for line in lines if line["msg"] == "migrated")


@pytest.mark.parametrize("service", ["auth", "messaging", "consent"])
async def test_migrate_applies_every_migration_once_and_exits(pg, keys_dir, service):
    url = await asyncio.to_thread(pg.create_database, unique(f"migrate_{service}"))
    expected = [version for version, _ in migration_files(REPO / "services" / service / "migrations")]

    first = await asyncio.to_thread(run, service, url, keys_dir, "migrate")
    assert first.returncode == 0, first.stderr
    assert migrated_line(first.stderr)["applied"] == expected
    async with await psycopg.AsyncConnection.connect(url) as conn:
        rows = await (await conn.execute("SELECT version FROM schema_migrations ORDER BY version")).fetchall()
    assert [v for (v,) in rows] == expected

    again = await asyncio.to_thread(run, service, url, keys_dir, "migrate")
    assert again.returncode == 0 and migrated_line(again.stderr)["applied"] == []


def test_an_unknown_command_is_refused(keys_dir):
    result = run("consent", "postgresql:///unused", keys_dir, "migrat")
    assert result.returncode == 2
    assert result.stderr.strip() == "consent: unknown arguments 'migrat'; usage: python -m services.consent [migrate]"

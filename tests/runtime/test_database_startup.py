"""A service whose database does not answer gives up after CONFIDANT_DATABASE_WAIT_SECONDS
with one sentence naming the database host (never the URL), having logged every attempt."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from services.common.pgserver import free_port

REPO = Path(__file__).resolve().parents[2]


def test_start_up_gives_up_on_a_database_that_does_not_answer(keys_dir):
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "CONFIDANT_MODE": "development", "CONFIDANT_KEYS_DIR": str(keys_dir),
           "CONFIDANT_CONSENT_DATABASE_URL": f"postgresql://consent:pw-canary-9@127.0.0.1:{port}/consent",
           "CONFIDANT_CONSENT_LISTEN": f"127.0.0.1:{free_port()}", "CONFIDANT_DATABASE_WAIT_SECONDS": "1.5"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "services.consent"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    attempts = [json.loads(line) for line in lines if '"database not ready"' in line]
    assert len(attempts) >= 2 and all(a["host"] == f"127.0.0.1:{port}" and a["reason"] for a in attempts)
    assert lines[-1].startswith(f"consent: The database at 127.0.0.1:{port} did not answer within 1.5 seconds (")
    assert "pw-canary-9" not in result.stderr

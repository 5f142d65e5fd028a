"""`make run`'s process runner: a port already in use is one clear sentence."""

from __future__ import annotations

import socket

import pytest

from bin.stack import PortInUse, Stack


def test_a_port_in_use_is_refused_with_a_clear_message(pg, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack.ephemeral(pg, tmp_path / "keys")
        stack.ports["web"] = port
        with pytest.raises(PortInUse, match=rf"already in use: web \({port}\)"):
            stack.start()
        assert stack.processes == {}


def test_a_failed_start_leaves_no_process_behind(pg, tmp_path):
    """The services run in their own sessions; a start that fails must stop the ones that came up."""
    stack = Stack.ephemeral(
        pg, tmp_path / "keys", database_prefix="failed_start",
        extra_env={"CONFIDANT_WEB_LISTEN": "not-an-address"},  # web refuses its configuration
    )
    spawned = []
    start_one = stack.start_one
    stack.start_one = lambda service, env=None: spawned.append(start_one(service, env)) or spawned[-1]
    with pytest.raises(RuntimeError, match="web service exited"):
        stack.start(timeout=60)
    assert len(spawned) == 5
    assert all(proc.poll() is not None for proc in spawned)

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

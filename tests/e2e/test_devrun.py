"""`make run`'s process runner: a port already in use is one clear sentence; what it prints is
readable, without the access log of every successful request."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from bin.devrun import readable
from bin.seed import DANA
from bin.stack import DEV_PORTS, REPO, PortInUse, Stack, port_in_use


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


# -- what a person running `make run` reads (issue 11, defect 20) ----------------------------


def test_successful_requests_are_left_out_and_other_lines_read_as_text():
    ok_http = json.dumps({"ts": "2026-12-01T10:00:00.000Z", "level": "info", "service": "web", "logger": "x",
                          "msg": "http", "method": "GET", "route": "/api/unread", "status": 200, "ms": 1.2})
    ok_rpc = json.dumps({"ts": "2026-12-01T10:00:00.000Z", "level": "info", "service": "auth", "logger": "x",
                         "msg": "rpc", "method": "/confidant.auth.v1.AuthService/GetUsers", "code": "OK"})
    refused = json.dumps({"ts": "2026-12-01T10:00:01.000Z", "level": "info", "service": "web", "logger": "x",
                          "msg": "http", "method": "POST", "route": "/sign-in", "status": 401, "user": None})
    failed = json.dumps({"ts": "2026-12-01T10:00:02.000Z", "level": "error", "service": "auth", "logger": "x",
                         "msg": "unhandled error", "method": "/m", "exc": "Traceback (most recent call last):\n  …"})
    assert readable(ok_http) is None and readable(ok_rpc) is None
    assert readable(refused) == "10:00:01 http method=POST route=/sign-in status=401"
    assert readable(failed) == "10:00:02 ERROR unhandled error method=/m\nTraceback (most recent call last):\n  …"
    assert readable("plain text from a library") == "plain text from a library"
    assert readable(ok_http, verbose=True) == ok_http


def _free_port_base() -> int:
    """A port base that moves every `make run` port onto free ports."""
    for _ in range(50):
        base = random.randrange(1_000, 9_000)
        if not any(port_in_use(port + base) for port in (*DEV_PORTS.values(), 54329)):
            return base
    raise AssertionError("no free port base found")


def test_make_run_shows_the_banner_and_no_access_log_of_a_person_using_it(pg, tmp_path):
    base = _free_port_base()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANT_")}
    env.update({"CONFIDANT_POSTGRES_URL": pg.admin_url, "CONFIDANT_PORT_BASE": str(base)})
    out = tmp_path / "make-run.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "bin.devrun"], cwd=REPO, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Press Enter to show this again" not in out.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.2)
        web = f"http://127.0.0.1:{DEV_PORTS['web'] + base}"
        # A person signs in and the page polls and streams, as a browser would.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(urllib.request.Request(f"{web}/sign-in")) as page:
            assert page.status == 200
        form = urllib.parse.urlencode({"email": DANA[0], "password": DANA[2]}).encode()
        with opener.open(urllib.request.Request(f"{web}/sign-in", data=form, headers={"Origin": web})) as page:
            assert page.status == 200
        for _ in range(5):
            with opener.open(urllib.request.Request(f"{web}/api/unread", headers={"Accept": "application/json"})):
                pass
        # The live-update stream, opened and then dropped as a closed tab drops it.
        for _ in range(3):
            with opener.open(urllib.request.Request(f"{web}/api/events",
                                                    headers={"Accept": "text/event-stream"}), timeout=10) as stream:
                assert stream.readline().startswith(b"retry:")
        # Every service has logged what the dropped streams left (if anything) once a later request
        # has passed through them all.
        with opener.open(urllib.request.Request(f"{web}/api/unread", headers={"Accept": "application/json"})):
            pass
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    text = out.read_text()
    after = text.split("Press Enter to show this again", 1)[1]
    assert f"Web:      {web}/sign-in" in text
    # Nothing of the successful requests above, no JSON, no traceback.
    assert "route=/api/unread" not in after and '"msg"' not in after
    assert "Traceback" not in text and " ERROR " not in text

"""`make run`: everything up in development mode, with the demo practice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from bin.seed import ALEX, DANA, JORDAN, SAM, seed_demo
from bin.stack import ALL_SERVICES, COLOURS, DEV_PORTS, REPO, PortInUse, Stack
from services.common import pgserver

DATA = REPO / ".data"
_print_lock = threading.Lock()


def _sink(service: str, line: str) -> None:
    prefix = f"{service:<9}|"
    if sys.stdout.isatty():
        prefix = f"\033[{COLOURS[service]}m{prefix}\033[0m"
    with _print_lock:
        print(prefix, line, flush=True)


def main() -> int:
    base = int(os.environ.get("CONFIDANT_PORT_BASE", "0"))
    ports = {s: p + base for s, p in DEV_PORTS.items()}
    pg_port = int(os.environ.get("CONFIDANT_PG_PORT", str(54329 + base)))
    try:
        pg = pgserver.provide(DATA / "postgres", port=pg_port)
    except pgserver.PostgresUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"PostgreSQL: {pg.how}")
    stack = Stack(pg=pg, keys_dir=DATA / "keys", ports=ports, sink=_sink)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both lead to the orderly stop below (the services run in
    # their own sessions, so only this process receives the terminal's Ctrl-C).
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        stack.start()
        created = asyncio.run(seed_demo({s: stack.address(s) for s in ALL_SERVICES}, stack.keys_dir))
        url = stack.web_url
        print(
            "\n"
            f"Confidant is running in development mode{' (demo practice created)' if created else ''}.\n"
            f"  Web:      {url}/sign-in\n"
            f"  Mailbox:  {url}/dev/mailbox  (JSON: {url}/dev/mailbox.json)\n"
            f"  Clinician {DANA[1]}: {DANA[0]} / {DANA[2]}\n"
            f"  Team member {SAM[1]}: {SAM[0]} / {SAM[2]}\n"
            f"  Client {JORDAN[1]}: {JORDAN[0]} / {JORDAN[2]} (portal: {url}/portal/sign-in)\n"
            f"  Client {ALEX[1]}: {ALEX[0]} (secure messaging not yet enabled)\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stop.wait(0.5):
            dead = [s for s, p in stack.processes.items() if p.poll() is not None]
            if dead:
                print(f"The {', '.join(dead)} service stopped unexpectedly; stopping everything.", file=sys.stderr)
                return 1
    except PortInUse as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        print("Stopping…", flush=True)
        stack.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

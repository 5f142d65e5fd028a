"""`make run`: everything up in development mode, with the demo practice.

The services log JSON lines for machines; here a person reads them. So the runner shows
each line as one short readable line, leaves out the access log of requests and calls
that succeeded (hundreds a minute while a page is open), and prints the URL banner
again whenever Enter is pressed. ``CONFIDANT_DEV_VERBOSE=1`` shows every line as the
services wrote it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading

from bin.seed import ALEX, DANA, JORDAN, SAM, seed_demo
from bin.stack import ALL_SERVICES, COLOURS, DEV_PORTS, REPO, PortInUse, Stack
from services.common import pgserver

DATA = REPO / ".data"
_print_lock = threading.Lock()


# The fields of a JSON log line that readable() shows as the line's start, not as key=value.
_HEAD_FIELDS = ("ts", "level", "service", "logger", "msg", "exc")


def readable(line: str, verbose: bool = False) -> str | None:
    """A service's log line as a person reads it, or None when it is left out.

    Left out: the access log of what succeeded (web's "http" lines below 400, gRPC "rpc"
    lines with code OK). Shown as ``HH:MM:SS level message key=value ...`` (and the
    traceback under it): everything else. Lines that are not JSON pass through as they are.
    """
    if verbose:
        return line
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    msg = entry.get("msg", "")
    if msg == "http" and isinstance(entry.get("status"), int) and entry["status"] < 400:
        return None
    if msg == "rpc" and entry.get("code") == "OK":
        return None
    when = str(entry.get("ts", ""))[11:19]
    level = str(entry.get("level", "")).upper()
    extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _HEAD_FIELDS and v is not None)
    text = " ".join(part for part in (when, level if level != "INFO" else "", msg, extras) if part)
    if entry.get("exc"):
        text += "\n" + str(entry["exc"])
    return text


def _sink_for(verbose: bool):
    def sink(service: str, line: str) -> None:
        shown = readable(line, verbose)
        if shown is None:
            return
        prefix = f"{service:<9}|"
        if sys.stdout.isatty():
            prefix = f"\033[{COLOURS[service]}m{prefix}\033[0m"
        with _print_lock:
            print(prefix, shown, flush=True)

    return sink


def banner(url: str, created: bool) -> str:
    return (
        "\n"
        f"Confidant is running in development mode{' (demo practice created)' if created else ''}.\n"
        f"  Web:      {url}/sign-in\n"
        f"  Mailbox:  {url}/dev/mailbox  (JSON: {url}/dev/mailbox.json)\n"
        f"  Clinician {DANA[1]}: {DANA[0]} / {DANA[2]}\n"
        f"  Team member {SAM[1]}: {SAM[0]} / {SAM[2]}\n"
        f"  Client {JORDAN[1]}: {JORDAN[0]} / {JORDAN[2]} (portal: {url}/portal/sign-in)\n"
        f"  Client {ALEX[1]}: {ALEX[0]} (secure messaging not yet enabled)\n"
        "Press Enter to show this again, Ctrl-C to stop.\n"
    )


def _reprint_on_enter(text: str, stop: threading.Event) -> None:
    """Print the banner again each time the person presses Enter (a terminal only)."""
    for _ in sys.stdin:
        if stop.is_set():
            return
        with _print_lock:
            print(text, flush=True)


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
    verbose = os.environ.get("CONFIDANT_DEV_VERBOSE", "") == "1"
    stack = Stack(pg=pg, keys_dir=DATA / "keys", ports=ports, sink=_sink_for(verbose))
    stop = threading.Event()
    # Ctrl-C and SIGTERM both lead to the orderly stop below (the services run in
    # their own sessions, so only this process receives the terminal's Ctrl-C).
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        stack.start()
        created = asyncio.run(seed_demo({s: stack.address(s) for s in ALL_SERVICES}, stack.keys_dir))
        text = banner(stack.web_url, created)
        with _print_lock:
            print(text, flush=True)
        if sys.stdin is not None and sys.stdin.isatty():
            threading.Thread(target=_reprint_on_enter, args=(text, stop), daemon=True).start()
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

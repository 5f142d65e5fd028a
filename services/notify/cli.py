"""Operators' commands: ``python -m services.notify requeue [--job ID ...] [--practice ID]``.

``requeue`` puts failed jobs back in the queue with their attempts reset (all of
them, a practice's, or the ones named), in notify's database
(``CONFIDANT_NOTIFY_DATABASE_URL``); the running workers pick them up. It is
audited like the RPC. Invitation and password-reset emails are not requeued:
their links are gone once the job has finished, so ask for a new one instead.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from services.common.clock import SystemClock
from services.common.config import ConfigError, Env
from services.common.db import open_pool
from services.notify.storage import NotifyStorage


async def requeue(database_url: str, job_ids: list[int], practice_id: str | None) -> list[int]:
    pool = await open_pool(database_url, min_size=1, max_size=1)
    try:
        storage = NotifyStorage(pool, SystemClock())
        return await storage.requeue_failed(practice_id, job_ids, actor=f"operator:{getpass.getuser()}")
    finally:
        await pool.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notify", description="Notify's operator commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("requeue", help="send failed notification jobs again")
    command.add_argument("--job", type=int, action="append", default=[], metavar="ID",
                         help="only this job (repeatable); default: every failed job")
    command.add_argument("--practice", default=None, metavar="ID", help="only this practice's jobs")
    args = parser.parse_args(argv)
    try:
        url = Env.from_os().str("NOTIFY_DATABASE_URL")
    except ConfigError as exc:
        print(f"notify: configuration error: {exc}", file=sys.stderr)
        return 2
    if any(job <= 0 for job in args.job):
        print("notify: job ids are positive numbers.", file=sys.stderr)
        return 2
    requeued = asyncio.run(requeue(url, sorted(set(args.job)), args.practice))
    print(f"Requeued {len(requeued)} failed job(s)" + (f": {', '.join(map(str, requeued))}" if requeued else "."))
    return 0

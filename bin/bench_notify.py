"""`make bench`'s notification section: time from a committed message to its email in the mailbox.

Through the real stack: Dana sends a message to a client through the web edge's JSON API;
messaging commits it with its outbox row, relays it to notify, notify's worker mints the
magic link at auth and delivers the email to the development mailbox, which is polled
(``/dev/mailbox.json``) until the email is there. Each sample uses a client of its own (a
new one), since a client's alerts within the burst window make one email. The clock starts
when the send request starts (the message commits inside it).

``bin/bench.py`` calls ``notify_latency(stack, samples)`` on its running stack;
``python -m bin.bench_notify`` runs it alone on a throwaway stack.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bin.seed import seed_demo
from bin.stack import ALL_SERVICES, Stack
from services.common import pgserver

SUBJECT = "You have a new secure message"
POLL_SECONDS = 0.005


async def _client_conversation(http, base: str, n: int) -> tuple[str, str]:
    """A new client with secure messaging on, and Dana's conversation with them: (email, conversation id)."""
    email = f"bench-notify-{n}-{uuid.uuid4().hex[:8]}@client.test"
    async with http.post(f"{base}/api/clients", json={"display_name": f"Bench Client {n}", "email": email}) as r:
        r.raise_for_status()
        client_id = (await r.json())["client"]["user_id"]
    async with http.post(f"{base}/api/clients/{client_id}/secure-messaging", json={"enabled": True}) as r:
        r.raise_for_status()
    async with http.post(f"{base}/api/conversations", json={"participant_ids": [client_id]}) as r:
        r.raise_for_status()
        return email, (await r.json())["conversation"]["conversation_id"]


async def _alerts(http, base: str, email: str) -> int:
    async with http.get(f"{base}/dev/mailbox.json", params={"to": email}) as r:
        r.raise_for_status()
        return sum(1 for item in (await r.json())["items"] if item["channel"] == "email" and item["subject"] == SUBJECT)


async def notify_latency(stack: Stack, samples: int = 30, within: float = 10.0) -> tuple[float, float]:
    """Send ``samples`` messages one at a time; print and return (p50, p99) in seconds."""
    from bin.bench import percentile, signed_in  # bin.bench imports this module
    from bin.seed import DANA

    base = stack.web_url
    dana = await signed_in(base, DANA[0], DANA[2])
    try:
        targets = [await _client_conversation(dana, base, n) for n in range(samples)]
        delays = []
        for i, (email, conversation_id) in enumerate(targets):
            started = time.perf_counter()
            async with dana.post(
                f"{base}/api/conversations/{conversation_id}/messages",
                json={"body": f"notify bench {i}", "idempotency_key": f"notify-bench-{uuid.uuid4()}"},
            ) as r:
                r.raise_for_status()
            while not await _alerts(dana, base, email):
                if time.perf_counter() - started > within:
                    raise RuntimeError(f"no email within {within:.0f}s of a committed message")
                await asyncio.sleep(POLL_SECONDS)
            delays.append(time.perf_counter() - started)
    finally:
        await dana.close()
    p50, p99 = statistics.median(delays), percentile(delays, 99)
    print(f"committed message -> its email in the mailbox: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
          f"over {samples} messages")
    return p50, p99


async def _standalone(samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pg = pgserver.provide(Path(tmp) / "pg")
        stack = Stack.ephemeral(pg, Path(tmp) / "keys", database_prefix="bench_notify")
        try:
            await asyncio.to_thread(stack.start)
            await seed_demo({s: stack.address(s) for s in ALL_SERVICES}, stack.keys_dir)
            await notify_latency(stack, samples)
        finally:
            await asyncio.to_thread(stack.stop)
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    asyncio.run(_standalone(parser.parse_args().samples))


if __name__ == "__main__":
    main()

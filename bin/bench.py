"""`make bench`: messages sent through the web edge's JSON API.

Starts the five services as processes on a throwaway PostgreSQL (durable
settings: fsync on), seeds the demo practice, then for concurrency 1, 8 and 32
sends messages (each worker to its own conversation) and prints messages per
second and p50/p99 latency next to a raw psycopg INSERT+COMMIT baseline on the
same PostgreSQL at the same concurrency. Last, the time from a send to the
recipient's live event (Server-Sent Events), and from a committed message to its
email in the development mailbox (bin/bench_notify.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg

from bin.bench_notify import notify_latency
from bin.seed import DANA, SAM, seed_demo
from bin.stack import ALL_SERVICES, Stack
from services.common import pgserver

SEARCHES = ["Avery", "Blake", "Camila", "Diego", "Elena", "Farah"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


async def signed_in(base: str, email: str, password: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(
        headers={"Origin": base},
        connector=aiohttp.TCPConnector(limit=100),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # the default jar ignores cookies from 127.0.0.1
    )
    async with http.post(f"{base}/sign-in", data={"email": email, "password": password}, allow_redirects=False) as r:
        if r.status != 303:
            raise RuntimeError(f"sign-in failed: {r.status}")
    return http


async def conversations_with_clients(http, base: str, count: int) -> list[str]:
    client_ids: list[str] = []
    for query in SEARCHES:
        async with http.get(f"{base}/api/directory", params={"q": query}) as r:
            for person in (await r.json())["users"]:
                if person["role"] == "client" and person["user_id"] not in client_ids:
                    client_ids.append(person["user_id"])
        if len(client_ids) >= count:
            break
    conversations = []
    for client_id in client_ids[:count]:
        async with http.post(f"{base}/api/clients/{client_id}/secure-messaging") as r:
            r.raise_for_status()
        async with http.post(f"{base}/api/conversations", json={"participant_ids": [client_id]}) as r:
            r.raise_for_status()
            conversations.append((await r.json())["conversation"]["conversation_id"])
    return conversations


async def run_level(concurrency: int, total: int, send) -> tuple[float, list[float]]:
    per_worker = max(1, total // concurrency)
    latencies: list[float] = []

    async def worker(w: int) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            await send(w, i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


async def bench(total: int, live_samples: int, notify_samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pg = pgserver.provide(Path(tmp) / "pg")
        stack = Stack.ephemeral(pg, Path(tmp) / "keys", database_prefix="bench")
        try:
            await asyncio.to_thread(stack.start)
            await seed_demo({s: stack.address(s) for s in ALL_SERVICES}, stack.keys_dir)
            await measure(stack, pg, total, live_samples, notify_samples)
        finally:
            await asyncio.to_thread(stack.stop)
            pg.stop()


async def measure(
    stack: Stack, pg: pgserver.PostgresServer, total: int, live_samples: int, notify_samples: int
) -> None:
    base = stack.web_url
    baseline_url = pg.create_database("bench_baseline")
    async with await psycopg.AsyncConnection.connect(baseline_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE baseline (id bigserial PRIMARY KEY, body text, created_at timestamptz DEFAULT now())")
    dana = await signed_in(base, DANA[0], DANA[2])
    try:
        conversations = await conversations_with_clients(dana, base, 32)
        print(f"{'concurrency':>11} | {'API msg/s':>9} {'p50 ms':>7} {'p99 ms':>7} | "
              f"{'SQL ins/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'API/SQL':>7}")
        for concurrency in (1, 8, 32):
            async def send(w: int, i: int, c=concurrency) -> None:
                async with dana.post(
                    f"{base}/api/conversations/{conversations[w]}/messages",
                    json={"body": f"benchmark message {i}", "idempotency_key": f"bench-{c}-{w}-{i}"},
                ) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"send failed: {r.status} {await r.text()}")

            await run_level(concurrency, min(total, 4 * concurrency), send)  # warm-up
            api_rate, api_lat = await run_level(concurrency, total, send)

            connections = [await psycopg.AsyncConnection.connect(baseline_url, autocommit=True)
                           for _ in range(concurrency)]

            async def insert(w: int, i: int, connections=connections) -> None:
                await connections[w].execute("INSERT INTO baseline (body) VALUES (%s)", (f"baseline {i}",))

            sql_rate, sql_lat = await run_level(concurrency, total, insert)
            for conn in connections:
                await conn.close()
            print(
                f"{concurrency:>11} | {api_rate:>9.1f} {percentile(api_lat, 50) * 1000:>7.1f} "
                f"{percentile(api_lat, 99) * 1000:>7.1f} | {sql_rate:>9.1f} {percentile(sql_lat, 50) * 1000:>7.1f} "
                f"{percentile(sql_lat, 99) * 1000:>7.1f} | {api_rate / sql_rate:>7.2f}"
            )
        await live_latency(dana, base, live_samples)
        await notify_latency(stack, notify_samples)
    finally:
        await dana.close()


async def live_latency(dana, base: str, samples: int) -> None:
    sam = await signed_in(base, SAM[0], SAM[2])
    try:
        async with dana.get(f"{base}/api/directory", params={"q": "Sam"}) as r:
            sam_id = next(p["user_id"] for p in (await r.json())["users"] if p["display_name"] == SAM[1])
        async with dana.post(f"{base}/api/conversations", json={"participant_ids": [sam_id]}) as r:
            conversation_id = (await r.json())["conversation"]["conversation_id"]
        arrivals: asyncio.Queue[float] = asyncio.Queue()

        async def listen() -> None:
            async with sam.get(f"{base}/api/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
                event = ""
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("data:"):
                        event += line[5:].strip()
                    elif line == "" and event:
                        data = json.loads(event)
                        event = ""
                        if data.get("kind") == "message_created" and data.get("conversation_id") == conversation_id:
                            arrivals.put_nowait(time.perf_counter())

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.5)  # let the stream subscribe before the first send
        delays = []
        for i in range(samples):
            sent = time.perf_counter()
            async with dana.post(
                f"{base}/api/conversations/{conversation_id}/messages",
                json={"body": f"live {i}", "idempotency_key": f"live-{i}"},
            ) as r:
                r.raise_for_status()
            delays.append(await asyncio.wait_for(arrivals.get(), 10) - sent)
        listener.cancel()
        print(
            f"send -> recipient's live event: p50 {statistics.median(delays) * 1000:.1f} ms, "
            f"p99 {percentile(delays, 99) * 1000:.1f} ms over {samples} messages"
        )
    finally:
        await sam.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=320, help="messages per concurrency level")
    parser.add_argument("--live-samples", type=int, default=50)
    parser.add_argument("--notify-samples", type=int, default=30, help="messages timed from commit to mailbox")
    args = parser.parse_args()
    asyncio.run(bench(args.messages, args.live_samples, args.notify_samples))


if __name__ == "__main__":
    main()

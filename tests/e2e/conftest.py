"""End-to-end fixtures: the five services as real processes, and Chromium."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from bin.seed import seed_demo
from bin.stack import ALL_SERVICES, Stack
from tests.support import unique

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for candidate in (os.environ.get("CONFIDANT_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.exit("The browser tests need Debian's Chromium: apt-get install -y chromium", returncode=3)


async def start_stack(pg, keys_dir, tmp_path_factory, **extra_env) -> Stack:
    log_dir = tmp_path_factory.mktemp("logs")

    def sink(service: str, line: str) -> None:
        with open(log_dir / f"{service}.log", "a") as f:
            f.write(line + "\n")

    stack = Stack.ephemeral(
        pg, keys_dir, sink=sink, database_prefix=unique("e2e"),
        extra_env={f"CONFIDANT_{k.upper()}": str(v) for k, v in extra_env.items()},
    )
    stack.log_dir = log_dir  # for debugging a failure
    await asyncio.to_thread(stack.start)
    try:
        await seed_demo({s: stack.address(s) for s in ALL_SERVICES}, keys_dir)
    except BaseException:
        await asyncio.to_thread(stack.stop)  # a failed set-up must not leave processes behind
        raise
    return stack


@pytest.fixture(scope="module")
async def stack(pg, keys_dir, tmp_path_factory):
    stack = await start_stack(pg, keys_dir, tmp_path_factory)
    yield stack
    await asyncio.to_thread(stack.stop)


@pytest.fixture(scope="session")
async def browser():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()

"""``python -m services.web``: serve the web edge until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys

from aiohttp import web

from services.common.config import ConfigError, Env
from services.common.logs import setup_logging
from services.web.app import create_app
from services.web.config import WebConfig

log = logging.getLogger("confidant.web")


async def serve(config: WebConfig) -> None:
    host, port = config.host_port
    app = create_app(config)
    # aiohttp's own access log prints raw paths, which can hold magic-link tokens: ours logs route patterns.
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=config.shutdown_grace_seconds)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("serving", extra={"fields": {"listen": config.listen}})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down", extra={"fields": {"grace_seconds": config.shutdown_grace_seconds}})
    finally:
        await runner.cleanup()
    log.info("stopped")


def main() -> None:
    env = Env.from_os()
    setup_logging("web", env.optional("LOG_LEVEL") or "INFO")
    try:
        config = WebConfig.load(env)
    except ConfigError as exc:
        print(f"web: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"web: cannot listen on {config.listen}: the address is already in use.", file=sys.stderr)
        else:
            print(f"web: cannot listen on {config.listen}: {exc.strerror or exc}.", file=sys.stderr)
        log.error("cannot start", extra={"fields": {"listen": config.listen, "errno": exc.errno}})
        sys.exit(1)


if __name__ == "__main__":
    main()

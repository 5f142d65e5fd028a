"""The entry point every service's ``__main__`` uses."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from services.common.config import CommonConfig, ConfigError, Env
from services.common.logs import setup_logging
from services.common.server import GrpcService


def run_service(
    name: str,
    load_config: Callable[[Env], object],
    create_service: Callable[[object], Awaitable[GrpcService]],
) -> None:
    """Load configuration (failing fast), build the service and serve until SIGTERM."""
    env = Env.from_os()
    setup_logging(name, env.optional("LOG_LEVEL") or "INFO")
    try:
        config = load_config(env)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    common: CommonConfig = config.common  # type: ignore[attr-defined]

    async def main() -> None:
        service = await create_service(config)
        service.grace_seconds = common.shutdown_grace_seconds
        await service.run_until_signal(common.listen)

    try:
        asyncio.run(main())
    except OSError as exc:
        logging.getLogger("confidant").error("cannot start", extra={"fields": {"reason": str(exc)}})
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)

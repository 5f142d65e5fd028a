"""The entry point every service's ``__main__`` uses.

``python -m services.<name>`` serves until SIGTERM; ``python -m services.<name> migrate``
applies the service's migrations and exits (a Kubernetes init container or Job).
Both first wait for the database (CONFIDANT_DATABASE_WAIT_SECONDS) and fail with one
sentence naming its host when it does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from services.common.clients import use_tls_by_default
from services.common.config import CommonConfig, ConfigError, Env
from services.common.db import DatabaseUnavailable, apply_migrations, wait_for_database
from services.common.logs import setup_logging
from services.common.server import GrpcService

log = logging.getLogger("confidant")


def run_service(
    name: str,
    load_config: Callable[[Env], object],
    create_service: Callable[[object], Awaitable[GrpcService]],
    migrations: Path | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Load configuration (failing fast), then serve until SIGTERM, or with ``migrate`` only migrate."""
    args = list(sys.argv[1:] if argv is None else argv)
    migrate = args == ["migrate"] and migrations is not None
    if args and not migrate:
        usage = f"python -m services.{name}" + (" [migrate]" if migrations is not None else "")
        print(f"{name}: unknown arguments {' '.join(args)!r}; usage: {usage}", file=sys.stderr)
        sys.exit(2)
    env = Env.from_os()
    setup_logging(name, env.optional("LOG_LEVEL") or "INFO")
    try:
        config = load_config(env)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    common: CommonConfig = config.common  # type: ignore[attr-defined]
    # Before create_service opens its channels: they all speak TLS when it is configured.
    use_tls_by_default(common.grpc_tls)

    async def main() -> None:
        await wait_for_database(common.database_url, common.database_wait_seconds)
        if migrate:
            assert migrations is not None
            applied = await apply_migrations(common.database_url, migrations)
            log.info("migrated", extra={"fields": {"applied": applied}})
            return
        service = await create_service(config)
        service.grace_seconds = common.shutdown_grace_seconds
        service.tls = common.grpc_tls
        service.health_listen = common.health_listen
        service.metrics_listen = common.metrics_listen
        await service.run_until_signal(common.listen)

    try:
        asyncio.run(main())
    except DatabaseUnavailable as exc:
        log.error("cannot start", extra={"fields": {"reason": "database unavailable"}})
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        log.error("cannot start", extra={"fields": {"reason": str(exc)}})
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)

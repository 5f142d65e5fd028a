"""A small gRPC service for the graceful-shutdown test, run as a real process:

    python -m tests.runtime.slow_service <listen> <health listen> <grace seconds>

``/test.Slow/Sleep`` (bytes in, bytes out; open, but with a deadline like every call)
sleeps for the number of seconds it is sent, logs "sleeping" first, and answers "done".
It runs on the services' own ``GrpcService`` and its SIGTERM handling.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc

from services.common.logs import setup_logging
from services.common.server import GrpcService
from services.common.tokens import TokenVerifier

SLEEP = "/test.Slow/Sleep"
log = logging.getLogger("confidant.slow")


async def sleep(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    seconds = float(request.decode())
    log.info("sleeping", extra={"fields": {"seconds": seconds}})
    await asyncio.sleep(seconds)
    return b"done"


def add(servicer: object, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Slow", {"Sleep": grpc.unary_unary_rpc_method_handler(sleep)}),)
    )


async def main(listen: str, health_listen: str, grace: float) -> None:
    service = GrpcService(name="slow", verifier=TokenVerifier({}), servicers=[(add, None, "test.Slow")],
                          open_methods=[SLEEP], grace_seconds=grace, health_listen=health_listen)
    await service.run_until_signal(listen)


if __name__ == "__main__":
    setup_logging("slow")
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))

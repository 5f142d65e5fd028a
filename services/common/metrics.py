"""Prometheus metrics for any service: a registry of its own, served over HTTP when asked.

Each service object owns a ``Metrics`` (never prometheus-client's global registry:
tests build many services in one process). A service declares its metrics
through it; when ``CONFIDANT_<SERVICE>_METRICS_LISTEN`` is set (for example
``127.0.0.1:9464``, read by CommonConfig), ``serve(listen)`` answers ``GET /metrics``
(GrpcService runs it, or a service that keeps metrics of its own; the web edge for
itself). Unset (the default) serves nothing.

Labels must never carry PHI (addresses, numbers, names) and should be bounded
(a channel, a transport, an outcome): an id per label value is a new series.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds: from a few milliseconds (a local relay) to a minute (a provider having a bad day).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """One service's metrics; every name gets the ``confidant_<service>_`` prefix."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._prefix = f"confidant_{service}_"

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self._prefix + name, documentation, labelnames=labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self._prefix + name, documentation, labelnames=labels, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(self._prefix + name, documentation, labelnames=labels, buckets=buckets,
                         registry=self.registry)

    def exposition(self) -> bytes:
        """The text format a Prometheus scrape reads."""
        return generate_latest(self.registry)

    async def serve(self, listen: str) -> None:
        """Answer ``GET /metrics`` on ``listen`` until cancelled (a service's background task)."""

        async def scrape(_: web.Request) -> web.Response:
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = listen.rpartition(":")
        try:
            await web.TCPSite(runner, host.strip("[]"), int(port)).start()
            await asyncio.Event().wait()  # until the service stops and cancels us
        finally:
            await runner.cleanup()

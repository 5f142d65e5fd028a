"""Notify's metrics: the queue, the attempts and how long providers take (no PHI in any label)."""

from __future__ import annotations

import asyncio

from services.common.metrics import Metrics
from services.notify.storage import NotifyStorage


class NotifyMetrics:
    def __init__(self) -> None:
        self.metrics = Metrics("notify")
        self.queue_depth = self.metrics.gauge("queue_depth", "Pending notification jobs, due now or later.")
        self.oldest_due_age = self.metrics.gauge(
            "oldest_due_job_age_seconds", "How long the oldest job that is due has been waiting (0: none due).")
        self.attempts = self.metrics.counter(
            "attempts", "Delivery attempts by channel (email, sms) and outcome "
            "(sent, retry, deferred, failed, suppressed, skipped, cancelled).", ["channel", "outcome"])
        self.send_seconds = self.metrics.histogram(
            "send_seconds", "How long each provider call took, by transport (ses, smtp, sns, mailbox).", ["transport"])

    async def measure_queue(self, storage: NotifyStorage) -> None:
        pending, age = await storage.queue_stats()
        self.queue_depth.set(pending)
        self.oldest_due_age.set(age)

    async def measure_queue_every(self, storage: NotifyStorage, seconds: float) -> None:
        """A background loop: the queue gauges are measured, not counted, so replicas agree."""
        while True:
            await self.measure_queue(storage)
            await asyncio.sleep(seconds)

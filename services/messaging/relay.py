"""The outbox relay: hands new-message events to notify, at least once.

A send writes its outbox row in the message's own transaction, so no message
is ever without its notification event and no event exists for a message that
was rolled back. The relay claims due rows (``FOR UPDATE SKIP LOCKED``, so
replicas share the work), calls notify.EnqueueMessageNotifications and marks a
row relayed in the claiming transaction once notify accepted it. A failed call
leaves the row for a later try, waiting longer each time; notify deduplicates
on the event id, so a retry after an unrecorded success notifies no one twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import grpc
from confidant.notify.v1 import notify_service_pb2 as notify_pb
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc

from services.common.convert import timestamp
from services.messaging.storage import OutboxItem, Storage

log = logging.getLogger("confidant.messaging.relay")

PERSISTENT_FAILURE_ATTEMPTS = 5


def notification_request(item: OutboxItem) -> notify_pb.EnqueueMessageNotificationsRequest:
    payload = item.payload
    return notify_pb.EnqueueMessageNotificationsRequest(
        event_id=payload["event_id"],
        practice_id=payload["practice_id"],
        conversation_id=payload["conversation_id"],
        message_id=payload["message_id"],
        # Rows written before the payload carried it have none.
        seq=payload.get("seq", 0),
        sender_id=payload["sender_id"],
        recipients=[
            notify_pb.Recipient(user_id=r["user_id"], is_client=r["is_client"]) for r in payload["recipients"]
        ],
        created_at=timestamp(datetime.fromisoformat(payload["created_at"])),
    )


class OutboxRelay:
    def __init__(
        self,
        storage: Storage,
        notify_channel: grpc.aio.Channel,
        *,
        batch_size: int,
        poll_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        self._storage = storage
        self._notify = notify_grpc.NotifyServiceStub(notify_channel)
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._wake = asyncio.Event()

    def wake(self, _payload: str | None = None) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled: on each wake-up (NOTIFY) or poll tick."""
        while True:
            self._wake.clear()
            relayed, stopped_by_failure = await self.relay_once()
            if relayed == self._batch_size and not stopped_by_failure:
                continue  # a full batch: there may be more right away
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that arrives as the awaited event fires, and then stop() never returns.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()

    def _backoff(self, attempts: int) -> float:
        return min(self._poll_seconds * 2 ** min(attempts, 16), self._max_backoff_seconds)

    async def relay_once(self) -> tuple[int, bool]:
        """Relay one batch; returns (rows relayed, whether a failed call stopped the batch)."""
        relayed = 0
        async with self._storage.outbox_batch(self._batch_size) as batch:
            for item in batch.items:
                try:
                    await self._notify.EnqueueMessageNotifications(notification_request(item))
                except grpc.aio.AioRpcError as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError() from None  # we are stopping: not notify's failure
                    delay = self._backoff(item.attempts)
                    # A few failures are a restart or a blip; many need a person to look.
                    level = (
                        logging.ERROR if item.attempts + 1 >= PERSISTENT_FAILURE_ATTEMPTS else logging.WARNING
                    )
                    log.log(
                        level,
                        "notify refused or unreachable; will retry",
                        extra={
                            "fields": {
                                "outbox_id": item.outbox_id,
                                "code": exc.code().name,
                                "attempts": item.attempts + 1,
                                "retry_in_s": delay,
                            }
                        },
                    )
                    await batch.postpone(item.outbox_id, delay)
                    # The rest of the batch stays due: the next round tries it after a pause.
                    return relayed, True
                await batch.mark_relayed(item.outbox_id)
                relayed += 1
        if relayed:
            log.info("outbox relayed", extra={"fields": {"count": relayed}})
        return relayed, False

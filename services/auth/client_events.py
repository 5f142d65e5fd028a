"""The relay of the client-created outbox from auth to messaging.

Every new client writes a client_events row in the transaction that creates
them, so messaging always learns of a committed client (and never of one that
was rolled back): in a practice that enables new clients automatically it turns
secure messaging on and invites them to the Client Portal. The relay is woken
right after the commit and also polls, calling messaging's HandleClientCreated
with auth's service token; messaging gives the same client any number of times
one effect, so a retried hand-over is harmless. While messaging is down (or does
not know the RPC yet) the row waits and is retried every ``retry_seconds``.
"""

from __future__ import annotations

import logging

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as messaging_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc

from services.auth.storage import AuthStorage
from services.common.relay import PolledRelay

log = logging.getLogger("confidant.auth.client_events")

BATCH_SIZE = 20
# Messaging answered, but will never accept this event: retrying cannot help.
PERMANENT = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class ClientEventRelay(PolledRelay):
    batch_size = BATCH_SIZE

    def __init__(
        self, storage: AuthStorage, messaging: messaging_grpc.MessagingServiceStub, retry_seconds: int
    ) -> None:
        super().__init__(retry_seconds)
        self._storage = storage
        self._messaging = messaging
        self._retry_seconds = retry_seconds

    async def relay_once(self) -> int:
        """Hand due client events to messaging; return how many were handed over or settled.

        A transient failure ends the batch: messaging is unreachable or not ready, so
        the rest of the claimed rows wait for their lease like the failed one.
        """
        events = await self._storage.claim_client_events(BATCH_SIZE, self._retry_seconds)
        for settled, event in enumerate(events):
            fields = {"event_id": event.event_id, "practice_id": event.practice_id, "client_id": event.client_id}
            try:
                reply = await self._messaging.HandleClientCreated(
                    messaging_pb.HandleClientCreatedRequest(practice_id=event.practice_id, client_id=event.client_id)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in PERMANENT:
                    # UNAVAILABLE, UNIMPLEMENTED (an older messaging), DEADLINE_EXCEEDED, ...: later.
                    log.warning(
                        "client event not handed to messaging; retrying later",
                        extra={"fields": {**fields, "code": exc.code().name}},
                    )
                    return settled
                log.warning(
                    "client event refused by messaging; dropped",
                    extra={"fields": {**fields, "code": exc.code().name}},
                )
            else:
                log.info("client event handed to messaging", extra={"fields": {**fields, "enabled": reply.enabled}})
            await self._storage.client_event_done(event.event_id)
        return len(events)

"""The relay of account notices (the lock email) from auth's outbox to notify.

A lock writes its notice row in the same transaction as the lock, so the email
is never lost and never blocks the lock: the relay is woken right after the
commit and also polls, handing each row to notify with a dedupe key derived
from the row id (so a retried hand-over emails once). While notify is down the
row waits and is retried every ``notice_retry_seconds``.
"""

from __future__ import annotations

import logging

import grpc
from confidant.notify.v1 import notify_service_pb2 as notify_pb
from confidant.notify.v1 import notify_service_pb2_grpc as notify_grpc

from services.auth.storage import AccountNotice, AuthStorage
from services.common.relay import PolledRelay

log = logging.getLogger("confidant.auth.notices")

BATCH_SIZE = 20
_KINDS = {
    "locked": notify_pb.ACCOUNT_NOTICE_KIND_LOCKED,
    "invitation": notify_pb.ACCOUNT_NOTICE_KIND_INVITATION,
    "password_reset": notify_pb.ACCOUNT_NOTICE_KIND_PASSWORD_RESET,
}


def dedupe_key(notice: AccountNotice) -> str:
    return f"auth-notice:{notice.notice_id}"


class NoticeRelay(PolledRelay):
    batch_size = BATCH_SIZE

    def __init__(self, storage: AuthStorage, notify: notify_grpc.NotifyServiceStub, retry_seconds: int) -> None:
        super().__init__(retry_seconds)
        self._storage = storage
        self._notify = notify
        self._retry_seconds = retry_seconds

    async def relay_once(self) -> int:
        """Hand every due notice to notify; return how many were due."""
        notices = await self._storage.claim_account_notices(BATCH_SIZE, self._retry_seconds)
        for notice in notices:
            fields = {"notice_id": notice.notice_id, "user_id": notice.user_id, "kind": notice.kind}
            try:
                await self._notify.SendAccountNotice(
                    notify_pb.SendAccountNoticeRequest(
                        user_id=notice.user_id,
                        kind=_KINDS[notice.kind],
                        dedupe_key=dedupe_key(notice),
                        lock_minutes=notice.lock_minutes,
                        link_token=notice.link_token,
                    )
                )
            except grpc.aio.AioRpcError as exc:
                # The lock stands; the notice stays queued and is retried after its lease.
                log.warning("account notice not handed to notify", extra={"fields": {**fields, "code": exc.code().name}})
                continue
            await self._storage.account_notice_sent(notice.notice_id)
            log.info("account notice handed to notify", extra={"fields": fields})
        return len(notices)

"""NotifyService over gRPC: request -> handlers -> response."""

from __future__ import annotations

from datetime import UTC

import grpc
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.convert import timestamp
from services.notify.handlers import NotifyHandlers, Recipient
from services.notify.storage import MailboxRow

_CHANNELS = {"email": pb.CHANNEL_EMAIL, "sms": pb.CHANNEL_SMS}
_NOTICES = {
    pb.ACCOUNT_NOTICE_KIND_LOCKED: "locked",
    pb.ACCOUNT_NOTICE_KIND_INVITATION: "invitation",
    pb.ACCOUNT_NOTICE_KIND_PASSWORD_RESET: "password_reset",
}


def _item(row: MailboxRow) -> pb.MailboxItem:
    return pb.MailboxItem(
        item_id=row.item_id,
        channel=_CHANNELS.get(row.channel, pb.CHANNEL_UNSPECIFIED),
        to_address=row.to_address,
        subject=row.subject,
        text_body=row.text_body,
        html_body=row.html_body,
        created_at=timestamp(row.created_at),
    )


class NotifyServicer(pb_grpc.NotifyServiceServicer):
    def __init__(self, handlers: NotifyHandlers) -> None:
        self._handlers = handlers

    async def EnqueueMessageNotifications(
        self, request: pb.EnqueueMessageNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnqueueMessageNotificationsResponse:
        created = await self._handlers.enqueue_message_notifications(
            event_id=request.event_id,
            practice_id=request.practice_id,
            conversation_id=request.conversation_id,
            recipients=[Recipient(r.user_id, r.is_client) for r in request.recipients],
            sender_id=request.sender_id,
            seq=request.seq,
            created_at=request.created_at.ToDatetime(tzinfo=UTC) if request.HasField("created_at") else None,
        )
        return pb.EnqueueMessageNotificationsResponse(jobs_created=created)

    async def SendSmsReply(
        self, request: pb.SendSmsReplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendSmsReplyResponse:
        queued = await self._handlers.send_sms_reply(request.to_number, request.body, request.in_reply_to)
        return pb.SendSmsReplyResponse(queued=queued)

    async def ListMailbox(
        self, request: pb.ListMailboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMailboxResponse:
        rows = await self._handlers.list_mailbox(request.page_size, request.to_address)
        return pb.ListMailboxResponse(items=[_item(row) for row in rows])

    async def SendAccountNotice(
        self, request: pb.SendAccountNoticeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendAccountNoticeResponse:
        queued = await self._handlers.send_account_notice(
            request.user_id, _NOTICES.get(request.kind, ""), request.dedupe_key, request.lock_minutes,
            link_token=request.link_token,
        )
        return pb.SendAccountNoticeResponse(queued=queued)

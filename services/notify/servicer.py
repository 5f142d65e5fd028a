"""NotifyService over gRPC: request -> handlers -> response."""

from __future__ import annotations

from datetime import UTC

import grpc
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.convert import timestamp
from services.notify.handlers import Delivery, NotifyHandlers, Recipient
from services.notify.storage import MailboxRow

_CHANNELS = {"email": pb.CHANNEL_EMAIL, "sms": pb.CHANNEL_SMS}
_NOTICES = {
    pb.ACCOUNT_NOTICE_KIND_LOCKED: "locked",
    pb.ACCOUNT_NOTICE_KIND_INVITATION: "invitation",
    pb.ACCOUNT_NOTICE_KIND_PASSWORD_RESET: "password_reset",
}


_STATES = {
    "queued": pb.DELIVERY_STATE_QUEUED,
    "sent": pb.DELIVERY_STATE_SENT,
    "delivered": pb.DELIVERY_STATE_DELIVERED,
    "bounced": pb.DELIVERY_STATE_BOUNCED,
    "suppressed": pb.DELIVERY_STATE_SUPPRESSED,
    "failed": pb.DELIVERY_STATE_FAILED,
    "not_needed": pb.DELIVERY_STATE_NOT_NEEDED,
}
_FEEDBACK = {
    pb.FEEDBACK_KIND_BOUNCE: "bounce",
    pb.FEEDBACK_KIND_COMPLAINT: "complaint",
    pb.FEEDBACK_KIND_DELIVERY: "delivery",
}


def _delivery(delivery: Delivery) -> pb.Delivery:
    row = delivery.row
    return pb.Delivery(
        message_id=row.message_id,
        recipient_id=row.recipient_id,
        channel=_CHANNELS.get(row.channel, pb.CHANNEL_UNSPECIFIED),
        state=_STATES.get(delivery.state, pb.DELIVERY_STATE_UNSPECIFIED),
        detail=delivery.detail,
        attempts=row.attempts,
        updated_at=timestamp(row.updated_at),
    )


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
            message_id=request.message_id,
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

    async def ListDeliveryStatus(
        self, request: pb.ListDeliveryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeliveryStatusResponse:
        deliveries = await self._handlers.list_delivery_status(request.conversation_id, list(request.message_ids))
        return pb.ListDeliveryStatusResponse(deliveries=[_delivery(d) for d in deliveries])

    async def RecordDeliveryFeedback(
        self, request: pb.RecordDeliveryFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordDeliveryFeedbackResponse:
        suppressed = await self._handlers.record_delivery_feedback(
            request.feedback_id, _FEEDBACK.get(request.kind, ""), request.provider_message_id,
            list(request.addresses), request.permanent,
        )
        return pb.RecordDeliveryFeedbackResponse(suppressed=suppressed)

    async def RequeueFailedJobs(
        self, request: pb.RequeueFailedJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequeueFailedJobsResponse:
        return pb.RequeueFailedJobsResponse(requeued=await self._handlers.requeue_failed_jobs(list(request.job_ids)))

    async def GetClientNotificationSettings(
        self, request: pb.GetClientNotificationSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClientNotificationSettingsResponse:
        client_id, discreet = await self._handlers.get_client_settings(request.client_id)
        return pb.GetClientNotificationSettingsResponse(
            settings=pb.ClientNotificationSettings(client_id=client_id, discreet=discreet))

    async def SetClientNotificationSettings(
        self, request: pb.SetClientNotificationSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetClientNotificationSettingsResponse:
        client_id, discreet = await self._handlers.set_client_settings(
            request.settings.client_id, request.settings.discreet)
        return pb.SetClientNotificationSettingsResponse(
            settings=pb.ClientNotificationSettings(client_id=client_id, discreet=discreet))

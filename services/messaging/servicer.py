"""The gRPC surface of messaging: request -> handlers -> response proto, nothing more."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from confidant.messaging.v1 import messaging_service_pb2 as pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from services.common.convert import timestamp as _timestamp
from services.messaging.handlers import Handlers, Message
from services.messaging.sending import CannotSend
from services.messaging.storage import (
    KIND_CONVERSATION_ARCHIVED,
    KIND_CONVERSATION_CREATED,
    KIND_MESSAGE_CREATED,
    KIND_READ_UPDATED,
    Conversation,
    Event,
    PracticeSettings,
)

log = logging.getLogger("confidant.messaging")

_EVENT_KINDS = {
    KIND_MESSAGE_CREATED: pb.EVENT_KIND_MESSAGE_CREATED,
    KIND_READ_UPDATED: pb.EVENT_KIND_READ_UPDATED,
    KIND_CONVERSATION_CREATED: pb.EVENT_KIND_CONVERSATION_CREATED,
    KIND_CONVERSATION_ARCHIVED: pb.EVENT_KIND_CONVERSATION_ARCHIVED,
}


_CANNOT_SEND = {
    None: pb.CANNOT_SEND_REASON_UNSPECIFIED,
    CannotSend.PRACTICE_DISABLED: pb.CANNOT_SEND_REASON_PRACTICE_DISABLED,
    CannotSend.CLIENT_DISABLED: pb.CANNOT_SEND_REASON_CLIENT_DISABLED,
    CannotSend.TEAM_DISABLED: pb.CANNOT_SEND_REASON_TEAM_DISABLED,
}


def _settings_pb(settings: PracticeSettings) -> pb.PracticeSettings:
    return pb.PracticeSettings(
        secure_messaging_enabled=settings.secure_messaging_enabled,
        auto_enable_new_clients=settings.auto_enable_new_clients,
        team_messaging_enabled=settings.team_messaging_enabled,
    )


def _conversation_pb(conversation: Conversation) -> pb.Conversation:
    return pb.Conversation(
        conversation_id=conversation.conversation_id,
        practice_id=conversation.practice_id,
        participants=[
            pb.Participant(user_id=p.user_id, is_staff=p.is_staff, read_seq=p.read_seq)
            for p in conversation.participants
        ],
        last_activity_at=_timestamp(conversation.last_activity_at),
        last_seq=conversation.last_seq,
        unread_count=conversation.unread_count,
        client_id=conversation.client_id or "",
        preview=conversation.preview,
        last_sender_id=conversation.last_sender_id,
        archived=conversation.archived,
        can_send=conversation.can_send,
        cannot_send_reason=_CANNOT_SEND[conversation.cannot_send_reason],
    )


def _message_pb(message: Message) -> pb.Message:
    return pb.Message(
        message_id=message.message_id,
        conversation_id=message.conversation_id,
        seq=message.seq,
        sender_id=message.sender_id,
        body=message.body,
        created_at=_timestamp(message.created_at),
    )


def _event_pb(event: Event) -> pb.StreamEventsResponse:
    return pb.StreamEventsResponse(
        event_id=event.event_id,
        kind=_EVENT_KINDS.get(event.kind, pb.EVENT_KIND_UNSPECIFIED),
        conversation_id=event.conversation_id,
        seq=event.seq,
        actor_id=event.actor_id,
        created_at=_timestamp(event.created_at),
    )


class MessagingServicer(pb_grpc.MessagingServiceServicer):
    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    async def GetPracticeSettings(
        self, request: pb.GetPracticeSettingsRequest, context
    ) -> pb.GetPracticeSettingsResponse:
        settings = await self._handlers.get_practice_settings()
        return pb.GetPracticeSettingsResponse(settings=_settings_pb(settings))

    async def UpdatePracticeSettings(
        self, request: pb.UpdatePracticeSettingsRequest, context
    ) -> pb.UpdatePracticeSettingsResponse:
        wanted = (
            PracticeSettings(
                secure_messaging_enabled=request.settings.secure_messaging_enabled,
                auto_enable_new_clients=request.settings.auto_enable_new_clients,
                team_messaging_enabled=request.settings.team_messaging_enabled,
            )
            if request.HasField("settings")
            else None
        )
        settings = await self._handlers.update_practice_settings(wanted, list(request.update_mask.paths))
        return pb.UpdatePracticeSettingsResponse(settings=_settings_pb(settings))

    async def RotateDataKey(self, request: pb.RotateDataKeyRequest, context) -> pb.RotateDataKeyResponse:
        return pb.RotateDataKeyResponse(key_version=await self._handlers.rotate_data_key())

    async def GetClientMessaging(
        self, request: pb.GetClientMessagingRequest, context
    ) -> pb.GetClientMessagingResponse:
        enabled, practice_enabled = await self._handlers.get_client_messaging(request.client_id)
        return pb.GetClientMessagingResponse(enabled=enabled, practice_enabled=practice_enabled)

    async def EnableClientMessaging(
        self, request: pb.EnableClientMessagingRequest, context
    ) -> pb.EnableClientMessagingResponse:
        return pb.EnableClientMessagingResponse(
            enabled=await self._handlers.enable_client_messaging(request.client_id)
        )

    async def DisableClientMessaging(
        self, request: pb.DisableClientMessagingRequest, context
    ) -> pb.DisableClientMessagingResponse:
        return pb.DisableClientMessagingResponse(
            enabled=await self._handlers.disable_client_messaging(request.client_id)
        )

    async def HandleClientCreated(
        self, request: pb.HandleClientCreatedRequest, context
    ) -> pb.HandleClientCreatedResponse:
        return pb.HandleClientCreatedResponse(
            enabled=await self._handlers.handle_client_created(request.practice_id, request.client_id)
        )

    async def OpenConversation(
        self, request: pb.OpenConversationRequest, context
    ) -> pb.OpenConversationResponse:
        conversation, created = await self._handlers.open_conversation(list(request.participant_ids))
        return pb.OpenConversationResponse(conversation=_conversation_pb(conversation), created=created)

    async def FindConversation(
        self, request: pb.FindConversationRequest, context
    ) -> pb.FindConversationResponse:
        found = await self._handlers.find_conversation(list(request.participant_ids))
        reply = pb.FindConversationResponse(
            found=found.conversation is not None,
            can_send=found.can_send,
            cannot_send_reason=_CANNOT_SEND[found.cannot_send_reason],
        )
        if found.conversation is not None:
            reply.conversation.CopyFrom(_conversation_pb(found.conversation))
        return reply

    async def GetConversation(
        self, request: pb.GetConversationRequest, context
    ) -> pb.GetConversationResponse:
        conversation = await self._handlers.get_conversation(request.conversation_id)
        return pb.GetConversationResponse(conversation=_conversation_pb(conversation))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context
    ) -> pb.ListConversationsResponse:
        conversations, next_token = await self._handlers.list_conversations(
            request.page_size, request.page_token, request.archived
        )
        return pb.ListConversationsResponse(
            conversations=[_conversation_pb(c) for c in conversations], next_page_token=next_token
        )

    async def ListMessages(self, request: pb.ListMessagesRequest, context) -> pb.ListMessagesResponse:
        messages = await self._handlers.list_messages(
            request.conversation_id, request.after_seq, request.page_size
        )
        return pb.ListMessagesResponse(messages=[_message_pb(m) for m in messages])

    async def SendMessage(self, request: pb.SendMessageRequest, context) -> pb.SendMessageResponse:
        sent = await self._handlers.send_message(
            request.conversation_id, request.body, request.idempotency_key, list(request.participant_ids)
        )
        return pb.SendMessageResponse(
            message=_message_pb(sent.message), created=sent.created, conversation_created=sent.conversation_created
        )

    async def MarkRead(self, request: pb.MarkReadRequest, context) -> pb.MarkReadResponse:
        return pb.MarkReadResponse(
            read_seq=await self._handlers.mark_read(request.conversation_id, request.read_seq)
        )

    async def GetUnreadSummary(
        self, request: pb.GetUnreadSummaryRequest, context
    ) -> pb.GetUnreadSummaryResponse:
        messages, conversations = await self._handlers.unread_summary()
        return pb.GetUnreadSummaryResponse(unread_messages=messages, unread_conversations=conversations)

    async def ListRecentContacts(
        self, request: pb.ListRecentContactsRequest, context
    ) -> pb.ListRecentContactsResponse:
        return pb.ListRecentContactsResponse(user_ids=await self._handlers.recent_contacts(request.page_size))

    async def ArchiveConversation(
        self, request: pb.ArchiveConversationRequest, context
    ) -> pb.ArchiveConversationResponse:
        return pb.ArchiveConversationResponse(
            archived=await self._handlers.archive_conversation(request.conversation_id, request.archived)
        )

    async def GetReadState(self, request: pb.GetReadStateRequest, context) -> pb.GetReadStateResponse:
        participant, read_seq, last_seq = await self._handlers.read_state(
            request.conversation_id, request.user_id
        )
        return pb.GetReadStateResponse(participant=participant, read_seq=read_seq, last_seq=last_seq)

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        # Closed here when the call ends, not later by the garbage collector in another task.
        async with contextlib.aclosing(self._handlers.stream_events(request.after_event_id)) as events:
            async for event in events:
                yield _event_pb(event)

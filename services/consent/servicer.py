"""ConsentService over gRPC: request -> handlers -> response."""

from __future__ import annotations

import grpc
from confidant.consent.v1 import consent_service_pb2 as pb
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from services.common.convert import timestamp
from services.consent.handlers import ClientPhone, ConsentHandlers, InboundAction
from services.consent.ledger import State
from services.consent.storage import LedgerRow

_STATES = {
    State.NO_NUMBER: pb.CONSENT_STATE_NO_NUMBER,
    State.NOT_GIVEN: pb.CONSENT_STATE_NOT_GIVEN,
    State.OPTED_IN: pb.CONSENT_STATE_OPTED_IN,
    State.OPTED_OUT: pb.CONSENT_STATE_OPTED_OUT,
    State.CARRIER_BLOCKED: pb.CONSENT_STATE_CARRIER_BLOCKED,
}

_ACTIONS = {
    InboundAction.OPTED_OUT: pb.INBOUND_ACTION_OPTED_OUT,
    InboundAction.OPTED_IN: pb.INBOUND_ACTION_OPTED_IN,
    InboundAction.HELP: pb.INBOUND_ACTION_HELP,
    InboundAction.NONE: pb.INBOUND_ACTION_NONE,
    InboundAction.AUTO_REPLY: pb.INBOUND_ACTION_AUTO_REPLY,
}


def _phone(view: ClientPhone) -> pb.ClientPhone:
    phone = pb.ClientPhone(
        client_id=view.client_id, phone_number=view.phone or "", text_ok=view.text_ok, state=_STATES[view.state]
    )
    if view.since is not None:
        phone.state_since.CopyFrom(timestamp(view.since))
    return phone


def _entry(row: LedgerRow) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=row.entry_id,
        client_id=row.client_id,
        event=row.event,
        actor=row.actor,
        source=row.source,
        phone_number=row.phone_e164 or "",
        provider_message_id=row.provider_message_id or "",
        created_at=timestamp(row.created_at),
        provider=row.provider or "",
    )


class ConsentServicer(pb_grpc.ConsentServiceServicer):
    def __init__(self, handlers: ConsentHandlers) -> None:
        self._handlers = handlers

    async def GetClientPhone(
        self, request: pb.GetClientPhoneRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClientPhoneResponse:
        view = await self._handlers.get_client_phone(request.client_id)
        return pb.GetClientPhoneResponse(phone=_phone(view))

    async def SetClientPhone(
        self, request: pb.SetClientPhoneRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetClientPhoneResponse:
        view = await self._handlers.set_client_phone(request.client_id, request.phone_number, request.text_ok)
        return pb.SetClientPhoneResponse(phone=_phone(view))

    async def CheckSmsAllowed(
        self, request: pb.CheckSmsAllowedRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckSmsAllowedResponse:
        permission = await self._handlers.check_sms_allowed(request.client_id)
        return pb.CheckSmsAllowedResponse(
            allowed=permission.allowed, phone_number=permission.phone or "", state=_STATES[permission.state]
        )

    async def ReceiveInboundSms(
        self, request: pb.ReceiveInboundSmsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveInboundSmsResponse:
        result = await self._handlers.receive_inbound_sms(
            request.from_number, request.body, request.provider_message_id, request.provider, request.to_number
        )
        return pb.ReceiveInboundSmsResponse(
            action=_ACTIONS[result.action], reply_text=result.reply_text, reply_to=result.reply_to
        )

    async def ListLedger(self, request: pb.ListLedgerRequest, context: grpc.aio.ServicerContext) -> pb.ListLedgerResponse:
        rows = await self._handlers.list_ledger(request.client_id)
        return pb.ListLedgerResponse(entries=[_entry(row) for row in rows])

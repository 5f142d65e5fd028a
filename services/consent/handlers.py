"""Consent's domain logic and authorization.

The consent state is never stored: it is the fold of the client's ledger
(services/consent/ledger.py). Each change takes a per-client advisory lock, folds
the ledger, appends exactly the entries that record the change and keeps the
``phone_numbers`` row in step, all in one transaction with its audit row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.identity import Principal, caller, require_scope, require_service, require_staff
from services.consent import keywords
from services.consent.keywords import Keyword
from services.consent.ledger import Consent, Entry, Event, State, changes_for_save, fold
from services.consent.phones import normalise
from services.consent.storage import ConsentStorage, LedgerRow, NumberHolder

log = logging.getLogger("confidant.consent")

SOURCE_CLIENT_INFO = "client_info"
SOURCE_SMS = "sms"
# A practice system (service account) through the gRPC API.
SOURCE_API = "api"
SYSTEM_ACTOR = "service:consent"
NO_SUCH_CLIENT = "There is no such client in your practice."
# What a practice's service account may do, by scope.
SCOPE_READ = "consent.read"
SCOPE_WRITE = "consent.write"


@dataclass(frozen=True)
class ClientPhone:
    client_id: str
    phone: str | None
    text_ok: bool
    state: State


@dataclass(frozen=True)
class SmsPermission:
    allowed: bool
    phone: str | None
    state: State


class InboundAction:
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    HELP = "help"
    NONE = "none"


@dataclass(frozen=True)
class InboundResult:
    action: str
    reply_text: str
    reply_to: str


def _view(client_id: str, consent: Consent) -> ClientPhone:
    return ClientPhone(client_id, consent.phone, consent.text_ok, consent.state)


def _staff_or_account(scope: str) -> Principal:
    """The practice's staff, or one of its service accounts holding ``scope``."""
    who = caller()
    return require_scope(scope) if who.is_service_account else require_staff()


class ConsentHandlers:
    def __init__(self, storage: ConsentStorage, auth: auth_grpc.AuthServiceStub, default_region: str = "US") -> None:
        self._storage = storage
        self._auth = auth
        self._region = default_region

    # -- staff (the Client Info tab) and practice systems (service accounts) ---------

    async def get_client_phone(self, client_id: str) -> ClientPhone:
        staff = _staff_or_account(SCOPE_READ)
        await self._check_client(staff, client_id)
        async with self._storage.transaction() as conn:
            consent = fold(row.as_entry() for row in await self._storage.ledger_for_client(conn, client_id))
            await self._storage.audit(
                conn, actor=staff.subject, action="consent.phone_read", outcome="ok",
                target=client_id, practice_id=staff.practice_id,
            )
        return _view(client_id, consent)

    async def set_client_phone(self, client_id: str, phone_number: str, text_ok: bool) -> ClientPhone:
        """Save the Client Info tab (or a practice system's update): an empty number deletes
        it (and "Text message ok")."""
        staff = _staff_or_account(SCOPE_WRITE)
        phone = normalise(phone_number, self._region) if phone_number.strip() else None
        if phone is None:
            text_ok = False
        await self._check_client(staff, client_id)
        async with self._storage.transaction() as conn:
            await self._storage.lock_client(conn, client_id)
            current = fold(row.as_entry() for row in await self._storage.ledger_for_client(conn, client_id))
            entries = changes_for_save(current, phone, text_ok)
            source = SOURCE_API if staff.is_service_account else SOURCE_CLIENT_INFO
            if not entries:
                return _view(client_id, current)
            after = fold(entries, start=current)
            await self._storage.append_ledger(
                conn, client_id=client_id, practice_id=staff.practice_id, entries=entries,
                actor=staff.subject, source=source,
            )
            await self._storage.save_current_number(conn, client_id, staff.practice_id, after.phone, after.text_ok)
            await self._storage.audit(
                conn, actor=staff.subject, action="consent.client_info_saved", outcome="ok",
                target=client_id, practice_id=staff.practice_id,
                detail={"events": [str(e.event) for e in entries], "before": str(current.state),
                        "after": str(after.state), "source": source},
            )
        log.info("client info saved", extra={"fields": {"client_id": client_id, "entries": len(entries),
                                                         "state": str(after.state)}})
        return _view(client_id, after)

    async def list_ledger(self, client_id: str) -> list[LedgerRow]:
        staff = _staff_or_account(SCOPE_READ)
        await self._check_client(staff, client_id)
        async with self._storage.transaction() as conn:
            rows = await self._storage.ledger_for_client(conn, client_id)
            await self._storage.audit(
                conn, actor=staff.subject, action="consent.ledger_read", outcome="ok",
                target=client_id, practice_id=staff.practice_id,
            )
        return rows

    # -- notify: right before every text ------------------------------------------

    async def check_sms_allowed(self, client_id: str) -> SmsPermission:
        service = require_service("notify")
        if not client_id:
            raise InvalidArgument("client_id is required.")
        async with self._storage.transaction() as conn:
            rows = await self._storage.ledger_for_client(conn, client_id)
            consent = fold(row.as_entry() for row in rows)
            await self._storage.audit(
                conn, actor=service.subject, action="consent.sms_check",
                outcome="allowed" if consent.sms_allowed else "refused",
                target=client_id, practice_id=rows[0].practice_id if rows else "",
                detail={"state": str(consent.state)},
            )
        # The number is disclosed only when it may be texted.
        return SmsPermission(consent.sms_allowed, consent.phone if consent.sms_allowed else None, consent.state)

    # -- web: the SMS provider's inbound webhook ----------------------------------

    async def receive_inbound_sms(self, from_number: str, body: str, provider_message_id: str) -> InboundResult:
        require_service("web")
        if not provider_message_id.strip():
            raise InvalidArgument("provider_message_id is required.")
        phone = normalise(from_number, self._region)
        keyword = keywords.classify(body)
        async with self._storage.transaction() as conn:
            if not await self._storage.record_inbound_sms(conn, provider_message_id, phone):
                # A retried webhook: it acted (and replied) the first time.
                return InboundResult(InboundAction.NONE, "", phone)
            acted_for: list[NumberHolder] = []
            holders = [] if keyword is Keyword.OTHER else await self._storage.clients_with_number(conn, phone)
            for holder in holders:
                await self._storage.lock_client(conn, holder.client_id)
                consent = fold(
                    row.as_entry() for row in await self._storage.ledger_for_client(conn, holder.client_id)
                )
                if consent.phone != phone:
                    continue  # the number changed since we looked it up
                entry = self._inbound_entry(keyword, consent, phone)
                if entry is None:
                    continue
                await self._storage.append_ledger(
                    conn, client_id=holder.client_id, practice_id=holder.practice_id, entries=[entry],
                    actor=holder.client_id, source=SOURCE_SMS, provider_message_id=provider_message_id,
                )
                after = fold([entry], start=consent)
                if after != consent:
                    await self._storage.save_current_number(
                        conn, holder.client_id, holder.practice_id, after.phone, after.text_ok
                    )
                    await self._storage.audit(
                        conn, actor=holder.client_id, action=f"consent.{keyword.value}_by_sms", outcome="ok",
                        target=holder.client_id, practice_id=holder.practice_id,
                        detail={"provider_message_id": provider_message_id, "before": str(consent.state),
                                "after": str(after.state)},
                    )
                acted_for.append(holder)
            action, reply = self._reply(keyword, bool(acted_for))
            if reply:
                # One confirmation per change, recorded for every client it concerned.
                for holder in acted_for:
                    await self._storage.append_ledger(
                        conn, client_id=holder.client_id, practice_id=holder.practice_id,
                        entries=[Entry(Event.CONFIRMATION_SENT, phone)], actor=SYSTEM_ACTOR,
                        source=SOURCE_SMS, provider_message_id=provider_message_id,
                    )
            await self._storage.set_inbound_action(conn, provider_message_id, action)
        log.info("inbound sms", extra={"fields": {"provider_message_id": provider_message_id, "action": action,
                                                   "clients": len(acted_for)}})
        return InboundResult(action, reply, phone)

    @staticmethod
    def _inbound_entry(keyword: Keyword, consent: Consent, phone: str) -> Entry | None:
        """The ledger entry a reply makes for one client, or None when it changes nothing."""
        if keyword is Keyword.STOP and consent.state is not State.OPTED_OUT:
            return Entry(Event.KEYWORD_STOP, phone)
        if keyword is Keyword.START and consent.state is State.OPTED_OUT:
            return Entry(Event.KEYWORD_START, phone)
        if keyword is Keyword.HELP:
            return Entry(Event.HELP_REQUESTED, phone)
        return None

    @staticmethod
    def _reply(keyword: Keyword, acted: bool) -> tuple[str, str]:
        if not acted:
            return InboundAction.NONE, ""
        if keyword is Keyword.STOP:
            return InboundAction.OPTED_OUT, keywords.OPTED_OUT_REPLY
        if keyword is Keyword.START:
            return InboundAction.OPTED_IN, keywords.OPTED_IN_REPLY
        if keyword is Keyword.HELP:
            return InboundAction.HELP, keywords.HELP_REPLY
        return InboundAction.NONE, ""

    # -- authorization helpers -------------------------------------------------------

    async def _check_client(self, staff: Principal, client_id: str) -> None:
        """The client must exist, be a client and belong to the caller's practice (asked of auth)."""
        if not client_id.strip():
            raise InvalidArgument("client_id is required.")
        try:
            reply = await self._auth.GetUsers(auth_pb.GetUsersRequest(user_ids=[client_id]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound(NO_SUCH_CLIENT) from exc
            log.warning("auth lookup failed", extra={"fields": {"code": exc.code().name}})
            raise Unavailable("Client details cannot be checked right now; please try again.") from exc
        for user in reply.users:
            if (
                user.user_id == client_id
                and user.role == auth_pb.ROLE_CLIENT
                and user.practice_id == staff.practice_id
            ):
                return
        raise NotFound(NO_SUCH_CLIENT)

"""Consent's domain logic and authorization.

The consent state is never stored: it is the fold of the client's ledger
(services/consent/ledger.py). Each change takes a per-client advisory lock, folds
the ledger, appends exactly the entries that record the change and keeps the
``phone_numbers`` row in step, all in one transaction with its audit row.

The SMS provider (when one is configured) is asked inside the save's transaction,
before its audit row (whose chain lock serialises every audit write): so nobody sees
the new consent before the provider's verdict is in the ledger, and the client's lock
makes a STOP arriving meanwhile wait for it. Provider calls are bounded by short
timeouts. If the provider cannot be asked, the save keeps our own entries and records
nothing about the provider: the state is OPTED_IN and a text to a number the provider
still blocks fails there (the provider never delivers to its opted-out numbers); the
check is logged as not done (ids only), and the next save that gives consent asks again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.identity import Principal, caller, require_scope, require_service, require_staff
from services.consent import keywords
from services.consent.keywords import Keyword
from services.consent.ledger import (
    Consent,
    Entry,
    Event,
    State,
    changes_for_save,
    fold,
    needs_provider_check,
    reply_entry,
)
from services.consent.phones import normalise
from services.consent.provider import OptInRefused, ProviderUnavailable, SmsProvider
from services.consent.storage import ConsentStorage, LedgerRow, NumberHolder

log = logging.getLogger("confidant.consent")

SOURCE_CLIENT_INFO = "client_info"
SOURCE_SMS = "sms"
# A practice system (service account) through the gRPC API.
SOURCE_API = "api"
# What the SMS provider told us.
SOURCE_PROVIDER = "provider"
SYSTEM_ACTOR = "service:consent"
NO_SUCH_CLIENT = "There is no such client in your practice."
# What a practice's service account may do, by scope.
SCOPE_READ = "consent.read"
SCOPE_WRITE = "consent.write"
# Who may deliver inbound texts ("" from a web edge that does not say yet).
INBOUND_PROVIDERS = frozenset({"sns", "twilio", "development"})
# AWS: OptInPhoneNumber works once per number per 30 days.
OPT_IN_INTERVAL_DAYS = 30


@dataclass(frozen=True)
class ClientPhone:
    client_id: str
    phone: str | None
    text_ok: bool
    state: State
    since: datetime | None = None


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


class ProviderCheck:
    """What asking the SMS provider came to (in the save's audit detail)."""

    CLEAR = "clear"  # not opted out there
    OPTED_IN_AGAIN = "opted_in_again"  # it was; we asked it to opt the number in, and it did
    BLOCKED = "blocked"  # it was, and it refused or may not be asked again yet
    NOT_DONE = "not_done"  # it could not be asked


def _view(client_id: str, consent: Consent) -> ClientPhone:
    return ClientPhone(client_id, consent.phone, consent.text_ok, consent.state, consent.since)


def _staff_or_account(scope: str) -> Principal:
    """The practice's staff, or one of its service accounts holding ``scope``."""
    who = caller()
    return require_scope(scope) if who.is_service_account else require_staff()


def _inbound_provider(value: str) -> str:
    provider = value.strip().lower()
    if provider and provider not in INBOUND_PROVIDERS:
        raise InvalidArgument(f"provider must be one of {', '.join(sorted(INBOUND_PROVIDERS))}.")
    return provider


def _our_number(value: str, region: str) -> str | None:
    """The number the client wrote to, when the provider says and it is a number (never refused:
    a reply must not be lost over a field we only keep as evidence)."""
    text = value.strip()
    if not text:
        return None
    try:
        return normalise(text, region)
    except InvalidArgument:
        return None


class ConsentHandlers:
    def __init__(
        self,
        storage: ConsentStorage,
        auth: auth_grpc.AuthServiceStub,
        default_region: str = "US",
        provider: SmsProvider | None = None,
        help_contact: str = "your practice",
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._region = default_region
        self._provider = provider
        self._help_contact = help_contact

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
        it (and "Text message ok"). A save that gives consent asks the SMS provider whether
        it still blocks the number; the answer's state is CARRIER_BLOCKED when it does."""
        staff = _staff_or_account(SCOPE_WRITE)
        phone = normalise(phone_number, self._region) if phone_number.strip() else None
        if phone is None:
            text_ok = False
        await self._check_client(staff, client_id)
        source = SOURCE_API if staff.is_service_account else SOURCE_CLIENT_INFO
        async with self._storage.transaction() as conn:
            await self._storage.lock_client(conn, client_id)
            current = fold(row.as_entry() for row in await self._storage.ledger_for_client(conn, client_id))
            entries = changes_for_save(current, phone, text_ok)
            if not entries:
                return _view(client_id, current)
            stored = await self._storage.append_ledger(
                conn, client_id=client_id, practice_id=staff.practice_id, entries=entries,
                actor=staff.subject, source=source,
            )
            after = fold((row.as_entry() for row in stored), start=current)
            check = None
            if self._provider is not None and needs_provider_check(current, after):
                check, after = await self._ask_provider(conn, client_id, staff, source, after)
            await self._storage.save_current_number(conn, client_id, staff.practice_id, after.phone, after.text_ok)
            detail = {"events": [str(e.event) for e in entries], "before": str(current.state),
                      "after": str(after.state), "source": source}
            if check is not None:
                detail["provider_check"] = check
            await self._storage.audit(
                conn, actor=staff.subject, action="consent.client_info_saved", outcome="ok",
                target=client_id, practice_id=staff.practice_id, detail=detail,
            )
        log.info("client info saved", extra={"fields": {"client_id": client_id, "entries": len(entries),
                                                         "state": str(after.state), "provider_check": check}})
        return _view(client_id, after)

    async def _ask_provider(
        self, conn: psycopg.AsyncConnection, client_id: str, staff: Principal, source: str, consent: Consent
    ) -> tuple[str, Consent]:
        """Whether the provider still blocks the newly consented number; opt it in again when
        AWS allows it. Returns what it came to and the consent after the entry it appended."""
        assert self._provider is not None and consent.phone is not None
        provider, phone = self._provider.name, consent.phone
        fields = {"client_id": client_id, "provider": provider}
        # One number at a time, across clients: a family's second save asks after the first
        # one's opt-in (then the number is no longer opted out), never spends a second request.
        await self._storage.lock_number(conn, phone)
        try:
            if not await self._provider.is_opted_out(phone):
                return ProviderCheck.CLEAR, consent
            opted_in = False
            if not await self._storage.opt_in_requested_within(conn, phone, OPT_IN_INTERVAL_DAYS):
                try:
                    await self._provider.opt_in(phone)
                    opted_in = True
                except OptInRefused as exc:
                    log.warning("sms provider refused the opt-in", extra={"fields": {**fields, "code": str(exc)}})
        except ProviderUnavailable as exc:
            log.warning("sms provider check not done", extra={"fields": {**fields, "reason": str(exc)}})
            return ProviderCheck.NOT_DONE, consent
        if opted_in:
            # Asked on the clinician's behalf: their save is why.
            entry, actor, entry_source, check = (
                Entry(Event.PROVIDER_OPT_IN_REQUESTED, phone), staff.subject, source, ProviderCheck.OPTED_IN_AGAIN)
        else:
            entry, actor, entry_source, check = (
                Entry(Event.PROVIDER_BLOCK_SEEN, phone), SYSTEM_ACTOR, SOURCE_PROVIDER, ProviderCheck.BLOCKED)
        stored = await self._storage.append_ledger(
            conn, client_id=client_id, practice_id=staff.practice_id, entries=[entry],
            actor=actor, source=entry_source, provider=provider,
        )
        return check, fold((row.as_entry() for row in stored), start=consent)

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

    async def receive_inbound_sms(
        self, from_number: str, body: str, provider_message_id: str, provider: str = "", to_number: str = ""
    ) -> InboundResult:
        """Apply a client's reply to every client with that number (a family may share one).

        The first delivery of a provider's message id acts; a retried or concurrent
        duplicate finds it recorded and changes nothing, and gets the same reply again (notify
        sends one reply per inbound message, so it never texts twice). Each
        change is confirmed by exactly one text; HELP is always answered (also from a
        number we do not know), naming the practice when the number belongs to clients
        of exactly one practice and no practice otherwise.
        """
        require_service("web")
        message_id = provider_message_id.strip()
        if not message_id:
            raise InvalidArgument("provider_message_id is required.")
        provider = _inbound_provider(provider)
        phone = normalise(from_number, self._region)
        keyword = keywords.classify(body)
        ledger_provider = provider or None
        async with self._storage.transaction() as conn:
            if not await self._storage.record_inbound_sms(conn, provider, message_id, phone, _our_number(to_number, self._region)):
                # A retried webhook: it acted the first time and changes nothing now. Its reply is
                # given again, because the first one may not have reached notify; notify sends one
                # reply per inbound message whatever happens.
                first, practice_ids = await self._storage.inbound_outcome(conn, provider, message_id)
                return InboundResult(InboundAction.NONE, await self._reply_text(first, set(practice_ids)), phone)
            acted_for: list[NumberHolder] = []
            holders = [] if keyword is Keyword.OTHER else await self._storage.clients_with_number(conn, phone)
            for holder in holders:
                await self._storage.lock_client(conn, holder.client_id)
                consent = fold(
                    row.as_entry() for row in await self._storage.ledger_for_client(conn, holder.client_id)
                )
                if consent.phone != phone:
                    continue  # the number changed since we looked it up
                entry = reply_entry(consent, keyword, phone)
                if entry is None:
                    continue
                stored = await self._storage.append_ledger(
                    conn, client_id=holder.client_id, practice_id=holder.practice_id, entries=[entry],
                    actor=holder.client_id, source=SOURCE_SMS, provider_message_id=message_id,
                    provider=ledger_provider,
                )
                after = fold((row.as_entry() for row in stored), start=consent)
                if after.state is not consent.state:
                    await self._storage.save_current_number(
                        conn, holder.client_id, holder.practice_id, after.phone, after.text_ok
                    )
                    await self._storage.audit(
                        conn, actor=holder.client_id, action=f"consent.{keyword.value}_by_sms", outcome="ok",
                        target=holder.client_id, practice_id=holder.practice_id,
                        detail={"provider_message_id": message_id, "provider": provider,
                                "before": str(consent.state), "after": str(after.state)},
                    )
                acted_for.append(holder)
            action = self._action(keyword, bool(acted_for))
            if action != InboundAction.NONE:
                # One confirmation per change, recorded for every client it concerned.
                for holder in acted_for:
                    await self._storage.append_ledger(
                        conn, client_id=holder.client_id, practice_id=holder.practice_id,
                        entries=[Entry(Event.CONFIRMATION_SENT, phone)], actor=SYSTEM_ACTOR,
                        source=SOURCE_SMS, provider_message_id=message_id, provider=ledger_provider,
                    )
            await self._storage.set_inbound_action(
                conn, provider, message_id, action, list({h.practice_id for h in acted_for})
            )
        reply = await self._reply_text(action, {h.practice_id for h in acted_for})
        log.info("inbound sms", extra={"fields": {"provider_message_id": message_id, "provider": provider,
                                                   "action": action, "clients": len(acted_for)}})
        return InboundResult(action, reply, phone)

    @staticmethod
    def _action(keyword: Keyword, acted: bool) -> str:
        if keyword is Keyword.HELP:
            return InboundAction.HELP  # answered even when the number is not one of ours
        if not acted:
            return InboundAction.NONE
        if keyword in (Keyword.STOP, Keyword.REVOCATION):
            return InboundAction.OPTED_OUT
        if keyword is Keyword.START:
            return InboundAction.OPTED_IN
        return InboundAction.NONE

    async def _reply_text(self, action: str, practice_ids: set[str]) -> str:
        if action == InboundAction.OPTED_OUT:
            return keywords.OPTED_OUT_REPLY
        if action == InboundAction.OPTED_IN:
            return keywords.OPTED_IN_REPLY
        if action == InboundAction.HELP:
            name = await self._practice_name(next(iter(practice_ids))) if len(practice_ids) == 1 else None
            return keywords.help_reply(name, self._help_contact)
        return ""

    async def _practice_name(self, practice_id: str) -> str | None:
        """The practice's name for the HELP reply; None (a generic reply) when auth cannot say."""
        try:
            reply = await self._auth.GetPractice(auth_pb.GetPracticeRequest(practice_id=practice_id))
        except grpc.aio.AioRpcError as exc:
            log.warning("practice name lookup failed", extra={"fields": {"code": exc.code().name}})
            return None
        return reply.practice.name or None

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

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

Inbound texts (``receive_inbound_sms``) are applied to every client whose number sent
them (a family may share one). STOP, START and HELP are answered as carriers require;
a text that is not a keyword gets one automatic answer per number per 24 hours (counted
from the ledger's ``auto_reply_sent`` entries, whoever's they are), recorded for every
client with the number. Further texts within the day are answered with nothing and not
recorded again (the ledger is the consent's evidence, not a log of chatter; ``inbound_sms``
keeps every message id). No automatic answer goes to a number that is no client's (we
would not know whose texts these are), nor to one a client opted out or the carrier
blocks (after STOP only the one confirmation is sent). A number that clients of several
practices share gets one answer in neutral wording (services/consent/replies.py).
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
from services.consent import keywords, replies
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
from services.consent.phones import for_people, normalise
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
# A text that is not a keyword is answered once per number in this many hours.
AUTO_REPLY_INTERVAL_HOURS = 24
# States in which a number gets nothing but what carriers require (STOP's one confirmation, HELP).
_HELD_BACK = frozenset({State.OPTED_OUT, State.CARRIER_BLOCKED})


@dataclass(frozen=True)
class ClientPhone:
    client_id: str
    phone: str | None
    # Texts may be sent now (OPTED_IN): what "Text message ok" shows.
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
    AUTO_REPLY = "auto_reply"


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
    # "Text message ok" shows ticked only while texts may be sent (a tick under a STOP sends nothing).
    return ClientPhone(client_id, consent.phone, consent.sms_allowed, consent.state, consent.since)


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
            await self._storage.save_current_number(conn, client_id, staff.practice_id, after.phone, after.sms_allowed)
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
        of exactly one practice and no practice otherwise. A text that is not a keyword
        gets the once-a-day automatic answer (see the module docstring).
        """
        require_service("web")
        message_id = provider_message_id.strip()
        if not message_id:
            raise InvalidArgument("provider_message_id is required.")
        provider = _inbound_provider(provider)
        phone = normalise(from_number, self._region)
        keyword = keywords.classify(body)
        acted_for: list[NumberHolder] = []
        async with self._storage.transaction() as conn:
            if not await self._storage.record_inbound_sms(conn, provider, message_id, phone, _our_number(to_number, self._region)):
                # A retried webhook: it acted the first time and changes nothing now. Its reply is
                # given again, because the first one may not have reached notify; notify sends one
                # reply per inbound message whatever happens.
                answered, practice_ids = await self._storage.inbound_outcome(conn, provider, message_id)
                action = InboundAction.NONE
            else:
                if keyword is Keyword.OTHER:
                    action, acted_for = await self._auto_reply(conn, phone, message_id, provider)
                else:
                    action, acted_for = await self._apply_keyword(conn, keyword, phone, message_id, provider)
                answered, practice_ids = action, sorted({h.practice_id for h in acted_for})
                await self._storage.set_inbound_action(conn, provider, message_id, action, practice_ids)
        # Auth is asked for the practice's name and contact after the commit, not inside it.
        reply = await self._reply_text(answered, set(practice_ids))
        log.info("inbound sms", extra={"fields": {"provider_message_id": message_id, "provider": provider,
                                                   "action": action, "clients": len(acted_for)}})
        return InboundResult(action, reply, phone)

    async def _holders(self, conn: psycopg.AsyncConnection, phone: str) -> list[tuple[NumberHolder, Consent]]:
        """The clients whose number ``phone`` is, each locked, with their consent."""
        found = []
        for holder in await self._storage.clients_with_number(conn, phone):
            await self._storage.lock_client(conn, holder.client_id)
            consent = fold(row.as_entry() for row in await self._storage.ledger_for_client(conn, holder.client_id))
            if consent.phone == phone:  # else the number changed since we looked it up
                found.append((holder, consent))
        return found

    async def _apply_keyword(
        self, conn: psycopg.AsyncConnection, keyword: Keyword, phone: str, message_id: str, provider: str
    ) -> tuple[str, list[NumberHolder]]:
        """STOP, START, HELP or an opt-out in the client's own words, for every client with the number."""
        acted_for: list[NumberHolder] = []
        for holder, consent in await self._holders(conn, phone):
            entry = reply_entry(consent, keyword, phone)
            if entry is None:
                continue
            stored = await self._storage.append_ledger(
                conn, client_id=holder.client_id, practice_id=holder.practice_id, entries=[entry],
                actor=holder.client_id, source=SOURCE_SMS, provider_message_id=message_id, provider=provider or None,
            )
            after = fold((row.as_entry() for row in stored), start=consent)
            if after.state is not consent.state:
                await self._storage.save_current_number(
                    conn, holder.client_id, holder.practice_id, after.phone, after.sms_allowed
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
                    source=SOURCE_SMS, provider_message_id=message_id, provider=provider or None,
                )
        return action, acted_for

    async def _auto_reply(
        self, conn: psycopg.AsyncConnection, phone: str, message_id: str, provider: str
    ) -> tuple[str, list[NumberHolder]]:
        """The once-a-day automatic answer to a text that is not a keyword, or NONE (module docstring)."""
        # Two texts from one number at once: the second waits, then finds the first one's answer.
        await self._storage.lock_auto_reply(conn, phone)
        holders = await self._holders(conn, phone)
        if not holders or any(consent.state in _HELD_BACK for _, consent in holders):
            return InboundAction.NONE, []
        if await self._storage.auto_reply_sent_within(conn, phone, AUTO_REPLY_INTERVAL_HOURS):
            return InboundAction.NONE, []
        for holder, _ in holders:
            await self._storage.append_ledger(
                conn, client_id=holder.client_id, practice_id=holder.practice_id,
                entries=[Entry(Event.AUTO_REPLY_SENT, phone)], actor=SYSTEM_ACTOR, source=SOURCE_SMS,
                provider_message_id=message_id, provider=provider or None,
            )
            await self._storage.audit(
                conn, actor=SYSTEM_ACTOR, action="consent.auto_reply_sent", outcome="ok",
                target=holder.client_id, practice_id=holder.practice_id,
                detail={"provider_message_id": message_id, "provider": provider},
            )
        return InboundAction.AUTO_REPLY, [holder for holder, _ in holders]

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
        """The text that answers ``action``, naming the practice when exactly one is concerned."""
        texts = {
            InboundAction.OPTED_OUT: replies.opted_out,
            InboundAction.OPTED_IN: replies.opted_in,
            InboundAction.HELP: replies.help_text,
            InboundAction.AUTO_REPLY: replies.auto_reply,
        }
        if action not in texts:
            return ""
        return texts[action](await self._sender(practice_ids))

    async def _sender(self, practice_ids: set[str]) -> replies.Sender:
        """Whom the reply speaks for: the practice and how to reach it (from auth), when there is
        exactly one; neutral when there is none or several, or when auth cannot say."""
        neutral = replies.Sender(fallback=self._help_contact)
        if len(practice_ids) != 1:
            return neutral
        try:
            reply = await self._auth.GetPractice(auth_pb.GetPracticeRequest(practice_id=next(iter(practice_ids))))
        except grpc.aio.AioRpcError as exc:
            log.warning("practice lookup failed", extra={"fields": {"code": exc.code().name}})
            return neutral
        practice = reply.practice
        if not practice.name.strip():
            return neutral
        phone = for_people(practice.contact_phone, self._region) if practice.contact_phone.strip() else ""
        return replies.Sender(practice.name, phone=phone, email=practice.contact_email.strip(),
                              fallback=self._help_contact)

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

"""The consent ledger and the pure fold that derives the consent state from it.

The ledger is the source of truth: every change to a client's number, to the
"Text message ok" checkbox, every STOP/START/HELP reply, every opt-out in the
client's own words, what the SMS provider told us and every confirmation we sent
is appended as one entry (who, when, source, number, the provider and its message
id), and the state is always recomputed from the entries, oldest first. Nothing is
stored as "the state": ``fold`` is its only definition.

Rules (from the help-centre article, PRODUCT.md and issue 5):
- no number on file                      -> NO_NUMBER
- a number without "Text message ok"     -> NOT_GIVEN
- a number with "Text message ok"        -> OPTED_IN
- the client replied STOP (or a synonym) or asked to stop in their own words -> OPTED_OUT,
  and it stays out whatever the checkbox does, until the client replies START (which
  re-consents and ticks the checkbox again) or the clinician deletes the number, saves,
  re-adds it and ticks "Text message ok" again (the article's re-enable path).
- we have consent but the SMS provider still lists the number as opted out and would
  not (or may not yet) opt it in again -> CARRIER_BLOCKED, until the client replies
  START, the provider opts the number in, or the number is changed or deleted.
- a change to a different number needs "Text message ok" again; a reply or a provider
  verdict about another number than the current one changes nothing.

Retention: the product never deletes or rewrites the ledger (migration 0001's triggers
refuse UPDATE, DELETE and TRUNCATE, and the service's database role has no such rights,
migration 0002). It is the practice's evidence of consent and of every opt-out, so it
is kept for at least 4 years (the TCPA's limitation period), also after a client or a
number is deleted; removing older entries is an operator's decision outside the product.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from services.consent.keywords import Keyword


class Event(enum.StrEnum):
    NUMBER_ADDED = "number_added"
    NUMBER_CHANGED = "number_changed"
    NUMBER_DELETED = "number_deleted"
    TEXT_OK_CHECKED = "text_ok_checked"
    TEXT_OK_UNCHECKED = "text_ok_unchecked"
    KEYWORD_STOP = "keyword_stop"
    KEYWORD_START = "keyword_start"
    # The client asked to stop in their own words ("please stop texting me").
    FREE_TEXT_REVOCATION = "free_text_revocation"
    HELP_REQUESTED = "help_requested"
    CONFIRMATION_SENT = "confirmation_sent"
    # The provider says the number is opted out at their end, and it stays so.
    PROVIDER_BLOCK_SEEN = "provider_block_seen"
    # We asked the provider to opt the number in again (AWS allows one per number per 30 days).
    PROVIDER_OPT_IN_REQUESTED = "provider_opt_in_requested"


class State(enum.StrEnum):
    NO_NUMBER = "no_number"
    NOT_GIVEN = "not_given"
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    CARRIER_BLOCKED = "carrier_blocked"


# Entries that speak about one number: they count only while it is the client's number.
_ABOUT_THE_NUMBER = frozenset({
    Event.KEYWORD_STOP, Event.FREE_TEXT_REVOCATION, Event.KEYWORD_START,
    Event.PROVIDER_BLOCK_SEEN, Event.PROVIDER_OPT_IN_REQUESTED,
})


@dataclass(frozen=True)
class Entry:
    """One ledger entry as the fold needs it; ``at`` is its created_at (None before it is stored)."""

    event: Event | str
    phone: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Consent:
    """A client's consent after folding the ledger."""

    phone: str | None = None
    text_ok: bool = False
    opted_out: bool = False
    carrier_blocked: bool = False
    # When the client entered the current state (or got the current number): the
    # created_at of the entry that did it.
    since: datetime | None = None

    @property
    def state(self) -> State:
        if self.phone is None:
            return State.NO_NUMBER
        if self.opted_out:
            return State.OPTED_OUT
        if not self.text_ok:
            return State.NOT_GIVEN
        if self.carrier_blocked:
            return State.CARRIER_BLOCKED
        return State.OPTED_IN

    @property
    def sms_allowed(self) -> bool:
        return self.state is State.OPTED_IN


EMPTY = Consent()


def _next(consent: Consent, event: Event, phone: str | None) -> Consent:
    if event is Event.NUMBER_ADDED or event is Event.NUMBER_CHANGED:
        if phone is None:
            raise ValueError(f"{event} needs a phone number.")
        if phone == consent.phone:
            return consent
        # A different number: an earlier STOP or block was about the old number, and the
        # new one needs "Text message ok" again.
        return Consent(phone=phone)
    if event is Event.NUMBER_DELETED:
        return EMPTY
    if event is Event.TEXT_OK_CHECKED:
        return replace(consent, text_ok=True) if consent.phone is not None else consent
    if event is Event.TEXT_OK_UNCHECKED:
        return replace(consent, text_ok=False)
    if event in _ABOUT_THE_NUMBER:
        if consent.phone is None or (phone is not None and phone != consent.phone):
            return consent
        if event is Event.KEYWORD_STOP or event is Event.FREE_TEXT_REVOCATION:
            return replace(consent, opted_out=True)
        if event is Event.KEYWORD_START:
            # The client re-consents from their own phone, which also lifts a provider block.
            return replace(consent, opted_out=False, text_ok=True, carrier_blocked=False)
        if event is Event.PROVIDER_BLOCK_SEEN:
            return replace(consent, carrier_blocked=True)
        return replace(consent, carrier_blocked=False)  # PROVIDER_OPT_IN_REQUESTED
    # HELP and confirmations change nothing.
    return consent


def apply(consent: Consent, entry: Entry) -> Consent:
    """The consent after one more ledger entry."""
    after = _next(consent, Event(entry.event), entry.phone)
    changed = (after.phone, after.state) != (consent.phone, consent.state)
    return replace(after, since=entry.at if changed else consent.since)


def fold(entries: Iterable[Entry], start: Consent = EMPTY) -> Consent:
    """The consent derived from a client's ledger, oldest entry first."""
    consent = start
    for entry in entries:
        consent = apply(consent, entry)
    return consent


def changes_for_save(current: Consent, phone: str | None, text_ok: bool) -> list[Entry]:
    """The entries that record a Client Info save: exactly what changed, nothing else.

    ``phone`` is the normalised number (None deletes it; "Text message ok" cannot stay
    ticked without a number).
    """
    if phone is None:
        return [Entry(Event.NUMBER_DELETED, current.phone)] if current.phone is not None else []
    entries: list[Entry] = []
    if current.phone is None:
        entries.append(Entry(Event.NUMBER_ADDED, phone))
    elif current.phone != phone:
        entries.append(Entry(Event.NUMBER_CHANGED, phone))
    after = fold(entries, start=current)
    if text_ok and not after.text_ok:
        entries.append(Entry(Event.TEXT_OK_CHECKED, phone))
    elif not text_ok and after.text_ok:
        entries.append(Entry(Event.TEXT_OK_UNCHECKED, phone))
    return entries


def needs_provider_check(before: Consent, after: Consent) -> bool:
    """Whether a save just gave consent to a number (newly OPTED_IN, or a new number):
    then the provider is asked whether it still blocks the number."""
    return after.state is State.OPTED_IN and (before.state is not State.OPTED_IN or before.phone != after.phone)


def reply_entry(consent: Consent, keyword: Keyword, phone: str) -> Entry | None:
    """The entry a reply from ``phone`` makes for a client whose number it is, or None
    when it changes nothing (a repeated STOP, a START while not opted out, chatter)."""
    if keyword in (Keyword.STOP, Keyword.REVOCATION) and consent.state is not State.OPTED_OUT:
        return Entry(Event.KEYWORD_STOP if keyword is Keyword.STOP else Event.FREE_TEXT_REVOCATION, phone)
    if keyword is Keyword.START and consent.state in (State.OPTED_OUT, State.CARRIER_BLOCKED):
        return Entry(Event.KEYWORD_START, phone)
    if keyword is Keyword.HELP:
        return Entry(Event.HELP_REQUESTED, phone)
    return None

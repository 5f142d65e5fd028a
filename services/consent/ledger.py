"""The consent ledger and the pure fold that derives the consent state from it.

The ledger is the source of truth: every change to a client's number, to the
"Text message ok" checkbox, every STOP/START/HELP reply, every opt-out in the
client's own words, what the SMS provider told us, every confirmation and every
automatic answer we sent is appended as one entry (who, when, source, number, the
provider and its message id; never the words of a text), and the state is always
recomputed from the entries, oldest first. Nothing is stored as "the state": ``fold``
is its only definition.

Rules (from the help-centre article, PRODUCT.md and issues 5 and 11):
- no number on file                      -> NO_NUMBER
- a number without "Text message ok"     -> NOT_GIVEN
- a number with "Text message ok"        -> OPTED_IN, the only state in which texts are sent
  (and the only one in which the Client Info tab shows "Text message ok" ticked).
- the client replied STOP (or a synonym) or asked to stop in their own words -> OPTED_OUT.
  The opt-out belongs to the number: the fold remembers, per number, that it opted out
  (``Consent.opted_out_numbers``), and the client's number is OPTED_OUT whenever it is a
  remembered one, whatever the checkbox does and however often the number is changed
  away and back (A -> B -> A is still out). A number's opt-out is lifted only by
  - START from that number (which re-consents and ticks the checkbox again), or
  - deleting that number: a save that removes the client's number (it is always a save
    of its own), after which adding the number again is a fresh number that needs
    "Text message ok" again (the article's "delete, save, re-add and tick" path).
    Deleting another number, or changing the number to another one, lifts nothing.
  A STOP or START about a number other than the client's current one updates what is
  remembered about that number and nothing else.
- ticking "Text message ok" while the number is OPTED_OUT or CARRIER_BLOCKED is recorded
  as what the clinician did (``text_ok_checked``) and changes nothing: nothing is sent.
- we have consent but the SMS provider still lists the number as opted out and would
  not (or may not yet) opt it in again -> CARRIER_BLOCKED, until the client replies
  START, the provider opts the number in, or the number is changed or deleted (a
  provider's block is not remembered per number: giving consent to a number again asks
  the provider again).
- a change to a different number needs "Text message ok" again; a provider verdict
  about another number than the current one changes nothing.
- HELP requests, confirmations and automatic answers change nothing.

A save records exactly what changed from what the Client Info tab showed
(``changes_for_save``): the box shows ticked only while OPTED_IN, so a tick under a
STOP is always recorded, and saving the box unticked as shown records nothing.

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
    # The once-a-day answer to a text that is not a keyword (never its words).
    AUTO_REPLY_SENT = "auto_reply_sent"


class State(enum.StrEnum):
    NO_NUMBER = "no_number"
    NOT_GIVEN = "not_given"
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    CARRIER_BLOCKED = "carrier_blocked"


_OPT_OUTS = frozenset({Event.KEYWORD_STOP, Event.FREE_TEXT_REVOCATION})
# The provider's verdicts: they count only while the number they name is the client's.
_PROVIDER_VERDICTS = frozenset({Event.PROVIDER_BLOCK_SEEN, Event.PROVIDER_OPT_IN_REQUESTED})


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
    # The clinician's "Text message ok" for the current number stands (ticked since the
    # number arrived, or START from it). What was done to the box, not what the Client
    # Info tab shows: that is ``sms_allowed`` (a tick under a STOP sends nothing).
    ticked: bool = False
    carrier_blocked: bool = False
    # Every number of this client that opted out and whose opt-out no START from it and
    # no deletion of it has lifted (see the module docstring).
    opted_out_numbers: frozenset[str] = frozenset()
    # When the client entered the current state (or got the current number): the
    # created_at of the entry that did it.
    since: datetime | None = None

    @property
    def opted_out(self) -> bool:
        return self.phone is not None and self.phone in self.opted_out_numbers

    @property
    def state(self) -> State:
        if self.phone is None:
            return State.NO_NUMBER
        if self.opted_out:
            return State.OPTED_OUT
        if not self.ticked:
            return State.NOT_GIVEN
        if self.carrier_blocked:
            return State.CARRIER_BLOCKED
        return State.OPTED_IN

    @property
    def sms_allowed(self) -> bool:
        """Whether texts may be sent now; also whether "Text message ok" shows ticked."""
        return self.state is State.OPTED_IN


EMPTY = Consent()


def _next(consent: Consent, event: Event, phone: str | None) -> Consent:
    if event is Event.NUMBER_ADDED or event is Event.NUMBER_CHANGED:
        if phone is None:
            raise ValueError(f"{event} needs a phone number.")
        if phone == consent.phone:
            return consent
        # A different number needs "Text message ok" again; what each number said is remembered.
        return Consent(phone=phone, opted_out_numbers=consent.opted_out_numbers)
    if event is Event.NUMBER_DELETED:
        # The delete, save, re-add path: the deleted number's opt-out goes with it.
        return Consent(opted_out_numbers=consent.opted_out_numbers - {consent.phone})
    if event is Event.TEXT_OK_CHECKED:
        return replace(consent, ticked=True) if consent.phone is not None else consent
    if event is Event.TEXT_OK_UNCHECKED:
        return replace(consent, ticked=False)
    about = phone if phone is not None else consent.phone
    if about is None:
        return consent
    if event in _OPT_OUTS:
        return replace(consent, opted_out_numbers=consent.opted_out_numbers | {about})
    if event is Event.KEYWORD_START:
        lifted = replace(consent, opted_out_numbers=consent.opted_out_numbers - {about})
        # From the current number the client re-consents, which also lifts a provider block.
        return replace(lifted, ticked=True, carrier_blocked=False) if about == consent.phone else lifted
    if event in _PROVIDER_VERDICTS:
        if about != consent.phone:
            return consent
        return replace(consent, carrier_blocked=event is Event.PROVIDER_BLOCK_SEEN)
    # HELP, confirmations and automatic answers change nothing.
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
    """The entries that record a Client Info save: exactly what changed from what the tab
    showed (the number, and "Text message ok" ticked only while texts may be sent).

    ``phone`` is the normalised number (None deletes it; "Text message ok" cannot stay
    ticked without a number). A tick while the number is opted out or blocked is
    recorded, and changes nothing.
    """
    if phone is None:
        return [Entry(Event.NUMBER_DELETED, current.phone)] if current.phone is not None else []
    entries: list[Entry] = []
    if current.phone is None:
        entries.append(Entry(Event.NUMBER_ADDED, phone))
    elif current.phone != phone:
        entries.append(Entry(Event.NUMBER_CHANGED, phone))
    shown = fold(entries, start=current).sms_allowed
    if text_ok and not shown:
        entries.append(Entry(Event.TEXT_OK_CHECKED, phone))
    elif not text_ok and shown:
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

"""The consent ledger and the pure fold that derives the consent state from it.

The ledger is the source of truth: every change to a client's number, to the
"Text message ok" checkbox and every STOP/START/HELP reply is appended as one
entry, and the state is always recomputed from the entries, oldest first.

Rules (from the help-centre article and PRODUCT.md):
- no number on file                      -> NO_NUMBER
- a number without "Text message ok"     -> NOT_GIVEN
- a number with "Text message ok"        -> OPTED_IN
- the client replied STOP (or a synonym) -> OPTED_OUT, and it stays out whatever the
  checkbox does, until the client replies START (which re-consents and ticks the
  checkbox again) or the clinician deletes the number, saves, re-adds it and ticks
  "Text message ok" again (the article's re-enable path).
- a change to a different number needs "Text message ok" again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace


class Event(enum.StrEnum):
    NUMBER_ADDED = "number_added"
    NUMBER_CHANGED = "number_changed"
    NUMBER_DELETED = "number_deleted"
    TEXT_OK_CHECKED = "text_ok_checked"
    TEXT_OK_UNCHECKED = "text_ok_unchecked"
    KEYWORD_STOP = "keyword_stop"
    KEYWORD_START = "keyword_start"
    HELP_REQUESTED = "help_requested"
    CONFIRMATION_SENT = "confirmation_sent"


class State(enum.StrEnum):
    NO_NUMBER = "no_number"
    NOT_GIVEN = "not_given"
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class Entry:
    """One ledger entry as the fold needs it."""

    event: Event | str
    phone: str | None = None


@dataclass(frozen=True)
class Consent:
    """A client's consent after folding the ledger."""

    phone: str | None = None
    text_ok: bool = False
    opted_out: bool = False

    @property
    def state(self) -> State:
        if self.phone is None:
            return State.NO_NUMBER
        if self.opted_out:
            return State.OPTED_OUT
        if self.text_ok:
            return State.OPTED_IN
        return State.NOT_GIVEN

    @property
    def sms_allowed(self) -> bool:
        return self.state is State.OPTED_IN


EMPTY = Consent()


def apply(consent: Consent, entry: Entry) -> Consent:
    """The consent after one more ledger entry."""
    event = Event(entry.event)
    if event is Event.NUMBER_ADDED or event is Event.NUMBER_CHANGED:
        if entry.phone is None:
            raise ValueError(f"{event} needs a phone number.")
        if entry.phone == consent.phone:
            return consent
        # A different number: an earlier STOP was about the old number, and the new one
        # needs "Text message ok" again.
        return Consent(phone=entry.phone, text_ok=False, opted_out=False)
    if event is Event.NUMBER_DELETED:
        return EMPTY
    if event is Event.TEXT_OK_CHECKED:
        return replace(consent, text_ok=True) if consent.phone is not None else consent
    if event is Event.TEXT_OK_UNCHECKED:
        return replace(consent, text_ok=False)
    if event is Event.KEYWORD_STOP or event is Event.KEYWORD_START:
        # A reply counts only for the number it came from.
        if consent.phone is None or (entry.phone is not None and entry.phone != consent.phone):
            return consent
        if event is Event.KEYWORD_STOP:
            return replace(consent, opted_out=True)
        # The client re-consents from their own phone.
        return replace(consent, opted_out=False, text_ok=True)
    # HELP and confirmations change nothing.
    return consent


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


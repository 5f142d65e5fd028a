"""The consent fold and the Client Info diff: plain unit tests, no database."""

from __future__ import annotations

import pytest

from services.consent.keywords import Keyword, classify
from services.consent.ledger import Consent, Entry, Event, State, changes_for_save, fold

A = "+12125550101"
B = "+12125550102"


def state(*entries: Entry) -> State:
    return fold(entries).state


def e(event: Event, phone: str | None = A) -> Entry:
    return Entry(event, phone)


def test_no_entries_means_no_number():
    assert state() is State.NO_NUMBER


def test_number_without_text_ok_is_not_given():
    assert state(e(Event.NUMBER_ADDED)) is State.NOT_GIVEN


def test_text_ok_checked_opts_in_and_unchecking_withdraws():
    assert state(e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)) is State.OPTED_IN
    assert state(e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.TEXT_OK_UNCHECKED)) is State.NOT_GIVEN


def test_text_ok_without_a_number_gives_nothing():
    assert state(e(Event.TEXT_OK_CHECKED)) is State.NO_NUMBER


def test_stop_opts_out_and_the_checkbox_cannot_undo_it():
    entries = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.KEYWORD_STOP)]
    assert state(*entries) is State.OPTED_OUT
    # Unticking and ticking "Text message ok" again does not override the client's STOP.
    entries += [e(Event.TEXT_OK_UNCHECKED), e(Event.TEXT_OK_CHECKED)]
    assert state(*entries) is State.OPTED_OUT
    # Nor do help requests or confirmations.
    entries += [e(Event.HELP_REQUESTED), e(Event.CONFIRMATION_SENT)]
    assert state(*entries) is State.OPTED_OUT


def test_start_after_stop_opts_back_in_and_ticks_text_ok():
    entries = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.KEYWORD_STOP), e(Event.TEXT_OK_UNCHECKED)]
    consent = fold([*entries, e(Event.KEYWORD_START)])
    assert consent.state is State.OPTED_IN
    assert consent.text_ok is True


def test_delete_then_re_add_with_text_ok_is_the_clinicians_re_enable_path():
    opted_out = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.KEYWORD_STOP)]
    deleted = [*opted_out, e(Event.NUMBER_DELETED)]
    assert state(*deleted) is State.NO_NUMBER
    re_added = [*deleted, e(Event.NUMBER_ADDED)]
    assert state(*re_added) is State.NOT_GIVEN  # the box must be ticked again
    assert state(*re_added, e(Event.TEXT_OK_CHECKED)) is State.OPTED_IN


def test_re_adding_without_deleting_does_not_clear_a_stop():
    # Saving the same number again is not a change at all.
    opted_out = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.KEYWORD_STOP)]
    assert state(*opted_out, e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)) is State.OPTED_OUT


def test_changing_to_another_number_needs_text_ok_again():
    base = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)]
    changed = fold([*base, e(Event.NUMBER_CHANGED, B)])
    assert changed.state is State.NOT_GIVEN
    assert changed.phone == B
    assert state(*base, e(Event.NUMBER_CHANGED, B), e(Event.TEXT_OK_CHECKED, B)) is State.OPTED_IN


def test_a_reply_from_an_old_number_does_not_count():
    entries = [e(Event.NUMBER_ADDED), e(Event.NUMBER_CHANGED, B), e(Event.TEXT_OK_CHECKED, B)]
    assert state(*entries, e(Event.KEYWORD_STOP, A)) is State.OPTED_IN
    assert state(*entries, e(Event.KEYWORD_STOP, B)) is State.OPTED_OUT


def test_stop_on_a_number_without_consent_still_blocks_a_later_tick():
    assert state(e(Event.NUMBER_ADDED), e(Event.KEYWORD_STOP), e(Event.TEXT_OK_CHECKED)) is State.OPTED_OUT


def test_unknown_event_is_refused():
    with pytest.raises(ValueError):
        fold([Entry("number_teleported", A)])


# -- changes_for_save: exactly what changed ---------------------------------------------


def test_saving_nothing_new_writes_nothing():
    assert changes_for_save(Consent(), None, False) == []
    current = Consent(phone=A, text_ok=True)
    assert changes_for_save(current, A, True) == []


def test_adding_a_number_with_text_ok():
    assert changes_for_save(Consent(), A, True) == [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)]
    assert changes_for_save(Consent(), A, False) == [e(Event.NUMBER_ADDED)]


def test_changing_the_number_keeps_text_ok_only_when_ticked_in_the_same_save():
    current = Consent(phone=A, text_ok=True)
    assert changes_for_save(current, B, True) == [e(Event.NUMBER_CHANGED, B), e(Event.TEXT_OK_CHECKED, B)]
    assert changes_for_save(current, B, False) == [e(Event.NUMBER_CHANGED, B)]


def test_toggling_text_ok_and_deleting():
    assert changes_for_save(Consent(phone=A), A, True) == [e(Event.TEXT_OK_CHECKED)]
    assert changes_for_save(Consent(phone=A, text_ok=True), A, False) == [e(Event.TEXT_OK_UNCHECKED)]
    assert changes_for_save(Consent(phone=A, text_ok=True), None, False) == [e(Event.NUMBER_DELETED)]


def test_ticking_text_ok_while_opted_out_is_recorded_but_stays_out():
    current = Consent(phone=A, text_ok=False, opted_out=True)
    entries = changes_for_save(current, A, True)
    assert entries == [e(Event.TEXT_OK_CHECKED)]
    assert fold(entries, start=current).state is State.OPTED_OUT


# -- keywords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["STOP", "stop", "  Stop \n", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "OptOut", "opt-out", "REVOKE",
     "remove", "Stop.", "STOP!"],
)
def test_stop_synonyms(body):
    assert classify(body) is Keyword.STOP


@pytest.mark.parametrize("body", ["START", " yes ", "unstop"])
def test_start_synonyms(body):
    assert classify(body) is Keyword.START


@pytest.mark.parametrize("body", ["HELP", "info "])
def test_help_synonyms(body):
    assert classify(body) is Keyword.HELP


@pytest.mark.parametrize("body", ["", "please stop", "STOP?", "thanks", "yes please", "!"])
def test_anything_else_is_not_a_keyword(body):
    assert classify(body) is Keyword.OTHER

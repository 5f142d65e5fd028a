"""The consent fold and the Client Info diff: plain unit tests, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.consent.keywords import Keyword, classify
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
    assert consent.ticked is True and consent.sms_allowed is True


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


def test_an_opt_out_in_the_clients_own_words_is_an_opt_out():
    entries = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.FREE_TEXT_REVOCATION)]
    assert state(*entries) is State.OPTED_OUT
    assert state(*entries, e(Event.TEXT_OK_CHECKED)) is State.OPTED_OUT
    assert state(*entries, e(Event.KEYWORD_START)) is State.OPTED_IN
    # From an old number it says nothing about the new one.
    assert state(e(Event.NUMBER_ADDED, B), e(Event.TEXT_OK_CHECKED, B), e(Event.FREE_TEXT_REVOCATION, A)) is (
        State.OPTED_IN)


def test_a_provider_block_holds_until_start_or_another_number():
    blocked = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.PROVIDER_BLOCK_SEEN)]
    assert state(*blocked) is State.CARRIER_BLOCKED
    assert not fold(blocked).sms_allowed
    # Unticking shows "not given"; ticking again does not lift the provider's block.
    assert state(*blocked, e(Event.TEXT_OK_UNCHECKED)) is State.NOT_GIVEN
    assert state(*blocked, e(Event.TEXT_OK_UNCHECKED), e(Event.TEXT_OK_CHECKED)) is State.CARRIER_BLOCKED
    # START from the phone lifts it; so does the provider opting the number in.
    assert state(*blocked, e(Event.KEYWORD_START)) is State.OPTED_IN
    assert state(*blocked, e(Event.PROVIDER_OPT_IN_REQUESTED)) is State.OPTED_IN
    # A STOP while blocked is an opt-out, and START lifts both.
    assert state(*blocked, e(Event.KEYWORD_STOP)) is State.OPTED_OUT
    assert state(*blocked, e(Event.KEYWORD_STOP), e(Event.KEYWORD_START)) is State.OPTED_IN
    # Deleting or changing the number ends it; a block about another number changes nothing.
    assert state(*blocked, e(Event.NUMBER_DELETED), e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)) is (
        State.OPTED_IN)
    assert state(*blocked, e(Event.NUMBER_CHANGED, B), e(Event.TEXT_OK_CHECKED, B)) is State.OPTED_IN
    assert state(e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.PROVIDER_BLOCK_SEEN, B)) is State.OPTED_IN


def test_since_is_the_time_of_the_entry_that_made_the_state():
    t = [datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=n) for n in range(8)]
    assert fold([]).since is None
    entries = [
        Entry(Event.NUMBER_ADDED, A, t[0]), Entry(Event.TEXT_OK_CHECKED, A, t[1]),
        Entry(Event.HELP_REQUESTED, A, t[2]), Entry(Event.CONFIRMATION_SENT, A, t[3]),
    ]
    assert fold(entries).since == t[1]  # help and confirmations leave the state as it was
    stopped = [*entries, Entry(Event.KEYWORD_STOP, A, t[4]), Entry(Event.TEXT_OK_CHECKED, A, t[5])]
    assert fold(stopped).since == t[4]  # a tick that cannot undo the STOP does not move it
    assert fold([*stopped, Entry(Event.NUMBER_DELETED, A, t[6])]).since == t[6]
    # A new number without consent is still "not given", but since that number arrived.
    changed = [Entry(Event.NUMBER_ADDED, A, t[0]), Entry(Event.NUMBER_CHANGED, B, t[7])]
    assert (fold(changed).state, fold(changed).since) == (State.NOT_GIVEN, t[7])


def test_replies_make_entries_only_when_they_change_something():
    opted_in = Consent(phone=A, ticked=True)
    opted_out = Consent(phone=A, ticked=True, opted_out_numbers=frozenset({A}))
    blocked = Consent(phone=A, ticked=True, carrier_blocked=True)
    assert reply_entry(opted_in, Keyword.STOP, A) == e(Event.KEYWORD_STOP)
    assert reply_entry(opted_in, Keyword.REVOCATION, A) == e(Event.FREE_TEXT_REVOCATION)
    assert reply_entry(blocked, Keyword.STOP, A) == e(Event.KEYWORD_STOP)
    assert reply_entry(opted_out, Keyword.STOP, A) is None
    assert reply_entry(opted_out, Keyword.REVOCATION, A) is None
    assert reply_entry(opted_out, Keyword.START, A) == e(Event.KEYWORD_START)
    assert reply_entry(blocked, Keyword.START, A) == e(Event.KEYWORD_START)
    assert reply_entry(opted_in, Keyword.START, A) is None
    assert reply_entry(Consent(phone=A), Keyword.START, A) is None  # START does not tick the box for staff
    assert reply_entry(opted_out, Keyword.HELP, A) == e(Event.HELP_REQUESTED)
    assert reply_entry(opted_in, Keyword.OTHER, A) is None


def test_the_provider_is_asked_only_when_a_save_gives_consent():
    none, given = Consent(), Consent(phone=A, ticked=True)
    assert needs_provider_check(none, given)
    assert needs_provider_check(Consent(phone=A), given)
    assert needs_provider_check(given, Consent(phone=B, ticked=True))
    assert not needs_provider_check(given, given)
    assert not needs_provider_check(none, Consent(phone=A))
    out = frozenset({A})
    assert not needs_provider_check(Consent(phone=A, opted_out_numbers=out),
                                    Consent(phone=A, ticked=True, opted_out_numbers=out))
    blocked = Consent(phone=A, ticked=True, carrier_blocked=True)
    assert not needs_provider_check(Consent(phone=A, carrier_blocked=True), blocked)


def test_unknown_event_is_refused():
    with pytest.raises(ValueError):
        fold([Entry("number_teleported", A)])


# -- changes_for_save: exactly what changed ---------------------------------------------


def test_saving_nothing_new_writes_nothing():
    assert changes_for_save(Consent(), None, False) == []
    current = Consent(phone=A, ticked=True)
    assert changes_for_save(current, A, True) == []


def test_adding_a_number_with_text_ok():
    assert changes_for_save(Consent(), A, True) == [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)]
    assert changes_for_save(Consent(), A, False) == [e(Event.NUMBER_ADDED)]


def test_changing_the_number_keeps_text_ok_only_when_ticked_in_the_same_save():
    current = Consent(phone=A, ticked=True)
    assert changes_for_save(current, B, True) == [e(Event.NUMBER_CHANGED, B), e(Event.TEXT_OK_CHECKED, B)]
    assert changes_for_save(current, B, False) == [e(Event.NUMBER_CHANGED, B)]


def test_toggling_text_ok_and_deleting():
    assert changes_for_save(Consent(phone=A), A, True) == [e(Event.TEXT_OK_CHECKED)]
    assert changes_for_save(Consent(phone=A, ticked=True), A, False) == [e(Event.TEXT_OK_UNCHECKED)]
    assert changes_for_save(Consent(phone=A, ticked=True), None, False) == [e(Event.NUMBER_DELETED)]


def test_ticking_text_ok_while_opted_out_is_recorded_but_stays_out():
    # The box shows unticked after STOP (whatever was ticked before): a tick is what the
    # clinician did, so it is recorded, every time, and texting stays off.
    for ticked in (False, True):
        current = Consent(phone=A, ticked=ticked, opted_out_numbers=frozenset({A}))
        entries = changes_for_save(current, A, True)
        assert entries == [e(Event.TEXT_OK_CHECKED)]
        after = fold(entries, start=current)
        assert (after.state, after.sms_allowed) == (State.OPTED_OUT, False)
        # Saving the box unticked, as it is shown, records nothing.
        assert changes_for_save(current, A, False) == []


def test_saving_a_blocked_number_as_shown_records_nothing_and_a_tick_keeps_the_block():
    blocked = fold([e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.PROVIDER_BLOCK_SEEN)])
    assert (blocked.state, blocked.sms_allowed) == (State.CARRIER_BLOCKED, False)
    assert changes_for_save(blocked, A, False) == []
    ticked = changes_for_save(blocked, A, True)
    assert ticked == [e(Event.TEXT_OK_CHECKED)]
    assert fold(ticked, start=blocked).state is State.CARRIER_BLOCKED
    assert not needs_provider_check(blocked, fold(ticked, start=blocked))


# -- the opt-out belongs to the number (issue 11) ------------------------------------


STOPPED_A = [e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.KEYWORD_STOP)]


def test_changing_a_stopped_number_to_another_and_back_keeps_it_opted_out():
    there = [*STOPPED_A, e(Event.NUMBER_CHANGED, B), e(Event.TEXT_OK_CHECKED, B)]
    assert state(*there) is State.OPTED_IN  # B never opted out
    back = [*there, e(Event.NUMBER_CHANGED, A)]
    assert state(*back) is State.OPTED_OUT
    assert state(*back, e(Event.TEXT_OK_CHECKED, A)) is State.OPTED_OUT
    # The same through changes_for_save, ticking in the same save.
    consent = fold(there)
    entries = changes_for_save(consent, A, True)
    assert entries == [e(Event.NUMBER_CHANGED, A), e(Event.TEXT_OK_CHECKED, A)]
    assert fold(entries, start=consent).state is State.OPTED_OUT


def test_deleting_another_number_lifts_nothing():
    # A stopped; the client's number became B, B was deleted, then A was added again.
    entries = [*STOPPED_A, e(Event.NUMBER_CHANGED, B), e(Event.NUMBER_DELETED, B), e(Event.NUMBER_ADDED, A),
               e(Event.TEXT_OK_CHECKED, A)]
    assert state(*entries) is State.OPTED_OUT


def test_deleting_the_stopped_number_then_adding_it_again_is_the_re_enable_path():
    entries = [*STOPPED_A, e(Event.NUMBER_CHANGED, B), e(Event.NUMBER_CHANGED, A), e(Event.NUMBER_DELETED, A)]
    assert fold(entries).opted_out_numbers == frozenset()
    assert state(*entries, e(Event.NUMBER_ADDED, A)) is State.NOT_GIVEN
    assert state(*entries, e(Event.NUMBER_ADDED, A), e(Event.TEXT_OK_CHECKED, A)) is State.OPTED_IN
    # Deleting lifts only the deleted number's opt-out.
    two = [e(Event.NUMBER_ADDED, B), e(Event.KEYWORD_STOP, B), e(Event.NUMBER_CHANGED, A), e(Event.KEYWORD_STOP, A),
           e(Event.NUMBER_DELETED, A)]
    assert fold(two).opted_out_numbers == frozenset({B})


def test_start_lifts_the_opt_out_of_the_number_it_came_from():
    started = [*STOPPED_A, e(Event.KEYWORD_START, A), e(Event.NUMBER_CHANGED, B), e(Event.NUMBER_CHANGED, A)]
    assert fold(started).opted_out_numbers == frozenset()
    assert state(*started, e(Event.TEXT_OK_CHECKED, A)) is State.OPTED_IN
    # A START from another number says nothing about the current one.
    assert state(*STOPPED_A, e(Event.KEYWORD_START, B)) is State.OPTED_OUT


def test_a_stop_about_another_number_is_remembered_for_that_number_only():
    entries = [e(Event.NUMBER_ADDED, B), e(Event.TEXT_OK_CHECKED, B), e(Event.KEYWORD_STOP, A)]
    consent = fold(entries)
    assert (consent.state, consent.opted_out_numbers) == (State.OPTED_IN, frozenset({A}))
    assert state(*entries, e(Event.NUMBER_CHANGED, A), e(Event.TEXT_OK_CHECKED, A)) is State.OPTED_OUT


def test_the_box_shows_ticked_only_while_texts_may_be_sent():
    shown = {
        State.NO_NUMBER: fold([]),
        State.NOT_GIVEN: fold([e(Event.NUMBER_ADDED)]),
        State.OPTED_IN: fold([e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED)]),
        State.OPTED_OUT: fold(STOPPED_A),
        State.CARRIER_BLOCKED: fold([e(Event.NUMBER_ADDED), e(Event.TEXT_OK_CHECKED), e(Event.PROVIDER_BLOCK_SEEN)]),
    }
    for expected, consent in shown.items():
        assert consent.state is expected
        assert consent.sms_allowed is (expected is State.OPTED_IN)
    # The clinician's tick still stands underneath: START needs no new tick, only the client's word.
    assert shown[State.OPTED_OUT].ticked and shown[State.CARRIER_BLOCKED].ticked


def test_an_automatic_answer_changes_nothing():
    consent = fold(STOPPED_A[:2])
    assert fold([e(Event.AUTO_REPLY_SENT)], start=consent) == consent


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


@pytest.mark.parametrize("body", ["", "STOP?", "thanks", "yes please", "!", "stop by the office"])
def test_anything_else_is_not_a_keyword(body):
    assert classify(body) is Keyword.OTHER


@pytest.mark.parametrize(
    "body",
    ["Stop texting me", "please STOP texting me!", "Please unsubscribe", "unsubscribe me", "Don't text me",
     "do not text me anymore", "Please don\u2019t text me", "No more texts", "stop sending me these",
     "Remove me from this list", "leave me alone", "opt me out", "Take me off your list please",
     "Can you stop texting me?", "Stop please", "please stop", "stop now, thank you", "Opt out please",
     "I want to unsubscribe"],
)
def test_opt_outs_in_the_clients_own_words(body):
    assert classify(body) is Keyword.REVOCATION


@pytest.mark.parametrize(
    "body",
    ["don't stop", "Can't stop", "please don't stop texting me", "I can't stop texting me", "don't stop sending me",
     "Never stop texting me!", "I do not want you to stop texting me", "Why did you stop texting me?",
     "I didn't say don't text me", "won't stop", "Stop?", "stop by the office on Tuesday", "Thank you!",
     "I'll stop in later", "The reminders are great, thanks"],
)
def test_what_is_not_an_opt_out(body):
    assert classify(body) is not Keyword.REVOCATION
    assert classify(body) is not Keyword.STOP

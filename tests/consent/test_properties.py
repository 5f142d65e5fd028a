"""Property-based tests (hypothesis) of the consent state machine and of reading replies.

Random sequences of what happens to a client (the clinician saves a number from a
small pool with or without "Text message ok", deletes it, the client replies STOP,
START, HELP or asks to stop in their own words from their number or another one,
the provider blocks or opts a number in) drive the same pure functions the service
uses (changes_for_save, reply_entry, needs_provider_check) into a ledger. After every
step:
- the state is the fold of the ledger, computed incrementally and from scratch, and
  from any split point;
- a model written independently of the fold (plain flags and a set of the numbers
  that opted out) agrees on the state, and in particular no text is allowed to a
  number after its opt-out until a START from that number or that number is deleted
  and added again with "Text message ok" (changing the number away and back,
  A -> B -> A, does not count), nor while the provider blocks the number;
- read straight off the ledger: when the last STOP, START or deletion about the
  current number is a STOP, no text is allowed;
- ``since`` is the time of the last entry that changed the number or the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.consent.keywords import (
    HELP_WORDS,
    REVOCATION_PHRASES,
    START_WORDS,
    STOP_WORDS,
    Keyword,
    classify,
)
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

POOL = ("+12125550101", "+12125550102", "+12125550103")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# What the provider says when a save gives consent.
VERDICTS = ("clear", "opted_in_again", "blocked", "not_done")
REPLIES = (Keyword.STOP, Keyword.REVOCATION, Keyword.START, Keyword.HELP, Keyword.OTHER)
# Entries arriving about any number (e.g. a provider verdict racing a number change).
STRAY = (Event.KEYWORD_STOP, Event.FREE_TEXT_REVOCATION, Event.KEYWORD_START, Event.PROVIDER_BLOCK_SEEN,
         Event.PROVIDER_OPT_IN_REQUESTED, Event.HELP_REQUESTED, Event.CONFIRMATION_SENT)

saves = st.tuples(st.just("save"), st.sampled_from((None, *POOL)), st.booleans(), st.sampled_from(VERDICTS))
# None: from the client's current number.
replies = st.tuples(st.just("reply"), st.sampled_from(REPLIES), st.sampled_from((None, *POOL)))
strays = st.tuples(st.just("stray"), st.sampled_from(STRAY), st.sampled_from(POOL))
steps = st.lists(st.one_of(saves, replies, strays), max_size=40)


@dataclass
class Model:
    """What the rules say, in plain flags, without the ledger."""

    phone: str | None = None
    text_ok: bool = False  # the clinician's tick (or START) stands for this number
    blocked: bool = False  # the provider blocks this number
    # Numbers that said STOP (or asked in their own words) and have neither said START
    # since nor been deleted as the client's number.
    stopped: set[str] = field(default_factory=set)

    @property
    def opted_out(self) -> bool:
        return self.phone in self.stopped

    @property
    def state(self) -> State:
        if self.phone is None:
            return State.NO_NUMBER
        if self.opted_out:
            return State.OPTED_OUT
        if not self.text_ok:
            return State.NOT_GIVEN
        return State.CARRIER_BLOCKED if self.blocked else State.OPTED_IN

    @property
    def allowed(self) -> bool:
        return self.phone is not None and self.text_ok and not self.opted_out and not self.blocked

    def save(self, phone: str | None, text_ok: bool, verdict: str, provider: bool) -> None:
        was_allowed, old_phone = self.allowed, self.phone
        if phone is None:
            self.stopped.discard(self.phone)
            self.phone, self.text_ok, self.blocked = None, False, False
            return
        if phone != self.phone:
            self.phone, self.text_ok, self.blocked = phone, False, False
        # The box shows ticked only while texts may be sent; a save changes it where it differs.
        if text_ok != self.allowed:
            self.text_ok = text_ok
        if provider and self.allowed and (not was_allowed or old_phone != phone) and verdict == "blocked":
            self.blocked = True

    def about(self, event: Event, phone: str, from_reply: bool) -> None:
        if from_reply and phone != self.phone:
            return  # a reply from another number does not reach this client
        if event in (Event.KEYWORD_STOP, Event.FREE_TEXT_REVOCATION):
            self.stopped.add(phone)
        elif event is Event.KEYWORD_START:
            # A reply START counts when texting is held back by the client or the provider.
            if not from_reply or self.opted_out or (self.text_ok and self.blocked):
                self.stopped.discard(phone)
                if phone == self.phone:
                    self.blocked, self.text_ok = False, True
        elif phone != self.phone:
            return
        elif event is Event.PROVIDER_BLOCK_SEEN:
            self.blocked = True
        elif event is Event.PROVIDER_OPT_IN_REQUESTED:
            self.blocked = False


_KEYWORD_EVENTS = {Keyword.STOP: Event.KEYWORD_STOP, Keyword.REVOCATION: Event.FREE_TEXT_REVOCATION,
                   Keyword.START: Event.KEYWORD_START, Keyword.HELP: Event.HELP_REQUESTED}


@dataclass
class Client:
    """A client's ledger as the service writes it, with the incrementally folded consent."""

    provider: bool
    ledger: list[Entry] = field(default_factory=list)
    consent: Consent = Consent()

    def append(self, *entries: Entry) -> None:
        stamped = [Entry(e.event, e.phone, T0 + timedelta(seconds=len(self.ledger) + i))
                   for i, e in enumerate(entries)]
        self.ledger += stamped
        self.consent = fold(stamped, start=self.consent)

    def save(self, phone: str | None, text_ok: bool, verdict: str) -> None:
        before = self.consent
        entries = changes_for_save(before, phone, text_ok)
        if not entries:
            return
        self.append(*entries)
        if self.provider and needs_provider_check(before, self.consent) and verdict in ("opted_in_again", "blocked"):
            event = Event.PROVIDER_OPT_IN_REQUESTED if verdict == "opted_in_again" else Event.PROVIDER_BLOCK_SEEN
            self.append(Entry(event, self.consent.phone))

    def reply(self, keyword: Keyword, phone: str) -> None:
        # The service finds the client by their current number; a reply from another does not reach them.
        if phone != self.consent.phone:
            return
        entry = reply_entry(self.consent, keyword, phone)
        if entry is not None:
            self.append(entry, Entry(Event.CONFIRMATION_SENT, phone))


def _last_word_is_stop(ledger: list[Entry], number: str | None) -> bool:
    """Whether the ledger's last STOP, START or deletion about ``number`` is a STOP."""
    for entry in reversed(ledger):
        if entry.phone != number:
            continue
        if entry.event in (Event.KEYWORD_STOP, Event.FREE_TEXT_REVOCATION):
            return True
        if entry.event in (Event.KEYWORD_START, Event.NUMBER_DELETED):
            return False
    return False


def _since_from_scratch(ledger: list[Entry]) -> datetime | None:
    since, last = None, (None, State.NO_NUMBER)
    for n, entry in enumerate(ledger):
        folded = fold(ledger[: n + 1])
        if (folded.phone, folded.state) != last:
            since, last = entry.at, (folded.phone, folded.state)
    return since


A, B = POOL[0], POOL[1]


@settings(max_examples=300, deadline=None)
@given(steps=steps, provider=st.booleans(), split=st.integers(min_value=0, max_value=200))
# A stopped number changed to another and back, with the tick each time: still out.
@example(steps=[("save", A, True, "clear"), ("reply", Keyword.STOP, None), ("save", B, True, "clear"),
                ("save", A, True, "clear")], provider=False, split=0)
# ... and deleting the other number lifts nothing; deleting A itself does.
@example(steps=[("save", A, True, "clear"), ("reply", Keyword.STOP, None), ("save", B, False, "clear"),
                ("save", None, False, "clear"), ("save", A, True, "clear"), ("save", None, False, "clear"),
                ("save", A, True, "clear")], provider=False, split=3)
def test_the_state_is_the_fold_and_no_text_goes_after_an_opt_out(steps, provider, split):
    client, model = Client(provider), Model()
    for step in steps:
        kind = step[0]
        if kind == "save":
            _, phone, text_ok, verdict = step
            client.save(phone, text_ok, verdict)
            model.save(phone, text_ok, verdict, provider)
        elif kind == "reply":
            _, keyword, phone = step
            phone = phone or client.consent.phone
            if phone is not None:
                client.reply(keyword, phone)
                if keyword in _KEYWORD_EVENTS:
                    model.about(_KEYWORD_EVENTS[keyword], phone, from_reply=True)
        else:
            _, event, phone = step
            client.append(Entry(event, phone))
            model.about(event, phone, from_reply=False)

        consent = client.consent
        assert consent == fold(client.ledger)
        k = split % (len(client.ledger) + 1)
        assert fold(client.ledger[k:], start=fold(client.ledger[:k])) == consent
        assert (consent.phone, consent.state) == (model.phone, model.state)
        assert consent.sms_allowed == model.allowed
        if model.opted_out or model.blocked:
            assert not consent.sms_allowed
        if _last_word_is_stop(client.ledger, consent.phone):
            assert consent.state is State.OPTED_OUT and not consent.sms_allowed
        assert consent.since == _since_from_scratch(client.ledger)


def _any_case(draw, text: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in text)


spaces = st.text(alphabet=" \t\r\n", max_size=4)
gaps = st.text(alphabet=" \t\n", min_size=1, max_size=3)
_EXPECTED = {**{w: Keyword.STOP for w in STOP_WORDS}, **{w: Keyword.START for w in START_WORDS},
             **{w: Keyword.HELP for w in HELP_WORDS}}


@settings(max_examples=300, deadline=None)
@given(word=st.sampled_from(sorted(_EXPECTED)), data=st.data())
def test_a_keyword_in_any_case_with_any_whitespace_is_that_keyword(word, data):
    body = data.draw(spaces) + _any_case(data.draw, word) + data.draw(st.sampled_from(("", ".", "!"))) + data.draw(spaces)
    assert classify(body) is _EXPECTED[word]


@settings(max_examples=300, deadline=None)
@given(phrase=st.sampled_from(REVOCATION_PHRASES), data=st.data())
def test_an_opt_out_phrase_in_any_case_and_spacing_is_an_opt_out(phrase, data):
    words = [_any_case(data.draw, w) for w in phrase.split()]
    body = data.draw(st.sampled_from(("", "Hi, ", "Please "))) + "".join(
        w + (data.draw(gaps) if i < len(words) - 1 else "") for i, w in enumerate(words)
    ) + data.draw(st.sampled_from(("", ".", "!", " thanks", " please")))
    assert classify(body) is Keyword.REVOCATION


@settings(max_examples=300, deadline=None)
@given(
    phrase=st.sampled_from(REVOCATION_PHRASES),
    guard=st.sampled_from(("don't", "Can't", "never", "I do not want you to", "why did you", "won't", "I didn't")),
    data=st.data(),
)
def test_a_negated_or_questioned_phrase_is_not_an_opt_out(phrase, guard, data):
    body = _any_case(data.draw, f"{guard} {phrase}") + data.draw(st.sampled_from(("", "?", "!")))
    assert classify(body) not in (Keyword.STOP, Keyword.REVOCATION)

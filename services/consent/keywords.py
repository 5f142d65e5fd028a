"""Inbound SMS: what a reply means (the texts sent back are in services/consent/replies.py).

Three layers, most certain first:
1. the carriers' single-word keywords (STOP, START, HELP and their synonyms), whatever
   the case and the whitespace;
2. a STOP word with nothing but politeness around it ("Stop please", "please stop now,
   thank you", "opt out please"), unless it is a question ("Stop?");
3. a short list of phrases asking in the client's own words ("stop texting me", "please
   unsubscribe", "don't text me"). The FCC's 2024 rule (47 CFR 64.1200(a)(10)) says a
   revocation by "any reasonable means" counts, so these opt out too.

The phrase list is deliberately short and guarded: a phrase counts only when the rest
of the message holds no negation or question of why ("don't stop texting me", "I can't
stop", "why did you stop texting me?" are not opt-outs). A message we do not understand
changes no consent (it gets the once-a-day automatic answer); the client can always reply
STOP. An unguarded listed phrase counts wherever it stands: reading an opt-out where there
was none costs one "Reply START to resubscribe" text, missing one breaks the law.
"""

from __future__ import annotations

import enum
import re


class Keyword(enum.Enum):
    STOP = "stop"
    # An opt-out in the client's own words (layers 2 and 3).
    REVOCATION = "revocation"
    START = "start"
    HELP = "help"
    OTHER = "other"


STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "OPT-OUT", "REVOKE", "REMOVE"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# Said in the client's own words; matched as whole words, apostrophes dropped ("don't" -> "dont").
REVOCATION_PHRASES = (
    "stop texting me", "stop messaging me", "stop sending me", "stop contacting me",
    "stop the texts", "stop these texts", "stop all texts",
    "please unsubscribe", "unsubscribe me", "i want to unsubscribe",
    "dont text me", "do not text me", "dont message me", "do not message me",
    "dont contact me", "do not contact me", "never text me",
    "no more texts", "no more text messages", "no more messages",
    "remove me", "opt me out", "take me off your list", "take me off the list", "leave me alone",
)
# Words that turn a phrase around, or ask about it rather than ask for it.
_GUARDS = frozenset({
    "not", "dont", "doesnt", "didnt", "cant", "cannot", "wont", "wouldnt", "shouldnt", "isnt", "arent",
    "never", "why",
})
# Politeness that may surround a single STOP word ("Stop please", "please stop now, thanks").
_POLITE = frozenset({"please", "pls", "plz", "now", "thanks", "thank", "you", "ok", "okay", "asap", "just"})
_APOSTROPHES = re.compile(r"['\u2019\u02bc`]")
_NOT_WORD = re.compile(r"[^a-z0-9]+")

def _words(body: str) -> list[str]:
    text = _APOSTROPHES.sub("", body.lower())
    return [w for w in _NOT_WORD.split(text) if w]


def _is_revocation(body: str) -> bool:
    words = _words(body)
    if not words:
        return False
    core = "".join(w for w in words if w not in _POLITE).upper()
    if core in STOP_WORDS and "?" not in body:  # "Stop?" asks; "Opt out, please" does not
        return True
    for phrase in REVOCATION_PHRASES:
        wanted = phrase.split()
        for start in range(len(words) - len(wanted) + 1):
            if words[start:start + len(wanted)] == wanted:
                rest = words[:start] + words[start + len(wanted):]
                if not _GUARDS.intersection(rest):
                    return True
    return False


def classify(body: str) -> Keyword:
    """What a reply means (see the module docstring); OTHER when it asks for nothing we act on.

    A single keyword ignores case and whitespace ("  Stop " is STOP), and trailing
    punctuation is forgiven ("Stop." is STOP): honouring an opt-out that a person
    clearly meant matters more than literal matching.
    """
    word = "".join(body.split()).upper().rstrip(".!")
    if word in STOP_WORDS:
        return Keyword.STOP
    if word in START_WORDS:
        return Keyword.START
    if word in HELP_WORDS:
        return Keyword.HELP
    if _is_revocation(body):
        return Keyword.REVOCATION
    return Keyword.OTHER

"""Inbound SMS keywords and the texts sent back (no practice name, no PHI)."""

from __future__ import annotations

import enum


class Keyword(enum.Enum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    OTHER = "other"


_STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "OPT-OUT", "REVOKE", "REMOVE"})
_START = frozenset({"START", "YES", "UNSTOP"})
_HELP = frozenset({"HELP", "INFO"})

OPTED_OUT_REPLY = (
    "You have been unsubscribed from Confidant secure messaging alerts: "
    "You will no longer receive text messages. Reply START to resubscribe."
)
OPTED_IN_REPLY = "You have been resubscribed to text alerts. Reply STOP to unsubscribe."
HELP_REPLY = (
    "Confidant secure messaging alerts. Reply STOP to unsubscribe. "
    "Msg & data rates may apply. Contact your practice for help."
)


def classify(body: str) -> Keyword:
    """The keyword the whole message is, ignoring case and whitespace ("  Stop " is STOP).

    Trailing punctuation is forgiven too ("Stop." is STOP): honouring an opt-out that a
    person clearly meant matters more than literal matching.
    """
    word = "".join(body.split()).upper().rstrip(".!")
    if word in _STOP:
        return Keyword.STOP
    if word in _START:
        return Keyword.START
    if word in _HELP:
        return Keyword.HELP
    return Keyword.OTHER

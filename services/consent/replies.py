"""The texts consent sends back to a client's phone: STOP's and START's confirmations, the
HELP answer and the once-a-day automatic answer to a text that is not a keyword.

Every text names the practice ("Lakeside Counseling: ...") and never the vendor: the client
knows their practice, not us, and carriers require the program's name. Where no one practice
can be named (a number that is no client's, or one that clients of several practices share)
the wording is neutral: naming one would be a guess, and naming the vendor tells the client
nothing. HELP gives how to reach the practice (its phone, its email, or both, from auth's
Practice; ``CONFIDANT_CONSENT_HELP_CONTACT`` when it has neither), how to stop, and "Msg & data
rates may apply", as carriers require. No text carries PHI: no client name, no message words.

Each text fits in two SMS segments (``MAX_REPLY_CHARS``): our wording is plain ASCII, and a
practice name or contact too long to fit is shortened (the name) or replaced by the next, shorter
way of reaching the practice, down to "contact your practice", which always fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_REPLY_CHARS = 320
# "your practice": the contact that needs no practice, and the setting's default.
GENERIC_CONTACT = "your practice"
# The shortest a practice's name is cut to before a contact is given up for a shorter one.
_MIN_NAME_CHARS = 24
_ELLIPSIS = "..."
# What the confirmations say they are about when no practice can be named.
NEUTRAL_PROGRAM = "Secure message alerts"


@dataclass(frozen=True)
class Sender:
    """Whom a text speaks for. ``name`` None: no one practice can be named (neutral wording)."""

    name: str | None = None
    # How clients reach the practice: its phone as people read it, its email; either may be empty.
    phone: str = ""
    email: str = ""
    # The configured contact for when the practice gives neither (or they do not fit).
    fallback: str = GENERIC_CONTACT

    def _contacts(self) -> Iterator[str]:
        """Ways to reach the practice, the most helpful first, the last always short."""
        if self.name is not None:
            if self.phone and self.email:
                yield f"call {self.phone} or email {self.email}"
            if self.phone:
                yield f"call {self.phone}"
            if self.email:
                yield f"email {self.email}"
        yield f"contact {self.fallback}"
        yield f"contact {GENERIC_CONTACT}"


def _shorten(name: str, room: int) -> str:
    return name if len(name) <= room else name[: room - len(_ELLIPSIS)].rstrip() + _ELLIPSIS


def _render(sender: Sender, body: Callable[[str], str], neutral_name: str | None = None) -> str:
    """``body(contact)`` after the practice's name (``neutral_name`` when there is none to
    name), within MAX_REPLY_CHARS."""
    name = " ".join(sender.name.split()) if sender.name else neutral_name
    for contact in sender._contacts():
        text = body(contact)
        if name is None:
            if len(text) <= MAX_REPLY_CHARS:
                return text
            continue
        room = MAX_REPLY_CHARS - len(text) - len(": ")
        if room >= min(len(name), _MIN_NAME_CHARS):
            return f"{_shorten(name, room)}: {text}"
    raise AssertionError("the generic contact always fits")  # pinned by the tests


def opted_out(sender: Sender) -> str:
    """STOP's confirmation (the one text a number gets after it opts out)."""
    return _render(sender, lambda _: (
        "You are unsubscribed and will get no more texts from this number. Reply START to resubscribe."),
        NEUTRAL_PROGRAM)


def opted_in(sender: Sender) -> str:
    """START's confirmation."""
    return _render(sender, lambda _: (
        "You are resubscribed to text alerts. Reply HELP for help, STOP to unsubscribe. "
        "Msg & data rates may apply."), NEUTRAL_PROGRAM)


def help_text(sender: Sender) -> str:
    """The HELP/INFO answer: whose alerts these are, whom to ask, how to stop, rates."""
    return _render(sender, lambda contact: (
        f"Secure message alerts. For help, {contact}. Reply STOP to unsubscribe. Msg & data rates may apply."))


def auto_reply(sender: Sender) -> str:
    """The once-a-day answer to a text that is not a keyword: this number takes no messages,
    the secure way to write, how to reach the practice, and 911 / 988 for emergencies."""
    us = " us" if sender.name else ""
    return _render(sender, lambda contact: (
        "This number sends alerts only and cannot take messages. "
        f"To send{us} a message, use the link in your secure message email or the Client Portal, or {contact}. "
        "In an emergency, call 911, or call or text 988 (Suicide & Crisis Lifeline)."))

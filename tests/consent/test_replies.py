"""The texts sent back to a client's phone: plain unit tests and a hypothesis property, no database.

Every reply names the practice and never the vendor; HELP gives how to reach the practice,
how to stop and the rates; the automatic answer gives the secure way to write and 911 / 988;
and every text, whatever the practice's name and contact, fits in two SMS segments.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consent import replies
from services.consent.phones import for_people
from services.consent.replies import MAX_REPLY_CHARS, Sender

ALL_REPLIES = (replies.opted_out, replies.opted_in, replies.help_text, replies.auto_reply)
LAKESIDE = Sender("Lakeside Counseling", phone="(212) 555-0100", email="office@lakeside.test")


@pytest.mark.parametrize("render", ALL_REPLIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("sender", [
    LAKESIDE, Sender("Lakeside Counseling"), Sender("Lakeside Counseling", email="office@lakeside.test"),
    Sender("Lakeside Counseling", fallback="(646) 555-0199"),
], ids=["phone and email", "no contact", "email only", "fallback contact"])
def test_every_reply_names_the_practice_and_never_the_vendor(render, sender):
    text = render(sender)
    assert text.startswith("Lakeside Counseling: ")
    assert "confidant" not in text.lower()
    assert len(text) <= MAX_REPLY_CHARS
    assert text.isascii()  # our wording never forces the 70-character UCS-2 segments


@pytest.mark.parametrize("render", ALL_REPLIES, ids=lambda f: f.__name__)
def test_without_one_practice_the_wording_is_neutral(render):
    text = render(Sender())
    assert "confidant" not in text.lower()
    assert "Lakeside" not in text
    assert len(text) <= MAX_REPLY_CHARS


def test_stop_and_start_say_what_happened_and_how_to_undo_it():
    assert replies.opted_out(LAKESIDE) == (
        "Lakeside Counseling: You are unsubscribed and will get no more texts from this number. "
        "Reply START to resubscribe.")
    assert replies.opted_in(LAKESIDE) == (
        "Lakeside Counseling: You are resubscribed to text alerts. Reply HELP for help, STOP to unsubscribe. "
        "Msg & data rates may apply.")
    assert replies.opted_out(Sender()).startswith("Secure message alerts: You are unsubscribed")


def test_help_gives_the_practices_phone_or_email_how_to_stop_and_the_rates():
    assert replies.help_text(LAKESIDE) == (
        "Lakeside Counseling: Secure message alerts. For help, call (212) 555-0100 or email office@lakeside.test. "
        "Reply STOP to unsubscribe. Msg & data rates may apply.")
    assert "For help, call (212) 555-0100. " in replies.help_text(Sender("Lakeside Counseling", phone="(212) 555-0100"))
    assert "For help, email office@lakeside.test. " in replies.help_text(
        Sender("Lakeside Counseling", email="office@lakeside.test"))
    # Neither: the configured contact.
    assert "For help, contact (646) 555-0199. " in replies.help_text(
        Sender("Lakeside Counseling", fallback="(646) 555-0199"))
    # Without a practice, never the practice's details (there are none to give) but the setting's.
    assert replies.help_text(Sender(fallback="(646) 555-0199")) == (
        "Secure message alerts. For help, contact (646) 555-0199. Reply STOP to unsubscribe. "
        "Msg & data rates may apply.")


def test_the_automatic_answer_says_no_messages_here_the_secure_way_and_emergencies():
    text = replies.auto_reply(LAKESIDE)
    assert text == (
        "Lakeside Counseling: This number sends alerts only and cannot take messages. To send us a message, "
        "use the link in your secure message email or the Client Portal, or call (212) 555-0100 or email "
        "office@lakeside.test. In an emergency, call 911, or call or text 988 (Suicide & Crisis Lifeline).")
    neutral = replies.auto_reply(Sender())
    for part in ("cannot take messages", "secure message email", "Client Portal", "contact your practice",
                 "911", "988 (Suicide & Crisis Lifeline)"):
        assert part in neutral


def test_a_long_name_is_shortened_and_a_long_contact_gives_way_to_a_shorter_one():
    long_name = "The Very Long Name of a Counseling and Family Therapy Practice " * 3
    text = replies.auto_reply(Sender(long_name, phone="(212) 555-0100"))
    assert len(text) <= MAX_REPLY_CHARS
    assert text.startswith("The Very Long Name of a Counseling") and "...: This number" in text
    assert "call (212) 555-0100" in text
    long_email = "appointments." + "x" * 200 + "@lakeside.test"
    text = replies.auto_reply(Sender("Lakeside Counseling", phone="(212) 555-0100", email=long_email))
    assert text.startswith("Lakeside Counseling: ") and "call (212) 555-0100." in text and long_email not in text
    text = replies.help_text(Sender("Lakeside Counseling", email=long_email, fallback="y" * 100))
    assert len(text) <= MAX_REPLY_CHARS and text.startswith("Lakeside Counseling: ")


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=200).filter(
    lambda n: n.strip() and "confidant" not in n.lower())
emails = st.one_of(st.just(""), st.text("abcdefghij.@", min_size=3, max_size=254))
fallbacks = st.text("abcdefghij (),.-0123456789", min_size=1, max_size=100).filter(lambda f: f.strip())


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.none(), names), phone=st.sampled_from(("", "(212) 555-0100", "+44 20 7183 8750")),
       email=emails, fallback=fallbacks)
def test_every_reply_fits_two_segments_and_names_the_practice_whatever_its_details(name, phone, email, fallback):
    sender = Sender(name, phone=phone, email=email, fallback=fallback)
    for render in ALL_REPLIES:
        text = render(sender)
        assert len(text) <= MAX_REPLY_CHARS
        assert "confidant" not in text.lower()
        if name is not None:
            shown = " ".join(name.split())
            prefix = text.split(": ", 1)[0]
            assert prefix == shown or (prefix.endswith("...") and shown.startswith(prefix[:-3]))


def test_phone_numbers_are_written_for_people():
    assert for_people("+12125550100") == "(212) 555-0100"
    assert for_people("+442071838750") == "+44 20 7183 8750"
    assert for_people("+442071838750", "GB") == "020 7183 8750"
    assert for_people("not a number") == "not a number"

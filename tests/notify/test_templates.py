"""The canary test: every template rendered with canary strings in every input that could carry PHI.

A template may name the practice (never in a subject) and carry a link; it never carries
the recipient's address in its text, and a discreet client's alerts name no practice at all,
not even in the sender's name.
"""

from __future__ import annotations

import inspect

import pytest

from services.notify import render
from services.notify.transports import Email, Sms

PRACTICE = "Practice-CANARY-<b>&-4411"
ADDRESS = "canary-7c1e@recipient.test"
PHONE = "+12125550177"
LINK = "https://confidant.example.test/m/LINK-CANARY-token"
SENDER_TEMPLATE = "{practice} (secure messages)"
NEUTRAL_SENDER = "Secure Messages"


def brand(discreet: bool) -> render.Branding:
    return render.branding(SENDER_TEMPLATE, NEUTRAL_SENDER, PRACTICE, discreet)


def every_template(discreet: bool) -> dict[str, Email | Sms]:
    """Each template by name (both invitation variants)."""
    b = brand(discreet)
    return {
        "message_email": render.message_email(ADDRESS, b, LINK, 15),
        "message_sms": render.message_sms(PHONE, b),
        "staff_unread_email": render.staff_unread_email(ADDRESS, b, LINK),
        "account_locked_email": render.account_locked_email(ADDRESS, b, 15),
        "invitation_email(client)": render.invitation_email(ADDRESS, b, LINK, is_client=True),
        "invitation_email(staff)": render.invitation_email(ADDRESS, b, LINK, is_client=False),
        "password_reset_email": render.password_reset_email(ADDRESS, b, LINK),
    }


# Templates that say which practice the alert is from (the others need not).
NAMES_THE_PRACTICE = {"message_email", "message_sms", "staff_unread_email", "invitation_email(client)",
                      "invitation_email(staff)", "password_reset_email"}


def parts(item: Email | Sms) -> dict[str, str]:
    if isinstance(item, Sms):
        return {"sms": item.body}
    return {"subject": item.subject, "text": item.text_body, "html": item.html_body, "sender": item.sender_name}


def test_every_template_is_covered():
    templates = {name for name, fn in inspect.getmembers(render, inspect.isfunction)
                 if name.endswith(("_email", "_sms")) and not name.startswith("_") and fn.__module__ == render.__name__}
    assert templates == {name.split("(")[0] for name in every_template(False)}


@pytest.mark.parametrize("discreet", [False, True], ids=["signed", "discreet"])
def test_no_template_carries_the_recipient_or_names_the_practice_where_it_must_not(discreet):
    for name, item in every_template(discreet).items():
        for where, text in parts(item).items():
            assert ADDRESS not in text and PHONE not in text, (name, where)
            assert "CANARY" not in text or where != "subject", (name, where)
            if discreet:
                assert "Practice-CANARY" not in text and "Practice-CANARY" not in text.replace("&amp;", "&"), (
                    name, where)
        if isinstance(item, Email):
            assert item.sender_name == (NEUTRAL_SENDER if discreet else f"{PRACTICE} (secure messages)"), name
            # The link is the way in, in both parts.
            if name != "account_locked_email":
                assert LINK in item.text_body and f'href="{LINK}"' in item.html_body, name
            # The HTML escapes the practice's name (it is the practice's to choose, not ours).
            assert "<b>" not in item.html_body, name
        named = PRACTICE in (item.body if isinstance(item, Sms) else item.text_body)
        assert named == (not discreet and name in NAMES_THE_PRACTICE), name
        if not discreet and isinstance(item, Email) and name in NAMES_THE_PRACTICE:
            assert "Practice-CANARY-&lt;b&gt;&amp;-4411" in item.html_body, name


def test_discreet_subjects_are_neutral():
    signed, discreet = every_template(False), every_template(True)
    assert discreet["message_email"].subject == signed["message_email"].subject == "You have a new secure message"
    assert discreet["password_reset_email"].subject == "Reset your password"
    assert discreet["account_locked_email"].subject == "Your account was locked"
    assert discreet["message_sms"].body == (
        "You have a new secure message. Check your email to read it. Reply STOP to opt out.")
    assert signed["message_sms"].body == (
        f"{PRACTICE}: you have a new secure message. Check your email to read it. Reply STOP to opt out.")


def test_the_sender_name_is_one_line_and_falls_back_to_the_product():
    assert render.branding("{practice}", NEUTRAL_SENDER, "Lakeside\r\nBcc: x@y.test", False).sender_name == (
        "Lakeside Bcc: x@y.test")
    assert render.branding("{practice} via Confidant", NEUTRAL_SENDER, "", False) == render.Branding("Confidant", None)
    assert render.branding("{practice}", NEUTRAL_SENDER, "Lakeside", True) == render.Branding(
        NEUTRAL_SENDER, None, discreet=True)

"""The notification templates: every email pair and text, rendered through the one Jinja2 environment.

The canary test renders every template with canary strings in every input that could carry
PHI: a template may name the practice (never in a subject) and carry a link; it never carries
the recipient's address in its text, and a discreet client's alerts name no practice at all,
not even in the sender's name. Every email names the practice and never the vendor; a client's
message alerts say that secure messages are not for emergencies; the practice's time zone is
the one an email's times are given in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import jinja2
import pytest
from jinja2 import meta, nodes

from services.notify import render
from services.notify.transports import Email, Sms

PRACTICE = "Practice-CANARY-<b>&-4411"
ADDRESS = "canary-7c1e@recipient.test"
PHONE = "+12125550177"
LINK = "https://portal.example.test/m/LINK-CANARY-token"
INVITATION_LINK = "https://portal.example.test/credentials/INVITE-CANARY-token"
SENDER_TEMPLATE = "{practice} (secure messages)"
NEUTRAL_SENDER = "Secure Messages"
# 19:42 UTC on a July day: 3:42 PM in New York (EDT).
LINK_ENDS = datetime(2026, 7, 1, 19, 42, tzinfo=UTC)
NBSP = "\u00a0"


class RecordingRenderer(render.Renderer):
    """Notes each template rendered and the names of the values it was given."""

    def __init__(self) -> None:
        super().__init__(render.environment())
        self.given: dict[str, set[str]] = {}

    def render_email(self, template, to, brand, subject, preheader, emergency=False, **values):
        email = super().render_email(template, to, brand, subject, preheader, emergency, **values)
        layout = {"subject", "preheader", "header", "practice", "contact_phone", "contact_email", "emergency"}
        self.given.setdefault(template, set()).update(layout | set(values))
        return email

    def render_sms(self, template, to, brand):
        self.given.setdefault(f"sms/{template}", set()).add("practice")
        return super().render_sms(template, to, brand)


def brand(discreet: bool, name: str = PRACTICE, time_zone: str = "America/New_York") -> render.Branding:
    return render.branding(SENDER_TEMPLATE, NEUTRAL_SENDER, name, discreet, contact_phone="+12125550100",
                           contact_email="front-desk@practice.test", time_zone=time_zone)


def every_template(renderer: render.Renderer, b: render.Branding) -> dict[str, Email | Sms]:
    """Each email and text by name, with both variants where the recipient's role changes the words."""
    return {
        "message_email": renderer.message_email(ADDRESS, b, LINK, 15, LINK_ENDS),
        "message_and_invitation_email": renderer.message_and_invitation_email(
            ADDRESS, b, LINK, 15, INVITATION_LINK, LINK_ENDS),
        "message_sms": renderer.message_sms(PHONE, b),
        "staff_unread_email": renderer.staff_unread_email(ADDRESS, b, LINK),
        "account_locked_email(client)": renderer.account_locked_email(ADDRESS, b, 15, recipient="client"),
        "account_locked_email(owner)": renderer.account_locked_email(ADDRESS, b, 15, recipient="owner"),
        "account_locked_email(staff)": renderer.account_locked_email(ADDRESS, b, 15, recipient="staff"),
        "invitation_email(client)": renderer.invitation_email(ADDRESS, b, LINK, is_client=True),
        "invitation_email(staff)": renderer.invitation_email(ADDRESS, b, LINK, is_client=False),
        "password_reset_email": renderer.password_reset_email(ADDRESS, b, LINK),
    }


CLIENT_ALERTS = {"message_email", "message_and_invitation_email"}
EMAILS_WITHOUT_LINK = {"account_locked_email(client)", "account_locked_email(owner)", "account_locked_email(staff)"}


def parts(item: Email | Sms) -> dict[str, str]:
    if isinstance(item, Sms):
        return {"sms": item.body}
    return {"subject": item.subject, "text": item.text_body, "html": item.html_body, "sender": item.sender_name}


def template_files() -> set[str]:
    return {str(path.relative_to(render.TEMPLATES)) for path in render.TEMPLATES.rglob("*") if path.is_file()}


# -- the templates and their variables ---------------------------------------------------------


def test_every_template_file_is_rendered_and_every_email_is_a_pair():
    renderer = RecordingRenderer()
    for discreet in (False, True):
        every_template(renderer, brand(discreet))
    files = template_files()
    layouts = {"base.html", "base.txt", "_macros.html"}
    assert layouts <= files
    emails = {name.rsplit(".", 1)[0] for name in files - layouts if not name.startswith("sms/")}
    for name in emails:
        assert {f"{name}.txt", f"{name}.html"} <= files, f"{name} is not a .txt/.html pair"
    texts = {name.removesuffix(".txt") for name in files if name.startswith("sms/")}
    # Every file is used by the renderer, and the renderer uses no other.
    assert set(renderer.given) == emails | texts


def test_every_template_gets_every_variable_it_uses():
    """StrictUndefined fails a render that lacks a value; this also catches a branch no render took."""
    renderer = RecordingRenderer()
    for discreet in (False, True):
        every_template(renderer, brand(discreet))
    env = render.environment()

    def uses(name: str) -> set[str]:
        """The values a template reads from its context (not the macros and styles it imports)."""
        tree = env.parse(env.loader.get_source(env, name)[0])
        imported = {n if isinstance(n, str) else n[1] for node in tree.find_all(nodes.FromImport)
                    for n in node.names}
        return meta.find_undeclared_variables(tree) - imported

    layout = uses("base.txt") | uses("base.html")
    for template, given in renderer.given.items():
        if template.startswith("sms/"):
            assert uses(f"{template}.txt") <= given, template
            continue
        text, html = uses(f"{template}.txt"), uses(f"{template}.html")
        assert text | html | layout <= given, (template, (text | html | layout) - given)
        # The two parts of a pair say the same things.
        assert text == html, (template, text ^ html)


def test_a_missing_value_fails_the_render_instead_of_printing_nothing():
    env = render.environment()
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("message_alert.txt").render(subject="x")
    # Autoescape: on for HTML, off for plain text and texts.
    assert env.get_template("message_alert.html").render(
        subject="", preheader="", header="A<b>", practice="A<b>", contact_phone="", contact_email="",
        emergency=False, link="https://x.test/?a=1&b=2", window_minutes=15, ends_at=None,
    ).count("A&lt;b&gt;") == 3  # the header, the first sentence, the footer
    assert "A<b> sent you" in env.get_template("message_alert.txt").render(
        practice="A<b>", contact_phone="", contact_email="", emergency=False, link="l", window_minutes=15,
        ends_at=None)


# -- what they may and must say ------------------------------------------------------------------


@pytest.mark.parametrize("discreet", [False, True], ids=["signed", "discreet"])
def test_no_template_carries_the_recipient_or_names_the_practice_where_it_must_not(discreet):
    for name, item in every_template(render.Renderer(), brand(discreet)).items():
        for where, text in parts(item).items():
            assert ADDRESS not in text and PHONE not in text, (name, where)
            assert "CANARY" not in text or where != "subject", (name, where)
            if discreet:
                assert "Practice-CANARY" not in text and "Practice-CANARY" not in text.replace("&amp;", "&"), (
                    name, where)
                # Nor how to reach it.
                assert "front-desk@practice.test" not in text and "212-555-0100" not in text, (name, where)
        if isinstance(item, Email):
            assert item.sender_name == (NEUTRAL_SENDER if discreet else f"{PRACTICE} (secure messages)"), name
            # The link is the way in, in both parts.
            if name not in EMAILS_WITHOUT_LINK:
                assert LINK in item.text_body and f'href="{LINK}"' in item.html_body, name
            # The HTML escapes the practice's name (it is the practice's to choose, not ours).
            assert "<b>" not in item.html_body, name
        named = PRACTICE in (item.body if isinstance(item, Sms) else item.text_body)
        assert named == (not discreet), name
        if not discreet and isinstance(item, Email):
            assert "Practice-CANARY-&lt;b&gt;&amp;-4411" in item.html_body, name


@pytest.mark.parametrize("discreet", [False, True], ids=["signed", "discreet"])
def test_every_email_names_the_practice_and_never_the_vendor(discreet):
    """Defect 16: the reset email said "Reset your Confidant password"."""
    practice = "Harbor Light Therapy"
    b = brand(discreet, name=practice)
    for name, item in every_template(render.Renderer(), b).items():
        for where, text in parts(item).items():
            assert "confidant" not in text.lower(), (name, where)
        body = [item.body] if isinstance(item, Sms) else [item.text_body, item.html_body]
        for text in body:
            assert (practice in text) == (not discreet), name
        if isinstance(item, Email):
            assert practice not in item.subject, name
            # The practice's name heads the HTML (a discreet client's: the neutral name).
            header = re.search(r"<td[^>]*>([^<]+)</td>", item.html_body).group(1)
            assert header == (NEUTRAL_SENDER if discreet else practice), name
            if not discreet:
                # The footer says who sent it and how to reach them.
                footer = "Sent by Harbor Light Therapy · +1 212-555-0100 · front-desk@practice.test"
                assert footer in item.text_body, name
                assert footer.replace("·", "&middot;") in item.html_body, name


def test_the_product_name_is_not_the_fallback_sender():
    assert render.branding("{practice}", NEUTRAL_SENDER, "Lakeside\r\nBcc: x@y.test", False).sender_name == (
        "Lakeside Bcc: x@y.test")
    # No practice name to give: the neutral name, never the vendor's.
    assert render.branding("{practice} secure messages", NEUTRAL_SENDER, "", False) == render.Branding(
        NEUTRAL_SENDER, None)
    assert render.branding("{practice}", NEUTRAL_SENDER, "Lakeside", True) == render.Branding(
        NEUTRAL_SENDER, None, discreet=True)


@pytest.mark.parametrize("discreet", [False, True], ids=["signed", "discreet"])
def test_client_alerts_say_secure_messages_are_not_for_emergencies(discreet):
    for name, item in every_template(render.Renderer(), brand(discreet)).items():
        if not isinstance(item, Email):
            continue
        for text in (item.text_body, item.html_body):
            says = "Secure messages are not for emergencies." in text and "911" in text
            assert says == (name in CLIENT_ALERTS), name
            # A discreet client's mail must not say what kind of care it is about: no crisis line.
            assert ("988" in text) == (name in CLIENT_ALERTS and not discreet), name
        if name in CLIENT_ALERTS and not discreet:
            assert "call or text 988 (the Suicide & Crisis Lifeline). In an emergency, call 911." in item.text_body


def test_discreet_subjects_are_neutral():
    signed, discreet = (every_template(render.Renderer(), brand(d)) for d in (False, True))
    for name, item in discreet.items():
        if isinstance(item, Email):
            assert item.subject == signed[name].subject, name
    assert discreet["message_email"].subject == "You have a new secure message"
    assert discreet["message_and_invitation_email"].subject == "You have a new secure message"
    assert discreet["password_reset_email"].subject == "Reset your password"
    assert discreet["account_locked_email(client)"].subject == "Your account was locked"
    assert discreet["message_sms"].body == (
        "You have a new secure message. Check your email to read it. Reply STOP to opt out.")
    assert signed["message_sms"].body == (
        f"{PRACTICE}: you have a new secure message. Check your email to read it. Reply STOP to opt out.")


def test_the_combined_email_carries_both_links_each_as_a_button_and_as_text():
    email = render.Renderer().message_and_invitation_email(ADDRESS, brand(False), LINK, 15, INVITATION_LINK,
                                                           LINK_ENDS)
    assert "You have a secure message" in email.text_body
    assert "Choose a password for your Client Portal" in email.text_body
    assert f"View message: {LINK}" in email.text_body and f"Choose a password: {INVITATION_LINK}" in email.text_body
    assert email.text_body.index(LINK) < email.text_body.index(INVITATION_LINK)
    for link, label in ((LINK, "View message"), (INVITATION_LINK, "Choose a password")):
        anchors = re.findall(rf'<a href="{re.escape(link)}"[^>]*>([^<]+)</a>', email.html_body)
        assert anchors == [label, link], anchors
    assert "expires in 24 hours" in email.text_body


# -- times in the practice's time zone ----------------------------------------------------------


def test_the_link_says_when_it_ends_in_the_practices_time_zone():
    renderer = render.Renderer()
    for zone, shown in (("America/New_York", "3:42 PM EDT"), ("America/Los_Angeles", "12:42 PM PDT"),
                        ("Europe/Berlin", "9:42 PM CEST")):
        email = renderer.message_email(ADDRESS, brand(False, time_zone=zone), LINK, 15, LINK_ENDS)
        sentence = f"without signing in for 15 minutes, until {shown.replace(' ', NBSP)}."
        assert sentence in email.text_body and sentence in email.html_body, zone
    # In winter the abbreviation changes with the offset.
    assert render.local_time(datetime(2026, 1, 15, 20, 42, tzinfo=UTC), "America/New_York") == (
        f"3:42{NBSP}PM{NBSP}EST")
    # No zone known (an older auth, an empty value) or one that does not exist: the duration alone.
    for zone in ("", "Mars/Olympus_Mons"):
        email = renderer.message_email(ADDRESS, brand(False, time_zone=zone), LINK, 15, LINK_ENDS)
        assert "without signing in for 15 minutes. After that" in email.text_body, zone
    email = renderer.message_email(ADDRESS, brand(False), LINK, 1, None)
    assert "without signing in for 1 minute. After that" in email.text_body

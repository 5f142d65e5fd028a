"""The texts of notifications, rendered from ``templates/`` through one Jinja2 environment.

Every email is a pair, ``<name>.txt`` and ``<name>.html``, on the layouts ``base.txt`` and
``base.html`` (the practice's name as the header, one clear button with its link repeated
as text, a footer); texts are ``templates/sms/<name>.txt``. Keeping every word a person reads
in the template files puts them in one place, under the same tests (StrictUndefined: a
template that names a variable the code does not give fails instead of printing nothing).
HTML is autoescaped; plain text and texts are not (escaping would show ``&amp;``).

None carries PHI: no message text, no clinician's or client's name, no diagnosis; only the
practice's name and contact (in bodies, never in a subject) and a link. Every one names the
practice, never the vendor. A discreet client's emails (``Branding.practice`` is None) name
no practice anywhere: a neutral sender name, subject, header and body. A client's message
alerts say that secure messages are not for emergencies, with 988 and 911.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import phonenumbers

from services.notify.config import PRACTICE_PLACEHOLDER
from services.notify.transports import Email, Sms

TEMPLATES = Path(__file__).resolve().parent / "templates"

MESSAGE_EMAIL_SUBJECT = "You have a new secure message"
STAFF_UNREAD_SUBJECT = "You have an unread secure message"
ACCOUNT_LOCKED_SUBJECT = "Your account was locked"
INVITATION_CLIENT_SUBJECT = "Set up your Client Portal"
INVITATION_STAFF_SUBJECT = "You're invited to secure messaging"
PASSWORD_RESET_SUBJECT = "Reset your password"


@dataclass(frozen=True)
class Branding:
    """Who an email says it is from, and the practice it names (None: discreet, or no name known)."""

    sender_name: str
    practice: str | None
    # A discreet client's: neutral subjects, header and body.
    discreet: bool = False
    # How the practice is reached (shown in footers), formatted for people; '' when unknown.
    contact_phone: str = ""
    contact_email: str = ""
    # The practice's IANA time zone, for any time an email shows; '' when unknown.
    time_zone: str = ""

    @property
    def header(self) -> str:
        return self.practice or self.sender_name


def branding(sender_template: str, neutral_sender_name: str, practice_name: str, discreet: bool, *,
             contact_phone: str = "", contact_email: str = "", time_zone: str = "") -> Branding:
    """The From name ``sender_template`` gives (``{practice}`` becomes the name), or the neutral one.

    A discreet client's alerts, and the rare email with no practice name to give, carry the
    neutral name: never the vendor's.
    """
    if discreet:
        return Branding(neutral_sender_name, None, discreet=True, time_zone=time_zone)
    # A display name is one line of a header.
    practice = " ".join(practice_name.split())
    if not practice:
        return Branding(neutral_sender_name, None, time_zone=time_zone)
    return Branding(sender_template.replace(PRACTICE_PLACEHOLDER, practice), practice,
                    contact_phone=_phone_for_people(contact_phone), contact_email=" ".join(contact_email.split()),
                    time_zone=time_zone)


def _phone_for_people(e164: str) -> str:
    """+12125550100 as +1 212-555-0100; what auth stored, on one line, if it does not parse."""
    e164 = " ".join(e164.split())
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def local_time(moment: datetime, time_zone: str) -> str | None:
    """``moment`` as the practice reads a clock ("3:42 PM EDT"); None without a known zone."""
    if not time_zone:
        return None
    try:
        local = moment.astimezone(ZoneInfo(time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        return None
    # No-break spaces: "3:42 PM EDT" stays on one line.
    return f"{local:%I:%M}".lstrip("0") + f"\u00a0{local:%p}\u00a0{local.tzname()}"


def magic_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/m/{token}"


def conversation_url(public_url: str, conversation_id: str) -> str:
    return f"{public_url}/?conversation={quote(conversation_id, safe='')}"


def credential_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/credentials/{token}"


def environment(folder: Path = TEMPLATES) -> jinja2.Environment:
    """The one environment notify renders with (built by ``create_service``, passed in)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


_BLANK_LINES = re.compile(r"\n{3,}")


def _tidy_text(text: str) -> str:
    """Plain text as mail clients show it best: no trailing spaces, one blank line between paragraphs."""
    lines = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return _BLANK_LINES.sub("\n\n", lines) + "\n"


class Renderer:
    """Every email and text notify sends, from the templates of one Jinja2 environment."""

    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self._env = env or environment()

    def render_email(self, template: str, to: str, brand: Branding, subject: str, preheader: str,
                     emergency: bool = False, **values: object) -> Email:
        """``template``.txt and ``template``.html with the layout's values and the template's own."""
        context = {
            "subject": subject,
            "preheader": preheader,
            "header": brand.header,
            "practice": brand.practice,
            "contact_phone": brand.contact_phone,
            "contact_email": brand.contact_email,
            "emergency": emergency,
            **values,
        }
        text = self._env.get_template(f"{template}.txt").render(context)
        html = self._env.get_template(f"{template}.html").render(context)
        return Email(to=to, subject=subject, text_body=_tidy_text(text), html_body=html.strip() + "\n",
                     sender_name=brand.sender_name)

    def render_sms(self, template: str, to: str, brand: Branding) -> Sms:
        body = self._env.get_template(f"sms/{template}.txt").render(practice=brand.practice)
        return Sms(to=to, body=" ".join(body.split()))

    # -- a client's new message ----------------------------------------------------------------

    def message_email(self, to: str, brand: Branding, link: str, window_minutes: int,
                      ends_at: datetime | None = None) -> Email:
        """The alert with its quick sign-in link; ``ends_at``: when the link's window ends."""
        return self.render_email(
            "message_alert", to, brand, MESSAGE_EMAIL_SUBJECT, _intro(brand), emergency=True, link=link,
            window_minutes=window_minutes, ends_at=_ends(ends_at, brand),
        )

    def message_and_invitation_email(self, to: str, brand: Branding, link: str, window_minutes: int,
                                     invitation_link: str, ends_at: datetime | None = None) -> Email:
        """The alert and the Client Portal invitation in one email (a client with no password yet)."""
        return self.render_email(
            "message_alert_with_invitation", to, brand, MESSAGE_EMAIL_SUBJECT, _intro(brand), emergency=True,
            link=link, window_minutes=window_minutes, ends_at=_ends(ends_at, brand), invitation_link=invitation_link,
        )

    def message_sms(self, to: str, brand: Branding) -> Sms:
        return self.render_sms("message_alert", to, brand)

    # -- a staff member's unread message (no client or sender name) ----------------------------

    def staff_unread_email(self, to: str, brand: Branding, link: str) -> Email:
        return self.render_email("staff_unread_alert", to, brand, STAFF_UNREAD_SUBJECT,
                                 "You have an unread secure message.", link=link)

    # -- account notices ------------------------------------------------------------------------

    def account_locked_email(self, to: str, brand: Branding, minutes: int, *, recipient: str) -> Email:
        """``recipient``: "client", "owner" or "staff" (what to do if it wasn't them differs)."""
        return self.render_email("account_locked", to, brand, ACCOUNT_LOCKED_SUBJECT,
                                 "Sign-in to your account was locked for a while.", minutes=minutes,
                                 recipient=recipient)

    def invitation_email(self, to: str, brand: Branding, link: str, *, is_client: bool) -> Email:
        subject = INVITATION_CLIENT_SUBJECT if is_client else INVITATION_STAFF_SUBJECT
        return self.render_email("invitation", to, brand, subject, "Choose a password to set up your account.",
                                 link=link, is_client=is_client)

    def password_reset_email(self, to: str, brand: Branding, link: str) -> Email:
        return self.render_email("password_reset", to, brand, PASSWORD_RESET_SUBJECT,
                                 "Choose a new password with the link in this email.", link=link)


def _intro(brand: Branding) -> str:
    return f"{brand.practice} sent you a secure message." if brand.practice else "You have a new secure message."


def _ends(moment: datetime | None, brand: Branding) -> str | None:
    return local_time(moment, brand.time_zone) if moment is not None else None

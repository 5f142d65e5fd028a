"""The texts of notifications: plain text and HTML for every email, and the SMS texts.

None carries PHI: no message text, no clinician's or client's name, no diagnosis;
only the practice's name (never in a subject) and a link. A discreet client's
alerts (``Branding.practice`` is None) name no practice anywhere: a neutral
sender name, a neutral subject and body.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import quote

from services.notify.config import PRACTICE_PLACEHOLDER
from services.notify.transports import DEFAULT_SENDER_NAME, Email, Sms


@dataclass(frozen=True)
class Branding:
    """Who an email says it is from, and the practice it may name (None: discreet, name none)."""

    sender_name: str
    practice: str | None
    # A discreet client's: neutral subjects too.
    discreet: bool = False


def branding(sender_template: str, discreet_sender_name: str, practice_name: str, discreet: bool) -> Branding:
    """The From name ``sender_template`` gives (``{practice}`` becomes the name), or the neutral one."""
    if discreet:
        return Branding(discreet_sender_name, None, discreet=True)
    # A display name is one line of a header.
    practice = " ".join(practice_name.split())
    if not practice:
        return Branding(DEFAULT_SENDER_NAME, None)
    return Branding(sender_template.replace(PRACTICE_PLACEHOLDER, practice), practice)


MESSAGE_EMAIL_SUBJECT = "You have a new secure message"
STAFF_UNREAD_SUBJECT = "You have an unread secure message"
ACCOUNT_LOCKED_SUBJECT = "Your Confidant account was locked"
ACCOUNT_LOCKED_DISCREET_SUBJECT = "Your account was locked"
INVITATION_CLIENT_SUBJECT = "Set up your Client Portal"
INVITATION_STAFF_SUBJECT = "You're invited to Confidant"
PASSWORD_RESET_SUBJECT = "Reset your Confidant password"
PASSWORD_RESET_DISCREET_SUBJECT = "Reset your password"


def magic_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/m/{token}"


def conversation_url(public_url: str, conversation_id: str) -> str:
    return f"{public_url}/?conversation={quote(conversation_id, safe='')}"


def credential_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/credentials/{token}"


def _email(to: str, brand: Branding, subject: str, before: list[str], button: tuple[str, str] | None = None,
           after: list[str] | None = None) -> Email:
    """Paragraphs, an optional button (label, link) repeated as a plain link, more paragraphs."""
    after = after or []
    text_parts = [*before, *([f"{button[0]}: {button[1]}"] if button else []), *after]
    parts = "".join(f"<p>{html.escape(p)}</p>\n" for p in before)
    if button:
        label, link = html.escape(button[0]), html.escape(button[1], quote=True)
        parts += (
            f'<p><a href="{link}" style="display: inline-block; padding: 12px 20px; background: #0b6e4f;'
            f' color: #ffffff; text-decoration: none; border-radius: 6px;">{label}</a></p>\n'
            f'<p>{label}: <a href="{link}">{link}</a></p>\n'
        )
    parts += "".join(f"<p>{html.escape(p)}</p>\n" for p in after)
    body_html = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(subject)}</title></head>\n"
        '<body style="font-family: system-ui, sans-serif; line-height: 1.5; color: #1f2933; margin: 0; padding: 24px;">\n'
        f"{parts}</body></html>\n"
    )
    return Email(to=to, subject=subject, text_body="\n\n".join(text_parts) + "\n", html_body=body_html,
                 sender_name=brand.sender_name)


# -- a client's new message --------------------------------------------------------------------


def message_email(to: str, brand: Branding, link: str, window_minutes: int) -> Email:
    intro = f"{brand.practice} sent you a secure message." if brand.practice else "You have a new secure message."
    window = (
        f"This link lets you read and reply without signing in for {window_minutes} minutes. "
        "After that, sign in to your Client Portal."
    )
    return _email(to, brand, MESSAGE_EMAIL_SUBJECT, [intro], ("View message", link), [window])


def message_sms(to: str, brand: Branding) -> Sms:
    text = "you have a new secure message. Check your email to read it. Reply STOP to opt out."
    return Sms(to=to, body=f"{brand.practice}: {text}" if brand.practice else text[0].upper() + text[1:])


# -- a staff member's unread message (no client or sender name) ----------------------------


def staff_unread_email(to: str, brand: Branding, link: str) -> Email:
    where = f" at {brand.practice}" if brand.practice else ""
    return _email(
        to, brand, STAFF_UNREAD_SUBJECT, [f"You have an unread secure message in Confidant{where}."],
        ("Open the conversation", link),
        ["For privacy, this email does not contain the message. Sign in to read it."],
    )


# -- account notices ------------------------------------------------------------------------


def account_locked_email(to: str, brand: Branding, minutes: int) -> Email:
    account = "Confidant account" if not brand.discreet else "account"
    return _email(to, brand, ACCOUNT_LOCKED_DISCREET_SUBJECT if brand.discreet else ACCOUNT_LOCKED_SUBJECT, [
        f"Sign-in to your {account} was locked for {minutes} minutes after repeated failed sign-in attempts.",
        f"If this was you, wait {minutes} minutes and try again.",
        "If it wasn't you, contact your practice: someone may be trying to guess your password.",
    ])


def invitation_email(to: str, brand: Branding, link: str, *, is_client: bool) -> Email:
    if is_client:
        subject = INVITATION_CLIENT_SUBJECT
        who = brand.practice or "Your provider"
        intro = f"{who} invites you to its Client Portal, where you can exchange secure messages."
    else:
        subject = INVITATION_STAFF_SUBJECT
        intro = f"{brand.practice or 'Your practice'} invites you to Confidant, its secure messaging."
    return _email(
        to, brand, subject, [intro, "Choose a password to set up your account."], ("Choose a password", link),
        ["This link works once and expires in 24 hours. If you were not expecting it, you can ignore this email."],
    )


def password_reset_email(to: str, brand: Branding, link: str) -> Email:
    whose = f"your {brand.practice} account on Confidant" if brand.practice else "your account"
    return _email(
        to, brand, PASSWORD_RESET_DISCREET_SUBJECT if brand.discreet else PASSWORD_RESET_SUBJECT,
        [f"Someone asked to reset the password of {whose}."], ("Choose a new password", link),
        ["This link works once and expires in 1 hour. If you did not ask for it, ignore this email: "
         "your password stays as it is."],
    )

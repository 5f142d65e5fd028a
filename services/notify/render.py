"""The texts of notifications. None carries PHI: no message text, no clinician name."""

from __future__ import annotations

import html
from urllib.parse import quote

from services.notify.transports import Email, Sms

MESSAGE_EMAIL_SUBJECT = "You have a new secure message"


def magic_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/m/{token}"


def message_email(to: str, practice_name: str, link: str, window_minutes: int) -> Email:
    intro = f"{practice_name} sent you a secure message."
    window = (
        f"This link lets you read and reply without signing in for {window_minutes} minutes. "
        "After that, sign in to your Client Portal."
    )
    text = f"{intro}\n\nView message: {link}\n\n{window}\n"
    safe_link = html.escape(link, quote=True)
    body_html = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(MESSAGE_EMAIL_SUBJECT)}</title></head>\n"
        '<body style="font-family: system-ui, sans-serif; line-height: 1.5; color: #1f2933; margin: 0; padding: 24px;">\n'
        f"<p>{html.escape(intro)}</p>\n"
        f'<p><a href="{safe_link}" style="display: inline-block; padding: 12px 20px; background: #0b6e4f;'
        f' color: #ffffff; text-decoration: none; border-radius: 6px;">View message</a></p>\n'
        f'<p>View message: <a href="{safe_link}">{safe_link}</a></p>\n'
        f"<p>{html.escape(window)}</p>\n"
        "</body></html>\n"
    )
    return Email(to=to, subject=MESSAGE_EMAIL_SUBJECT, text_body=text, html_body=body_html)


def message_sms(to: str, practice_name: str) -> Sms:
    return Sms(
        to=to,
        body=f"{practice_name}: you have a new secure message. Check your email to read it. Reply STOP to opt out.",
    )


# -- A staff member's unread message (no PHI: no message text, no client or sender name) --

STAFF_UNREAD_SUBJECT = "You have an unread secure message"


def conversation_url(public_url: str, conversation_id: str) -> str:
    return f"{public_url}/?conversation={quote(conversation_id, safe='')}"


def staff_unread_email(to: str, link: str) -> Email:
    return _link_email(
        to, STAFF_UNREAD_SUBJECT,
        ["You have an unread secure message in Confidant."],
        "Open the conversation", link,
        ["For privacy, this email does not contain the message. Sign in to read it."],
    )


ACCOUNT_LOCKED_SUBJECT = "Your Confidant account was locked"


def account_locked_email(to: str, minutes: int) -> Email:
    paragraphs = [
        f"Sign-in to your Confidant account was locked for {minutes} minutes after repeated failed sign-in attempts.",
        f"If this was you, wait {minutes} minutes and try again.",
        "If it wasn't you, contact your practice: someone may be trying to guess your password.",
    ]
    text = "\n\n".join(paragraphs) + "\n"
    body_html = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(ACCOUNT_LOCKED_SUBJECT)}</title></head>\n"
        '<body style="font-family: system-ui, sans-serif; line-height: 1.5; color: #1f2933; margin: 0; padding: 24px;">\n'
        + "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
        + "</body></html>\n"
    )
    return Email(to=to, subject=ACCOUNT_LOCKED_SUBJECT, text_body=text, html_body=body_html)


# -- Invitations and password resets (no PHI: the practice's name and a link) --

INVITATION_CLIENT_SUBJECT = "Set up your Client Portal"
INVITATION_STAFF_SUBJECT = "You're invited to Confidant"
PASSWORD_RESET_SUBJECT = "Reset your Confidant password"


def credential_link_url(public_url: str, token: str) -> str:
    return f"{public_url}/credentials/{token}"


def _link_email(to: str, subject: str, paragraphs_before: list[str], button: str, link: str,
                paragraphs_after: list[str]) -> Email:
    text = "\n\n".join([*paragraphs_before, f"{button}: {link}", *paragraphs_after]) + "\n"
    safe_link = html.escape(link, quote=True)
    body_html = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(subject)}</title></head>\n"
        '<body style="font-family: system-ui, sans-serif; line-height: 1.5; color: #1f2933; margin: 0; padding: 24px;">\n'
        + "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs_before)
        + f'<p><a href="{safe_link}" style="display: inline-block; padding: 12px 20px; background: #0b6e4f;'
        f' color: #ffffff; text-decoration: none; border-radius: 6px;">{html.escape(button)}</a></p>\n'
        f'<p>{html.escape(button)}: <a href="{safe_link}">{safe_link}</a></p>\n'
        + "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs_after)
        + "</body></html>\n"
    )
    return Email(to=to, subject=subject, text_body=text, html_body=body_html)


def invitation_email(to: str, practice_name: str, link: str, *, is_client: bool) -> Email:
    if is_client:
        subject = INVITATION_CLIENT_SUBJECT
        intro = f"{practice_name} invites you to its Client Portal, where you can exchange secure messages."
    else:
        subject = INVITATION_STAFF_SUBJECT
        intro = f"{practice_name} invites you to Confidant, its secure messaging."
    return _link_email(
        to, subject, [intro, "Choose a password to set up your account."], "Choose a password", link,
        ["This link works once and expires in 24 hours. If you were not expecting it, you can ignore this email."],
    )


def password_reset_email(to: str, practice_name: str, link: str) -> Email:
    return _link_email(
        to, PASSWORD_RESET_SUBJECT,
        [f"Someone asked to reset the password of your {practice_name} account on Confidant."],
        "Choose a new password", link,
        ["This link works once and expires in 1 hour. If you did not ask for it, ignore this email: "
         "your password stays as it is."],
    )

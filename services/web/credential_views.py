"""Credential pages: choose a password from an invitation or reset link, forgot
password, and change password.

A GET of a link page never consumes the link (mail scanners follow links); only
the form's POST does, through auth's SetPasswordWithLink. Every form goes through
the same CSRF and security-header middleware as the rest of the edge.
"""

from __future__ import annotations

import grpc
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.web.errors import from_rpc_error, readable_message
from services.web.resources import BACKENDS, CONFIG
from services.web.session import (
    clear_session_cookie,
    current,
    end_previous_session,
    set_session_cookie,
    sign_in_url,
)
from services.web.templates import Safe, page, render
from services.web.views import html, landing_for, see_other

PASSWORDS_DIFFER = "The two passwords do not match. Type the same new password in both fields."
RESET_SENT = "If an account exists for that address, we sent a link to reset its password."
LINK_EXPIRED = "This link has expired or was already used."
CHANGED = "Your password was changed. You were signed out on every other device."
MAGIC_LINK_SESSION = "You signed in with a quick link. Sign in with your password to change it."

_READABLE_FORM_ERRORS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


def _message(error: str, notice: str = "") -> Safe:
    if error:
        return render('<p class="error" role="alert">$e</p>', e=error)
    if notice:
        return render('<p class="notice" role="status">$n</p>', n=notice)
    return Safe("")


# ---------------------------------------------------------------- templates

CHOOSE = """<main class="narrow">
<p class="brand-line">$brand</p>
<h1>Choose a password</h1>
$message
<form method="post" action="/credentials/$token" class="stack">
<input type="text" name="username" autocomplete="username" value="$email" hidden readonly>
<label for="new-password">New password</label>
<input id="new-password" name="new_password" type="password" autocomplete="new-password" required minlength="$min">
<label for="confirm-password">Confirm password</label>
<input id="confirm-password" name="confirm_password" type="password" autocomplete="new-password" required
 minlength="$min">
<p class="hint">At least $min characters. A few unrelated words make a strong password.</p>
<button type="submit" class="primary">Save password</button>
</form>
</main>"""

EXPIRED = """<main class="narrow">
<h1>This link has expired</h1>
<p>$message Links to set a password work once, for a limited time.</p>
<p><a href="/forgot-password$query">Forgot password?</a></p>
<p><a href="$sign_in">Sign in</a></p>
</main>"""

FORGOT = """<main class="narrow">
<h1>Forgot password?</h1>
$message
<p>Enter your email address and we will send you a link to choose a new password.</p>
<form method="post" action="/forgot-password" class="stack">
<input type="hidden" name="portal" value="$portal">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required value="$email">
<button type="submit" class="primary">Send reset link</button>
</form>
<p><a href="$sign_in">Back to sign in</a></p>
</main>"""

FORGOT_SENT = """<main class="narrow">
<h1>Check your email</h1>
<p class="notice" role="status">$message</p>
<p>The link works for a limited time. If nothing arrives, check your spam folder or try again.</p>
<p><a href="$sign_in">Back to sign in</a></p>
</main>"""

CHANGE = """<main class="narrow">
<p><a href="$home">Back</a></p>
<h1>Change password</h1>
$message
<form method="post" action="/account/password" class="stack">
<input type="text" name="username" autocomplete="username" value="$email" hidden readonly>
<label for="current-password">Current password</label>
<input id="current-password" name="current_password" type="password" autocomplete="current-password" required>
<label for="new-password">New password</label>
<input id="new-password" name="new_password" type="password" autocomplete="new-password" required minlength="$min">
<label for="confirm-password">Confirm password</label>
<input id="confirm-password" name="confirm_password" type="password" autocomplete="new-password" required
 minlength="$min">
<button type="submit" class="primary">Change password</button>
</form>
</main>"""

CHANGED_PAGE = """<main class="narrow">
<h1>Password changed</h1>
<p class="notice" role="status">$message</p>
<p><a href="$home">Continue</a></p>
</main>"""

MIN_LENGTH = 12


def _sign_in_for(portal: bool) -> str:
    return "/portal/sign-in" if portal else "/sign-in"


def choose_page(*, token: str, email: str, portal: bool, error: str = "") -> Safe:
    content = render(CHOOSE, brand="Client Portal" if portal else "Confidant", message=_message(error),
                     token=token, email=email, min=MIN_LENGTH)
    return page("Choose a password", content, page="credentials")


def expired_page(*, portal: bool) -> Safe:
    content = render(EXPIRED, message=LINK_EXPIRED, query="?portal=1" if portal else "",
                     sign_in=_sign_in_for(portal))
    return page("This link has expired", content, page="credentials")


def forgot_page(*, portal: bool, email: str = "", error: str = "") -> Safe:
    content = render(FORGOT, message=_message(error), portal="1" if portal else "", email=email,
                     sign_in=_sign_in_for(portal))
    return page("Forgot password?", content, page="forgot-password")


def forgot_sent_page(*, portal: bool) -> Safe:
    return page("Check your email", render(FORGOT_SENT, message=RESET_SENT, sign_in=_sign_in_for(portal)),
                page="forgot-password")


def change_page(*, email: str, home: str, error: str = "") -> Safe:
    content = render(CHANGE, home=home, message=_message(error), email=email, min=MIN_LENGTH)
    return page("Change password", content, page="change-password")


# ---------------------------------------------------------------- choose a password from a link


async def _inspect(request: web.Request, token: str) -> auth_pb.InspectCredentialLinkResponse:
    try:
        return await request.app[BACKENDS].auth.InspectCredentialLink(
            auth_pb.InspectCredentialLinkRequest(token=token)
        )
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


async def credential_link_landing(request: web.Request) -> web.Response:
    """GET never consumes the link: it only shows the form."""
    token = request.match_info["token"]
    found = await _inspect(request, token)
    if found.outcome != auth_pb.CREDENTIAL_LINK_OUTCOME_VALID:
        return html(expired_page(portal=True), 410)
    return html(choose_page(token=token, email=found.email, portal=found.role == auth_pb.ROLE_CLIENT))


async def credential_link_use(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    form = await request.post()
    new_password = str(form.get("new_password", ""))
    confirm = str(form.get("confirm_password", ""))
    email = str(form.get("username", ""))[:254]

    def again(message: str, status: int) -> web.Response:
        return html(choose_page(token=token, email=email, portal=True, error=message), status)

    if not new_password:
        return again("Enter a new password.", 400)
    if new_password != confirm:
        return again(PASSWORDS_DIFFER, 400)
    try:
        reply = await request.app[BACKENDS].auth.SetPasswordWithLink(
            auth_pb.SetPasswordWithLinkRequest(
                token=token, new_password=new_password, client_address=request.remote or ""
            )
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return html(expired_page(portal=True), 410)
        if exc.code() in _READABLE_FORM_ERRORS:
            error = from_rpc_error(exc)
            return again(error.message, error.status)
        raise from_rpc_error(exc) from None
    if reply.sign_in_required:
        # Two-step verification: a link is one factor, so the person signs in with password and code.
        return see_other("/sign-in?password_saved=1")
    # The link's person replaces whoever was signed in on this browser.
    await end_previous_session(request, reply.session_token)
    response = see_other(landing_for(reply.user))
    set_session_cookie(request, response, reply.session_token)
    return response


# ---------------------------------------------------------------- forgot password


async def forgot_password_form(request: web.Request) -> web.Response:
    return html(forgot_page(portal=request.query.get("portal") == "1"))


async def forgot_password(request: web.Request) -> web.Response:
    form = await request.post()
    email = str(form.get("email", "")).strip()[:254]
    portal = str(form.get("portal", "")) == "1"
    if not email:
        return html(forgot_page(portal=portal, error="Enter your email address."), 400)
    try:
        await request.app[BACKENDS].auth.RequestPasswordReset(
            auth_pb.RequestPasswordResetRequest(email=email, client_address=request.remote or "")
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _READABLE_FORM_ERRORS:
            error = from_rpc_error(exc)
            return html(forgot_page(portal=portal, email=email, error=error.message), error.status)
        raise from_rpc_error(exc) from None
    return html(forgot_sent_page(portal=portal))


# ---------------------------------------------------------------- change password


def _signed_in(request: web.Request):
    person = current(request)
    if person is None:
        raise web.HTTPSeeOther(sign_in_url(request, portal=False))
    return person


async def change_password_form(request: web.Request) -> web.Response:
    person = _signed_in(request)
    home = "/portal" if person.is_client else "/"
    if person.magic_link:
        return html(change_page(email=person.user.email, home=home, error=MAGIC_LINK_SESSION), 403)
    return html(change_page(email=person.user.email, home=home))


async def change_password(request: web.Request) -> web.Response:
    person = _signed_in(request)
    home = "/portal" if person.is_client else "/"
    form = await request.post()
    current_password = str(form.get("current_password", ""))
    new_password = str(form.get("new_password", ""))
    confirm = str(form.get("confirm_password", ""))

    def again(message: str, status: int) -> web.Response:
        return html(change_page(email=person.user.email, home=home, error=message), status)

    if person.magic_link:
        return again(MAGIC_LINK_SESSION, 403)
    if not current_password or not new_password:
        return again("Enter your current password and a new one.", 400)
    if new_password != confirm:
        return again(PASSWORDS_DIFFER, 400)
    cookie = request.cookies.get(request.app[CONFIG].session_cookie_name, "")
    try:
        await request.app[BACKENDS].auth.ChangePassword(
            auth_pb.ChangePasswordRequest(
                session_token=cookie, current_password=current_password, new_password=new_password,
                client_address=request.remote or "",
            )
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            response = see_other(sign_in_url(request, portal=person.is_client, ended=True))
            clear_session_cookie(request, response)
            return response
        if exc.code() in (*_READABLE_FORM_ERRORS, grpc.StatusCode.PERMISSION_DENIED):
            error = from_rpc_error(exc)
            return again(readable_message(exc.code(), exc.details()), error.status)
        raise from_rpc_error(exc) from None
    return html(page("Password changed", render(CHANGED_PAGE, message=CHANGED, home=home), page="change-password"))

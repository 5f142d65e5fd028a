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
from services.web.rendering import render
from services.web.resources import BACKENDS, CONFIG
from services.web.session import (
    clear_session_cookie,
    current,
    end_previous_session,
    set_session_cookie,
    sign_in_url,
)
from services.web.views import landing_for, see_other

PASSWORDS_DIFFER = "The two passwords do not match. Type the same new password in both fields."
RESET_SENT = "If an account exists for that address, we sent a link to reset its password."
LINK_EXPIRED = "This link has expired or was already used."
CHANGED = "Your password was changed. You were signed out on every other device."
MAGIC_LINK_SESSION = "You signed in with a quick link. Sign in with your password to change it."

_READABLE_FORM_ERRORS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


MIN_LENGTH = 12


def _sign_in_for(portal: bool) -> str:
    return "/portal/sign-in" if portal else "/sign-in"


def choose_page(request: web.Request, *, token: str, email: str, portal: bool, error: str = "",
                status: int = 200) -> web.Response:
    context = {"portal": portal, "error": error, "token": token, "email": email, "min_length": MIN_LENGTH}
    return render(request, "account/choose_password.html", context, status)


def expired_page(request: web.Request, *, portal: bool) -> web.Response:
    context = {"message": LINK_EXPIRED, "portal": portal, "sign_in": _sign_in_for(portal)}
    return render(request, "account/link_expired.html", context, 410)


def forgot_page(request: web.Request, *, portal: bool, email: str = "", error: str = "",
                status: int = 200) -> web.Response:
    context = {"error": error, "portal": portal, "email": email, "sign_in": _sign_in_for(portal)}
    return render(request, "account/forgot_password.html", context, status)


def forgot_sent_page(request: web.Request, *, portal: bool) -> web.Response:
    return render(request, "account/forgot_sent.html", {"message": RESET_SENT, "sign_in": _sign_in_for(portal)})


def change_page(request: web.Request, *, email: str, home: str, error: str = "", status: int = 200) -> web.Response:
    context = {"home": home, "error": error, "email": email, "min_length": MIN_LENGTH}
    return render(request, "account/change_password.html", context, status)


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
        return expired_page(request, portal=True)
    return choose_page(request, token=token, email=found.email, portal=found.role == auth_pb.ROLE_CLIENT)


async def credential_link_use(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    form = await request.post()
    new_password = str(form.get("new_password", ""))
    confirm = str(form.get("confirm_password", ""))
    email = str(form.get("username", ""))[:254]

    def again(message: str, status: int) -> web.Response:
        return choose_page(request, token=token, email=email, portal=True, error=message, status=status)

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
            return expired_page(request, portal=True)
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
    return forgot_page(request, portal=request.query.get("portal") == "1")


async def forgot_password(request: web.Request) -> web.Response:
    form = await request.post()
    email = str(form.get("email", "")).strip()[:254]
    portal = str(form.get("portal", "")) == "1"
    if not email:
        return forgot_page(request, portal=portal, error="Enter your email address.", status=400)
    try:
        await request.app[BACKENDS].auth.RequestPasswordReset(
            auth_pb.RequestPasswordResetRequest(email=email, client_address=request.remote or "")
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _READABLE_FORM_ERRORS:
            error = from_rpc_error(exc)
            return forgot_page(request, portal=portal, email=email, error=error.message, status=error.status)
        raise from_rpc_error(exc) from None
    return forgot_sent_page(request, portal=portal)


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
        return change_page(request, email=person.user.email, home=home, error=MAGIC_LINK_SESSION, status=403)
    return change_page(request, email=person.user.email, home=home)


async def change_password(request: web.Request) -> web.Response:
    person = _signed_in(request)
    home = "/portal" if person.is_client else "/"
    form = await request.post()
    current_password = str(form.get("current_password", ""))
    new_password = str(form.get("new_password", ""))
    confirm = str(form.get("confirm_password", ""))

    def again(message: str, status: int) -> web.Response:
        return change_page(request, email=person.user.email, home=home, error=message, status=status)

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
    return render(request, "account/password_changed.html", {"message": CHANGED, "home": home})

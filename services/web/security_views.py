"""Two-step verification pages: the second step of sign-in, enrolment
(at sign-in when the practice requires it, or from the Security page), the
recovery codes shown once, and the owner's "require it for all staff" setting.

A sign-in waiting for its second factor is carried by auth's pending token in a
hidden form field (5 minutes, single use); the session cookie is set only once
auth opens the session. Codes are never logged.
"""

from __future__ import annotations

import asyncio

import grpc
import segno
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.web.errors import from_rpc_error
from services.web.rendering import render, render_staff
from services.web.resources import BACKENDS
from services.web.session import Person, end_previous_session, is_safe_next, set_session_cookie, staff_page
from services.web.views import landing_for, see_other, sign_in_page

WRONG_CODE = "The authentication code is not correct."
# Answers of auth that a person fixes on the same form.
_FORM_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION)


def qr_data_uri(uri: str) -> tuple[str, int]:
    qr = segno.make(uri, error="m")
    scale = 4
    return qr.svg_data_uri(scale=scale), qr.symbol_size(scale=scale)[0]


def spaced(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def verify_page(request: web.Request, *, pending_token: str, next_path: str, error: str = "",
                status: int = 200) -> web.Response:
    return render(request, "account/two_step_verify.html",
                  {"pending_token": pending_token, "next_path": next_path, "error": error}, status)


def enroll_page(request: web.Request, *, secret: str, uri: str, action: str, pending_token: str = "",
                next_path: str = "", error: str = "", at_sign_in: bool = False, status: int = 200) -> web.Response:
    qr, size = qr_data_uri(uri)
    context = {"at_sign_in": at_sign_in, "error": error, "qr": qr, "qr_size": size, "secret": secret,
               "secret_spaced": spaced(secret), "uri": uri, "action": action, "pending_token": pending_token,
               "next_path": next_path}
    return render(request, "account/two_step_enroll.html", context, status)


def recovery_page(request: web.Request, codes: list[str], next_path: str) -> web.Response:
    return render(request, "account/recovery_codes.html", {"codes": codes, "next_path": next_path})


# ---------------------------------------------------------------- sign-in's second step


async def second_factor_step(request: web.Request, reply: auth_pb.SignInResponse, next_path: str) -> web.Response:
    """Called by the sign-in handler when SignIn answered "second factor required"."""
    if not reply.enrollment_required:
        return verify_page(request, pending_token=reply.pending_token, next_path=next_path)
    begun = await request.app[BACKENDS].auth.BeginTotpEnrollment(
        auth_pb.BeginTotpEnrollmentRequest(pending_token=reply.pending_token)
    )
    return enroll_page(request, secret=begun.secret, uri=begun.otpauth_uri, action="/sign-in/enroll",
                       pending_token=reply.pending_token, next_path=next_path, at_sign_in=True)


def _form_error(exc: grpc.aio.AioRpcError) -> tuple[str, int] | None:
    if exc.code() not in _FORM_ERRORS:
        return None
    error = from_rpc_error(exc)
    return (exc.details() or error.message), error.status


def _expired(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() == grpc.StatusCode.UNAUTHENTICATED and exc.details() != WRONG_CODE


def _signed_in(request: web.Request, session_token: str, location: str) -> web.Response:
    response = see_other(location)
    set_session_cookie(request, response, session_token)
    return response


def _safe_next(value: str) -> str:
    return value if is_safe_next(value) else ""


async def verify_sign_in(request: web.Request) -> web.Response:
    form = await request.post()
    pending_token = str(form.get("pending_token", ""))
    next_path = _safe_next(str(form.get("next", "")))
    try:
        reply = await request.app[BACKENDS].auth.CompleteSignIn(
            auth_pb.CompleteSignInRequest(pending_token=pending_token, code=str(form.get("code", "")),
                                          client_address=request.remote or "")
        )
    except grpc.aio.AioRpcError as exc:
        failed = _form_error(exc)
        if failed is None:
            raise
        if _expired(exc):
            return sign_in_page(request, portal=False, next_path=next_path, error=failed[0], status=401)
        return verify_page(request, pending_token=pending_token, next_path=next_path, error=failed[0],
                           status=failed[1])
    await end_previous_session(request, reply.session_token)
    return _signed_in(request, reply.session_token, next_path or landing_for(reply.user))


async def enroll_at_sign_in(request: web.Request) -> web.Response:
    form = await request.post()
    pending_token = str(form.get("pending_token", ""))
    next_path = _safe_next(str(form.get("next", "")))
    try:
        reply = await request.app[BACKENDS].auth.ConfirmTotpEnrollment(
            auth_pb.ConfirmTotpEnrollmentRequest(pending_token=pending_token, code=str(form.get("code", "")),
                                                 client_address=request.remote or "")
        )
    except grpc.aio.AioRpcError as exc:
        failed = _form_error(exc)
        if failed is None:
            raise
        if _expired(exc):
            return sign_in_page(request, portal=False, next_path=next_path, error=failed[0], status=401)
        return enroll_page(request, secret=str(form.get("secret", "")), uri=str(form.get("uri", "")),
                           action="/sign-in/enroll", pending_token=pending_token, next_path=next_path,
                           error=failed[0], at_sign_in=True, status=failed[1])
    await end_previous_session(request, reply.session_token)
    response = recovery_page(request, list(reply.recovery_codes), next_path or landing_for(reply.user))
    set_session_cookie(request, response, reply.session_token)
    return response


# ---------------------------------------------------------------- the Security page


async def _security_page(request: web.Request, person: Person, error: str = "", notice: str = "",
                         status: int = 200) -> web.Response:
    backends = request.app[BACKENDS]
    totp, security = await asyncio.gather(
        backends.auth.GetTotpStatus(auth_pb.GetTotpStatusRequest(), metadata=person.metadata),
        backends.auth.GetPracticeSecurity(auth_pb.GetPracticeSecurityRequest(), metadata=person.metadata),
    )
    context = {"title": "Security", "error": error, "notice": notice, "totp_enabled": totp.enabled,
               "recovery_codes_left": totp.recovery_codes_left,
               "required": security.security.require_mfa_for_staff}
    return await render_staff(request, person, "staff/security.html", context, status)


_NOTICES = {
    "off": "Two-step verification is off.",
    "saved": "Your practice's security settings were saved.",
}


@staff_page
async def security_page(request: web.Request, person: Person) -> web.Response:
    return await _security_page(request, person, notice=_NOTICES.get(request.query.get("done", ""), ""))


@staff_page
async def begin_enrollment(request: web.Request, person: Person) -> web.Response:
    try:
        begun = await request.app[BACKENDS].auth.BeginTotpEnrollment(
            auth_pb.BeginTotpEnrollmentRequest(), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED):
            raise
        return await _security_page(request, person, error=exc.details() or "", status=409)
    return enroll_page(request, secret=begun.secret, uri=begun.otpauth_uri, action="/account/security/totp/confirm")


@staff_page
async def confirm_enrollment(request: web.Request, person: Person) -> web.Response:
    form = await request.post()
    try:
        reply = await request.app[BACKENDS].auth.ConfirmTotpEnrollment(
            auth_pb.ConfirmTotpEnrollmentRequest(code=str(form.get("code", ""))), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        failed = _form_error(exc)
        if failed is None or exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return enroll_page(request, secret=str(form.get("secret", "")), uri=str(form.get("uri", "")),
                           action="/account/security/totp/confirm", error=failed[0], status=failed[1])
    return recovery_page(request, list(reply.recovery_codes), "/account/security")


@staff_page
async def disable_totp(request: web.Request, person: Person) -> web.Response:
    form = await request.post()
    try:
        await request.app[BACKENDS].auth.DisableTotp(
            auth_pb.DisableTotpRequest(code=str(form.get("code", ""))), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        failed = _form_error(exc)
        if failed is None or exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return await _security_page(request, person, error=failed[0], status=failed[1])
    raise web.HTTPSeeOther("/account/security?done=off")


@staff_page
async def update_practice_security(request: web.Request, person: Person) -> web.Response:
    form = await request.post()
    await request.app[BACKENDS].auth.UpdatePracticeSecurity(
        auth_pb.UpdatePracticeSecurityRequest(
            security=auth_pb.PracticeSecurity(require_mfa_for_staff=form.get("require_mfa") == "1")
        ),
        metadata=person.metadata,
    )
    raise web.HTTPSeeOther("/account/security?done=saved")

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

from services.web import templates
from services.web.errors import from_rpc_error
from services.web.resources import BACKENDS, CONFIG
from services.web.session import Person, end_previous_session, is_safe_next, set_session_cookie, staff_page
from services.web.templates import Safe, join, page, render
from services.web.views import has_unread, html, landing_for, see_other

WRONG_CODE = "The authentication code is not correct."
# Answers of auth that a person fixes on the same form.
_FORM_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION)


def _message(error: str = "", notice: str = "") -> Safe:
    if error:
        return render('<p class="error" role="alert">$e</p>', e=error)
    if notice:
        return render('<p class="notice" role="status">$n</p>', n=notice)
    return Safe("")


# ---------------------------------------------------------------- templates

VERIFY = """<main class="narrow">
<p class="brand-line">Confidant</p>
<h1>Two-step verification</h1>
$message
<p>Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>
<form method="post" action="/sign-in/verify" class="stack">
<input type="hidden" name="pending_token" value="$pending_token">
<input type="hidden" name="next" value="$next">
<label for="code">Authentication code</label>
<input id="code" name="code" type="text" inputmode="text" autocomplete="one-time-code" required autofocus
 maxlength="64" autocapitalize="off" spellcheck="false">
<button type="submit" class="primary">Verify</button>
</form>
<p><a href="/sign-in">Start again</a></p>
</main>"""

ENROLL = """<main class="narrow">
<p class="brand-line">Confidant</p>
<h1>Set up two-step verification</h1>
$intro
$message
<ol class="steps">
<li>Open an authenticator app on your phone and scan this code, or enter the key below.</li>
<li>Type the 6-digit code the app shows.</li>
</ol>
<p><img class="qr" src="$qr" alt="QR code for your authenticator app" width="$qr_size" height="$qr_size"></p>
<p>Key: <code id="totp-secret" data-role="totp-secret">$secret_spaced</code></p>
<details><summary>Setup link</summary><p class="small"><code>$uri</code></p></details>
<form method="post" action="$action" class="stack">
<input type="hidden" name="pending_token" value="$pending_token">
<input type="hidden" name="next" value="$next">
<input type="hidden" name="secret" value="$secret">
<input type="hidden" name="uri" value="$uri">
<label for="code">Authentication code</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required
 maxlength="10" autocapitalize="off" spellcheck="false">
<button type="submit" class="primary">Turn on</button>
</form>
</main>"""

RECOVERY = """<main class="narrow">
<h1>Save your recovery codes</h1>
<p class="notice" role="status">Two-step verification is on.</p>
<p>If you lose your phone, each of these codes signs you in once instead of an authentication code.
Keep them somewhere safe: this is the only time they are shown.</p>
<ul class="recovery-codes" aria-label="Recovery codes">$codes</ul>
<p><a class="button primary" href="$next">Continue</a></p>
</main>"""

SECURITY = """<main class="content">
<h1>Security</h1>
$message
<section aria-labelledby="totp-heading">
<h2 id="totp-heading">Two-step verification</h2>
$totp
</section>
$practice
</main>"""

TOTP_OFF = """<p>Two-step verification is off. Turn it on to ask for a code from your phone each time you sign in.</p>
<form method="post" action="/account/security/totp/begin">
<button type="submit" class="primary">Set up two-step verification</button>
</form>"""

TOTP_ON = """<p>Two-step verification is on. $left</p>
<form method="post" action="/account/security/totp/disable" class="stack">
<label for="disable-code">Authentication code</label>
<input id="disable-code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required
 maxlength="10">
<button type="submit">Turn off</button>
</form>"""

TOTP_REQUIRED = """<p>Two-step verification is on. $left</p>"""

PRACTICE_OWNER = """<section aria-labelledby="practice-heading">
<h2 id="practice-heading">Practice</h2>
<form method="post" action="/account/security/practice" class="stack">
<label class="check"><input type="checkbox" name="require_mfa" value="1" $checked>
Require two-step verification for all staff</label>
<button type="submit" class="primary">Save</button>
</form>
</section>"""

PRACTICE_STAFF = """<section aria-labelledby="practice-heading">
<h2 id="practice-heading">Practice</h2>
<p>$text</p>
</section>"""


def qr_data_uri(uri: str) -> tuple[str, int]:
    qr = segno.make(uri, error="m")
    scale = 4
    return qr.svg_data_uri(scale=scale), qr.symbol_size(scale=scale)[0]


def spaced(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def verify_page(*, pending_token: str, next_path: str, error: str = "") -> Safe:
    content = render(VERIFY, message=_message(error), pending_token=pending_token, next=next_path)
    return page("Two-step verification", content, page="two-step")


def enroll_page(*, secret: str, uri: str, action: str, pending_token: str = "", next_path: str = "",
                error: str = "", at_sign_in: bool = False) -> Safe:
    qr, size = qr_data_uri(uri)
    intro = Safe("")
    if at_sign_in:
        intro = Safe("<p>Your practice requires two-step verification for all staff. Set it up to continue.</p>")
    content = render(ENROLL, intro=intro, message=_message(error), qr=qr, qr_size=size, secret=secret,
                     secret_spaced=spaced(secret), uri=uri, action=action, pending_token=pending_token,
                     next=next_path)
    return page("Set up two-step verification", content, page="two-step-setup")


def recovery_page(codes: list[str], next_path: str) -> Safe:
    items = join(render("<li><code>$c</code></li>", c=code) for code in codes)
    return page("Save your recovery codes", render(RECOVERY, codes=items, next=next_path), page="recovery-codes")


# ---------------------------------------------------------------- sign-in's second step


async def second_factor_step(request: web.Request, reply: auth_pb.SignInResponse, next_path: str) -> web.Response:
    """Called by the sign-in handler when SignIn answered "second factor required"."""
    if not reply.enrollment_required:
        return html(verify_page(pending_token=reply.pending_token, next_path=next_path))
    begun = await request.app[BACKENDS].auth.BeginTotpEnrollment(
        auth_pb.BeginTotpEnrollmentRequest(pending_token=reply.pending_token)
    )
    return html(enroll_page(secret=begun.secret, uri=begun.otpauth_uri, action="/sign-in/enroll",
                            pending_token=reply.pending_token, next_path=next_path, at_sign_in=True))


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
            return html(templates.sign_in_page(portal=False, next_path=next_path, error=failed[0]), 401)
        return html(verify_page(pending_token=pending_token, next_path=next_path, error=failed[0]), failed[1])
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
            return html(templates.sign_in_page(portal=False, next_path=next_path, error=failed[0]), 401)
        page_html = enroll_page(secret=str(form.get("secret", "")), uri=str(form.get("uri", "")),
                                action="/sign-in/enroll", pending_token=pending_token, next_path=next_path,
                                error=failed[0], at_sign_in=True)
        return html(page_html, failed[1])
    await end_previous_session(request, reply.session_token)
    response = html(recovery_page(list(reply.recovery_codes), next_path or landing_for(reply.user)))
    set_session_cookie(request, response, reply.session_token)
    return response


# ---------------------------------------------------------------- the Security page


async def _security_page(request: web.Request, person: Person, error: str = "", notice: str = "",
                         status: int = 200) -> web.Response:
    backends = request.app[BACKENDS]
    practice, totp, security, unread = await asyncio.gather(
        backends.auth.GetPractice(auth_pb.GetPracticeRequest(practice_id=person.user.practice_id),
                                  metadata=person.metadata),
        backends.auth.GetTotpStatus(auth_pb.GetTotpStatusRequest(), metadata=person.metadata),
        backends.auth.GetPracticeSecurity(auth_pb.GetPracticeSecurityRequest(), metadata=person.metadata),
        has_unread(request, person),
    )
    required = security.security.require_mfa_for_staff
    if totp.enabled:
        left = f"{totp.recovery_codes_left} recovery codes left."
        # While the practice requires it, it cannot be turned off: no form that would only be refused.
        totp_html = render(TOTP_REQUIRED if required else TOTP_ON, left=left)
    else:
        totp_html = Safe(TOTP_OFF)
    if person.role == "owner":
        practice_html = render(PRACTICE_OWNER, checked=Safe("checked") if required else Safe(""))
    else:
        text = ("Your practice requires two-step verification for all staff." if required
                else "Your practice does not require two-step verification.")
        practice_html = render(PRACTICE_STAFF, text=text)
    content = render(SECURITY, message=_message(error, notice), totp=totp_html, practice=practice_html)
    name = practice.practice.name
    body = templates.staff_page(title=f"Security — {name}", practice=name, person_name=person.user.display_name,
                                user_id=person.user_id, unread=unread,
                                max_length=request.app[CONFIG].staff_message_max_length, content=content,
                                owner=person.role == "owner")
    return html(body, status)


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
    return html(enroll_page(secret=begun.secret, uri=begun.otpauth_uri, action="/account/security/totp/confirm"))


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
        return html(enroll_page(secret=str(form.get("secret", "")), uri=str(form.get("uri", "")),
                                action="/account/security/totp/confirm", error=failed[0]), failed[1])
    return html(recovery_page(list(reply.recovery_codes), "/account/security"))


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

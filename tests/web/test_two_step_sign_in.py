"""Two-step verification through the web edge, over HTTP against the real services:
enrolment from the Security page, the "Two-step verification" step of sign-in
(codes and recovery codes, ``next`` kept), and the owner's practice requirement
that sends staff to "Set up two-step verification" at sign-in.

Codes are computed with pyotp from the secret the page shows; a code of the next
30-second step (inside the accepted window) stands in for "a fresh code".
"""

from __future__ import annotations

import html
import re
import time

import aiohttp
import pyotp
from yarl import URL

from tests.web.conftest import WebStack

COOKIE = "confidant_session"


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field"
    return html.unescape(match.group(1))


def shown_secret(page: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', page)
    assert match, page
    return match.group(1).replace(" ", "")


def has_session(http: aiohttp.ClientSession, stack: WebStack) -> bool:
    cookie = http.cookie_jar.filter_cookies(URL(stack.url)).get(COOKIE)
    return cookie is not None and bool(cookie.value)


async def post(http, path: str, data: dict) -> tuple[int, str, str]:
    async with http.post(path, data=data, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def password_step(stack: WebStack, http, who: str, next_path: str = "") -> tuple[int, str, str]:
    person = stack.people[who]
    return await post(http, "/sign-in", {"email": person.email, "password": person.password, "next": next_path})


async def test_enrol_from_the_security_page_then_sign_in_with_a_code_or_a_recovery_code(stack: WebStack):
    http = await stack.signed_in("dana")
    async with http:
        async with http.get("/account/security") as resp:
            page = await resp.text()
            assert resp.status == 200
        assert "Two-step verification is off" in page
        assert "Require two-step verification for all staff" in page
        status, page, _ = await post(http, "/account/security/totp/begin", {})
        assert status == 200 and "Set up two-step verification" in page
        assert 'src="data:image/svg+xml' in page  # the QR code
        secret = shown_secret(page)
        assert f"secret={secret}" in html.unescape(page)

        wrong = "000000" if code_at(secret) != "000000" else "111111"
        form = {"code": wrong, "secret": field(page, "secret"), "uri": field(page, "uri")}
        status, page, _ = await post(http, "/account/security/totp/confirm", form)
        assert status == 400 and "The authentication code is not correct." in page
        assert shown_secret(page) == secret  # the same key to try again
        status, page, _ = await post(http, "/account/security/totp/confirm", {**form, "code": code_at(secret)})
        assert status == 200 and "Save your recovery codes" in page
        codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", page)
        assert len(codes) == 10
        async with http.get("/account/security") as resp:
            assert "Two-step verification is on. 10 recovery codes left." in await resp.text()

    # Sign-in now stops at the second step, with no session yet, and keeps ``next``.
    async with stack.client_session() as http:
        status, page, _ = await password_step(stack, http, "dana", "/account/security")
        assert status == 200 and "<h1>Two-step verification</h1>" in page
        assert "Authentication code" in page and ">Verify<" in page
        assert not has_session(http, stack)
        pending = field(page, "pending_token")
        assert field(page, "next") == "/account/security"
        status, page, _ = await post(http, "/sign-in/verify", {"pending_token": pending, "code": "12345",
                                                                "next": "/account/security"})
        assert status == 401 and "The authentication code is not correct." in page
        assert field(page, "pending_token") == pending and not has_session(http, stack)
        status, _, location = await post(http, "/sign-in/verify", {"pending_token": pending,
                                                                    "code": code_at(secret, 1),
                                                                    "next": "/account/security"})
        assert (status, location) == (303, "/account/security") and has_session(http, stack)
        async with http.get("/account/security") as resp:
            assert resp.status == 200
        # The pending token was spent: replaying the step leads back to sign-in.
        status, page, _ = await post(http, "/sign-in/verify", {"pending_token": pending, "code": code_at(secret)})
        assert status == 401 and "<h1>Sign in</h1>" in page

    # A recovery code works in the same field, once.
    async with stack.client_session() as http:
        _, page, _ = await password_step(stack, http, "dana")
        status, _, location = await post(http, "/sign-in/verify", {"pending_token": field(page, "pending_token"),
                                                                    "code": codes[0].upper()})
        assert (status, location) == (303, "/")
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 200
    async with stack.client_session() as http:
        _, page, _ = await password_step(stack, http, "dana")
        status, page, _ = await post(http, "/sign-in/verify", {"pending_token": field(page, "pending_token"),
                                                                "code": codes[0]})
        assert status == 401 and "The authentication code is not correct." in page


async def test_the_practice_requirement_sends_staff_to_set_up_two_step_verification(stack: WebStack):
    # Dana turned TOTP on in the test above; turned off here so she signs in with her password alone.
    async with stack.database("auth") as db:
        await db.execute("DELETE FROM recovery_codes WHERE user_id = %s", (stack.people["dana"].user_id,))
        await db.execute("DELETE FROM totp_credentials WHERE user_id = %s", (stack.people["dana"].user_id,))
    http = await stack.signed_in("dana")
    async with http:
        status, _, location = await post(http, "/account/security/practice", {"require_mfa": "1"})
        assert (status, location) == (303, "/account/security?done=saved")
        async with http.get("/account/security?done=saved") as resp:
            page = await resp.text()
        assert "security settings were saved" in page and 'value="1" checked' in page

    async with stack.client_session() as http:
        status, page, _ = await password_step(stack, http, "sam")
        assert status == 200 and "Set up two-step verification" in page
        assert "Your practice requires two-step verification" in page and not has_session(http, stack)
        # Sam's Security page is not reachable without a session.
        async with http.get("/account/security", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/sign-in")
        secret = shown_secret(page)
        form = {"pending_token": field(page, "pending_token"), "secret": secret, "uri": field(page, "uri"),
                "code": code_at(secret)}
        status, page, _ = await post(http, "/sign-in/enroll", form)
        assert status == 200 and "Save your recovery codes" in page and has_session(http, stack)
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 200
        async with http.get("/account/security") as resp:
            page = await resp.text()
        assert "Your practice requires two-step verification for all staff." in page
        assert "Require two-step verification for all staff" not in page  # the owner's control only

    # A client signs in as before.
    async with stack.client_session() as http:
        status, _, location = await password_step(stack, http, "jordan")
        assert (status, location) == (303, "/portal")

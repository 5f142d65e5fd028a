"""The credential pages at the edge: choose a password from a link (GET never consumes),
forgot password (one answer for every address), change password, and their CSRF.

Here auth's outbox is not relayed (this stack's auth does not know notify's
address), so each link's token is read from auth's outbox row; the emails are
tested in tests/notify/test_credential_notices.py and in the browser in
tests/e2e/test_credentials_flow.py.
"""

from __future__ import annotations

from confidant.auth.v1 import auth_service_pb2 as auth_pb
from yarl import URL

from services.common.clients import bearer
from tests.support import Tokens
from tests.web.conftest import STAFF_PASSWORD, WebStack

COOKIE = "confidant_session"
NEW_PASSWORD = "amber-tide-lantern-41"
SENT = "If an account exists for that address, we sent a link to reset its password."


async def link_token(stack: WebStack, user_id: str, kind: str) -> str:
    async with stack.database("auth") as conn:
        cur = await conn.execute(
            "SELECT link_token FROM account_notices WHERE user_id = %s AND kind = %s ORDER BY notice_id DESC LIMIT 1",
            (user_id, kind),
        )
        (token,) = await cur.fetchone()
    return token


async def invite(stack: WebStack, user_id: str) -> str:
    async with stack.auth() as auth:
        await auth.InviteUser(auth_pb.InviteUserRequest(user_id=user_id),
                              metadata=bearer(Tokens(stack.keys_dir).service("web")), timeout=30)
    return await link_token(stack, user_id, "invitation")


async def test_a_link_page_never_consumes_and_its_form_sets_the_password(stack):
    client = await stack.add_person("casey", "client", "Casey Morgan")
    token = await invite(stack, client.user_id)
    async with stack.client_session() as http:
        for _ in range(3):
            async with http.get(f"/credentials/{token}") as resp:
                assert resp.status == 200
                page = await resp.text()
        assert "Choose a password" in page and "Save password" in page
        assert 'for="new-password">New password<' in page and 'for="confirm-password">Confirm password<' in page
        assert f'autocomplete="username" value="{client.email}"' in page
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Referrer-Policy"] == "no-referrer"  # the token is in this page's URL

        form = {"username": client.email, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD + "x"}
        async with http.post(f"/credentials/{token}", data=form, allow_redirects=False) as resp:
            assert resp.status == 400
            assert "The two passwords do not match." in await resp.text()
        async with http.post(f"/credentials/{token}", data={**form, "new_password": "short", "confirm_password":
                                                            "short"}, allow_redirects=False) as resp:
            assert resp.status == 400
            assert "at least 12 characters" in await resp.text()

        form["confirm_password"] = NEW_PASSWORD
        async with http.post(f"/credentials/{token}", data=form, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/portal"
        assert http.cookie_jar.filter_cookies(URL(stack.url)).get(COOKIE) is not None
        async with http.get("/api/me") as resp:
            assert (await resp.json())["user_id"] == client.user_id

        # Used: the page says so and offers "Forgot password?".
        async with http.get(f"/credentials/{token}") as resp:
            assert resp.status == 410
            text = await resp.text()
        assert "This link has expired" in text and 'href="/forgot-password?portal=1">Forgot password?<' in text
        async with http.post(f"/credentials/{token}", data=form, allow_redirects=False) as resp:
            assert resp.status == 410
    async with stack.client_session() as http, http.get("/credentials/not-a-real-token") as resp:
        assert resp.status == 410


async def test_forgot_password_says_the_same_for_every_address(stack):
    bodies = []
    async with stack.client_session() as http:
        async with http.get("/forgot-password") as resp:
            page = await resp.text()
        assert 'for="email">Email<' in page and "Send reset link" in page
        for email in (stack.people["dana"].email, "nobody-here@lakeside.test"):
            async with http.post("/forgot-password", data={"email": email}) as resp:
                assert resp.status == 200
                bodies.append(await resp.text())
    assert bodies[0] == bodies[1] and SENT in bodies[0]
    for path in ("/sign-in", "/portal/sign-in"):
        async with stack.client_session() as http, http.get(path) as resp:
            assert ">Forgot password?</a>" in await resp.text()


async def test_change_password_keeps_this_browser_and_signs_out_the_others(stack):
    person = await stack.add_person("riley", "clinician", "Riley Park", STAFF_PASSWORD)
    here = await stack.signed_in("riley")
    elsewhere = await stack.signed_in("riley")
    try:
        async with here.get("/account/password") as resp:
            page = await resp.text()
        for label in ("Current password", "New password", "Confirm password"):
            assert f">{label}</label>" in page
        assert "Change password</button>" in page
        form = {"current_password": STAFF_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": "other-thing-9"}
        async with here.post("/account/password", data=form) as resp:
            assert resp.status == 400 and "The two passwords do not match." in await resp.text()
        async with here.post("/account/password", data={**form, "current_password": "wrong-password-123",
                                                        "confirm_password": NEW_PASSWORD}) as resp:
            assert resp.status == 400 and "The current password is incorrect." in await resp.text()
        async with here.post("/account/password", data={**form, "confirm_password": NEW_PASSWORD}) as resp:
            assert resp.status == 200 and "Your password was changed." in await resp.text()
        async with here.get("/api/me") as resp:
            assert resp.status == 200
        async with elsewhere.get("/api/me") as resp:
            assert resp.status == 401
        person.password = NEW_PASSWORD
        again = await stack.signed_in("riley")  # the new password works
        await again.close()
    finally:
        await here.close()
        await elsewhere.close()


async def test_credential_forms_refuse_cross_site_posts(stack):
    client = await stack.add_person("drew", "client", "Drew Quinn")
    token = await invite(stack, client.user_id)
    async with stack.client_session(origin=False) as http:
        http.headers["Origin"] = "https://evil.example"
        for path, data in (
            (f"/credentials/{token}", {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}),
            ("/forgot-password", {"email": client.email}),
            ("/account/password", {"current_password": "x", "new_password": NEW_PASSWORD}),
        ):
            async with http.post(path, data=data, allow_redirects=False) as resp:
                assert resp.status == 403, path
    async with stack.client_session() as http, http.get(f"/credentials/{token}") as resp:
        assert resp.status == 200  # still valid: the refused post consumed nothing

"""The practice owner's Team and Audit trail pages over HTTP, with the real services.

Dana (the owner) invites a team member (the user exists, one invitation email
reaches the mailbox), changes a role, and deactivates a clinician, whose session
cookie gets 401 from the API at once. Other staff get 403; cross-site form posts
are refused; the audit trail page shows the newest rows and whether the chain is intact.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.common.clients import bearer
from tests.support import Tokens, unique
from tests.web.conftest import STAFF_PASSWORD, WebStack, web_stack

CREDENTIAL_LINK = re.compile(r"https?://[^\s\"'<>]+/credentials/[A-Za-z0-9_\-]+")


@pytest.fixture(scope="module")
async def stack(fresh_database, keys_dir, tokens) -> AsyncIterator[WebStack]:
    # Auth relays its notices to notify here, so the invitation lands in the development mailbox.
    async with web_stack(fresh_database, keys_dir, tokens, relay_auth_notices=True) as result:
        yield result


async def staff_user(stack: WebStack, user_id: str) -> auth_pb.User:
    async with stack.auth() as auth:
        reply = await auth.GetUsers(auth_pb.GetUsersRequest(user_ids=[user_id]),
                                    metadata=bearer(Tokens(stack.keys_dir).service("web")), timeout=30)
    [user] = reply.users
    return user


async def get(http, path: str) -> tuple[int, str]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def post(http, path: str, form: dict, **kwargs) -> tuple[int, str, str]:
    async with http.post(path, data=form, allow_redirects=False, **kwargs) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def test_the_owner_invites_a_team_member(stack):
    email = f"{unique('casey')}@lakeside.test"
    async with await stack.signed_in("dana") as http:
        status, page = await get(http, "/")
        assert status == 200 and 'href="/account/team">Team</a>' in page

        status, page = await get(http, "/account/team")
        assert status == 200
        for text in ('<label for="invite-name">Name</label>', '<label for="invite-email">Email</label>',
                     '<label for="invite-role">Role</label>', '<option value="clinician"',
                     '<option value="team_member"', ">Team member</option>", "Send invitation", "Sam Okafor",
                     "sam@lakeside.test", "Change role", "Deactivate"):
            assert text in page
        assert "Jordan Lee" not in page  # clients are not staff

        status, _, location = await post(http, "/account/team/invite",
                                         {"name": "Casey Nguyen", "email": email, "role": "team_member"})
        assert status == 303 and location.startswith("/account/team?invited=")
        user_id = location.rsplit("=", 1)[1]
        assert email not in location  # ids only in URLs
        status, page = await get(http, location)
        assert status == 200 and f"Invitation sent to {email}." in page
        assert "Send invitation again" in page  # Casey has no password yet

        user = await staff_user(stack, user_id)
        assert (user.email, user.display_name, user.role, user.has_password) == (
            email, "Casey Nguyen", auth_pb.ROLE_TEAM_MEMBER, False)
        emails = await stack.wait_for_emails(email, 1)
        assert len(emails) == 1 and CREDENTIAL_LINK.search(emails[0]["text"])

        # The same address again: the service's message, and the form keeps what was typed.
        status, page, _ = await post(http, "/account/team/invite",
                                     {"name": "Casey Again", "email": email, "role": "clinician"})
        assert status == 409 and "An account with this email address already exists." in page
        assert 'value="Casey Again"' in page
        status, page, _ = await post(http, "/account/team/invite", {"name": "", "email": email,
                                                                    "role": "clinician"})
        assert status == 400 and "Enter the person&#x27;s name and email address." in page
        status, page, _ = await post(http, "/account/team/invite", {"name": "Robin", "email": "not-an-email",
                                                                    "role": "clinician"})
        assert status == 400 and "Enter a valid email address, like name@example.com." in page
        status, page, _ = await post(http, "/account/team/invite", {"name": "Robin", "email": "r@lakeside.test",
                                                                    "role": "owner"})
        assert status == 400 and "Choose a role: Clinician or Team member." in page

        # Sending the invitation again is one more email.
        status, _, location = await post(http, f"/account/team/{user_id}/invite", {})
        assert status == 303 and location == f"/account/team?invited={user_id}"
        assert len(await stack.wait_for_emails(email, 2)) == 2


async def test_the_owner_changes_a_role(stack):
    person = await stack.add_person(unique("robin"), "team_member", "Robin Team")
    async with await stack.signed_in("dana") as http:
        status, _, location = await post(http, f"/account/team/{person.user_id}/role", {"role": "clinician"})
        assert (status, location) == (303, f"/account/team?role_changed={person.user_id}")
        status, page = await get(http, location)
        assert status == 200 and "Robin Team is now a clinician." in page
        assert (await staff_user(stack, person.user_id)).role == auth_pb.ROLE_CLINICIAN

        status, page, _ = await post(http, f"/account/team/{person.user_id}/role", {"role": "owner"})
        assert status == 400 and "Choose a role: Clinician or Team member." in page
        dana = stack.people["dana"]
        status, page, _ = await post(http, f"/account/team/{dana.user_id}/role", {"role": "clinician"})
        assert status == 409 and "The practice owner&#x27;s role cannot be changed." in page
        status, page, _ = await post(http, "/account/team/00000000-0000-4000-8000-000000000000/role",
                                     {"role": "clinician"})
        assert status == 404 and "This person is not in your practice." in page
        status, page, _ = await post(http, "/account/team/not-an-id/role", {"role": "clinician"})
        assert status == 400


async def test_deactivation_is_confirmed_and_ends_the_persons_session_at_once(stack):
    key = unique("morgan")
    person = await stack.add_person(key, "clinician", "Morgan Clinician", STAFF_PASSWORD)
    async with await stack.signed_in(key) as theirs, \
            await stack.signed_in("dana") as http:
        async with theirs.get("/api/me") as resp:
            assert resp.status == 200

        status, page = await get(http, f"/account/team/{person.user_id}/deactivate")
        assert status == 200
        assert "Deactivate Morgan Clinician?" in page and "Yes, deactivate Morgan Clinician" in page
        assert 'name="confirm" value="yes" required' in page
        # Without the box ticked nothing happens.
        status, page, _ = await post(http, f"/account/team/{person.user_id}/deactivate", {})
        assert status == 400 and "Tick the box to confirm the deactivation." in page
        async with theirs.get("/api/me") as resp:
            assert resp.status == 200

        status, _, location = await post(http, f"/account/team/{person.user_id}/deactivate", {"confirm": "yes"})
        assert (status, location) == (303, f"/account/team?deactivated={person.user_id}")
        async with theirs.get("/api/me") as resp:
            assert resp.status == 401
        async with theirs.get("/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/sign-in")
        status, page = await get(http, location)
        assert "Morgan Clinician was deactivated and signed out everywhere." in page
        assert "Deactivated" in page

        # They cannot sign in again; the owner cannot be deactivated; unknown people are 404.
        async with stack.client_session() as again:
            status, _, _ = await post(again, "/sign-in", {"email": person.email, "password": STAFF_PASSWORD})
            assert status == 401
        dana = stack.people["dana"]
        status, page, _ = await post(http, f"/account/team/{dana.user_id}/deactivate", {"confirm": "yes"})
        assert status == 409 and "The practice owner cannot be deactivated." in page
        status, _ = await get(http, f"/account/team/{dana.user_id}/deactivate")
        assert status == 409
        status, _ = await get(http, "/account/team/00000000-0000-4000-8000-000000000000/deactivate")
        assert status == 404


async def test_other_staff_get_403_and_no_team_link(stack):
    key = unique("lee")
    await stack.add_person(key, "clinician", "Lee Clinician", STAFF_PASSWORD)
    sam = stack.people["sam"]
    async with await stack.signed_in(key) as http:
        status, page = await get(http, "/")
        assert status == 200 and "/account/team" not in page and 'href="/account/security"' in page
        for path in ("/account/team", "/account/audit", f"/account/team/{sam.user_id}/deactivate"):
            status, page = await get(http, path)
            assert status == 403, path
        status, page = await get(http, "/account/team")
        assert "Only the practice owner can manage the team." in page
        for path, form in (("/account/team/invite", {"name": "X Y", "email": "xy@lakeside.test",
                                                     "role": "clinician"}),
                           (f"/account/team/{sam.user_id}/role", {"role": "clinician"}),
                           (f"/account/team/{sam.user_id}/deactivate", {"confirm": "yes"}),
                           (f"/account/team/{sam.user_id}/invite", {})):
            status, _, _ = await post(http, path, form)
            assert status == 403, path
    assert (await staff_user(stack, sam.user_id)).role == auth_pb.ROLE_TEAM_MEMBER
    async with await stack.signed_in("sam") as http, http.get("/api/me") as resp:
        assert resp.status == 200
    # Signed out: sign in first, then back here.
    async with stack.client_session() as http:
        status, _ = await get(http, "/account/team")
        assert status == 303


async def test_cross_site_form_posts_are_refused(stack):
    key = unique("kim")
    person = await stack.add_person(key, "team_member", "Kim Team", STAFF_PASSWORD)
    email = f"{unique('evil')}@lakeside.test"
    async with await stack.signed_in("dana") as http:
        evil = {"Origin": "https://evil.example"}
        for path, form in (("/account/team/invite", {"name": "Evil", "email": email, "role": "clinician"}),
                           (f"/account/team/{person.user_id}/role", {"role": "clinician"}),
                           (f"/account/team/{person.user_id}/deactivate", {"confirm": "yes"})):
            status, page, _ = await post(http, path, form, headers=evil)
            assert status == 403 and "did not come from a page of this site" in page, path
    user = await staff_user(stack, person.user_id)
    assert user.role == auth_pb.ROLE_TEAM_MEMBER
    async with await stack.signed_in(key) as theirs, theirs.get("/api/me") as resp:
        assert resp.status == 200
    async with stack.database("auth") as conn:
        cur = await conn.execute("SELECT count(*) FROM users WHERE email = %s", (email,))
        assert (await cur.fetchone())[0] == 0


async def test_the_audit_trail_page(stack):
    async with await stack.signed_in("dana") as http:
        status, page = await get(http, "/account/audit")
        assert status == 200 and "The audit trail is intact." in page
        assert "<th scope=\"col\">Time</th>" in page and "<th scope=\"col\">Actor</th>" in page
        rows = re.findall(r"<tr><td>", page)
        assert 0 < len(rows) <= 50 and "<code>sign_in</code>" in page
        status, page = await get(http, "/account/audit")
        assert "<code>audit.verify</code>" in page and "<code>audit.list</code>" in page
        assert "@" not in page.split("<tbody>")[1]  # no email addresses (nor names) in the rows
        assert "Dana Rivera" not in page.split("<tbody>")[1]

        # A row edited behind the trigger's back is reported, and putting it back heals the chain.
        async with stack.database("auth") as conn:
            cur = await conn.execute("SELECT event_id, outcome FROM audit_events WHERE action = 'practice.create' "
                                     "AND practice_id = %s", (stack.practice_id,))
            event_id, outcome = await cur.fetchone()
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
            try:
                await conn.execute("UPDATE audit_events SET outcome = 'failure' WHERE event_id = %s", (event_id,))
                status, page = await get(http, "/account/audit")
                assert status == 200 and "The audit trail has been altered." in page
                await conn.execute("UPDATE audit_events SET outcome = %s WHERE event_id = %s", (outcome, event_id))
            finally:
                await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
        status, page = await get(http, "/account/audit")
        assert "The audit trail is intact." in page

"""Pages from the template files, over HTTP against the four real services: what people
typed is escaped wherever it lands (text and attributes), and an error page keeps the
signed-in person's own top bar (issue 11, defect 19: "404 and 403 pages lose the top bar")."""

from __future__ import annotations

import re
import uuid

HOSTILE = 'Eve "<script>alert(1)</script>'
ESCAPED = "Eve &quot;&lt;script&gt;alert(1)&lt;/script&gt;"
STAFF_TOP_BAR = ('<header class="topbar">', '<a class="brand" href="/">Lakeside Counseling</a>',
                 ">Secure Messages</button>", 'id="unread-dot"', 'id="sm-panel"', ">Sign out</button>",
                 'data-page="staff"')


async def _get(http, path: str) -> tuple[int, str]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_user_text_is_escaped_in_text_and_in_attributes(stack):
    async with await stack.signed_in("dana") as http:
        email = f"eve-{uuid.uuid4().hex[:8]}@client.test"
        async with http.post("/clients", data={"display_name": HOSTILE, "email": email},
                             allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            location = resp.headers["Location"]
        status, page = await _get(http, location)
        assert status == 200
        assert f"<h1>{ESCAPED}</h1>" in page  # text
        assert re.search(rf'<input id="client-name"[^>]*value="{re.escape(ESCAPED)}"', page)  # an attribute
        status, page = await _get(http, "/clients?q=" + '"><script>alert(2)</script>')
        assert status == 200
        assert 'value="&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"' in page
        assert "No clients match “&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;”." in page
        for raw in ("<script>alert(1)", "<script>alert(2)", '"><script>'):
            assert raw not in page


async def test_staff_error_pages_keep_the_top_bar(stack):
    async with await stack.signed_in("sam") as http:
        status, page = await _get(http, "/account/team")  # the owner's page
        assert status == 403 and "Only the practice owner can manage the team." in page
        assert all(part in page for part in STAFF_TOP_BAR), page
        assert '<span class="who">Sam Okafor</span>' in page
        assert "<title>Not allowed — Lakeside Counseling</title>" in page
    async with await stack.signed_in("dana") as http:
        for path, status_wanted, words in (
            (f"/clients/{uuid.uuid4()}", 404, "No such client in your practice."),
            ("/no-such-page", 404, "This was not found."),
            (f"/account/team/{stack.people['dana'].user_id}/deactivate", 409,
             "The practice owner cannot be deactivated."),
        ):
            status, page = await _get(http, path)
            assert status == status_wanted and words in page, path
            assert all(part in page for part in STAFF_TOP_BAR), path
            assert 'href="/account/team">Team</a>' in page  # the owner's own links
            assert '<a href="/">Go to the start page</a>' in page


async def test_client_error_pages_keep_the_portal_top_bar(stack):
    jordan = stack.people["jordan"]
    async with stack.client_session() as http:
        async with http.post("/sign-in", data={"email": jordan.email, "password": jordan.password, "portal": "1"},
                             allow_redirects=False) as resp:
            assert resp.status == 303
        status, page = await _get(http, f"/portal/conversations/{uuid.uuid4()}")
        assert status == 404
        assert '<header class="topbar">' in page and '<a id="sm-link" class="sm-button" href="/portal">' in page
        assert 'data-page="portal"' in page and 'id="sm-panel"' not in page
        assert '<a href="/portal">Go to the start page</a>' in page


async def test_error_pages_for_nobody_have_no_top_bar(stack):
    async with stack.client_session() as http:
        status, page = await _get(http, "/no-such-page")
        assert status == 404 and "This was not found." in page
        assert '<header class="topbar">' not in page and 'data-page="error"' in page

"""The web edge over HTTP against the four real services: sign-in, the staff API,
the quick sign-in link, the Client Portal, CSRF and error mapping."""

from __future__ import annotations

import uuid

from yarl import URL

from tests.web.conftest import LINK


async def test_health_and_readiness(stack):
    async with stack.client_session() as http:
        async with http.get("/healthz") as resp:
            assert resp.status == 200 and await resp.text() == "ok"
        async with http.get("/readyz") as resp:
            assert resp.status == 200, await resp.text()


async def test_sign_in_page_has_the_named_fields(stack):
    async with stack.client_session() as http, http.get("/sign-in") as resp:
        page = await resp.text()
    assert resp.status == 200
    assert "<h1>Sign in</h1>" in page
    assert '<label for="email">Email</label>' in page and '<label for="password">Password</label>' in page
    assert '<button type="submit" class="primary">Sign in</button>' in page
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self'")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in page  # scripts only from /static


async def test_wrong_password_shows_the_page_again(stack):
    async with stack.client_session() as http:
        async with http.post("/sign-in", data={"email": "dana@lakeside.test", "password": "not-her-password-1"},
                             allow_redirects=False) as resp:
            page = await resp.text()
        assert resp.status == 401
        assert "Email or password is incorrect." in page
        assert 'value="dana@lakeside.test"' in page
        async with http.post("/sign-in", data={"email": "nobody@lakeside.test", "password": "whatever-it-is-1"},
                             allow_redirects=False) as resp:
            assert resp.status == 401
            assert "Email or password is incorrect." in await resp.text()
        assert not http.cookie_jar.filter_cookies(URL(stack.url))


async def test_sign_in_sets_a_strict_cookie_and_lands_on_the_staff_home(stack):
    async with stack.client_session() as http:
        async with http.post("/sign-in", data={"email": "dana@lakeside.test", "password": "quiet-harbor-2026",
                                               "next": "//evil.example/"}, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/"
            cookie = resp.cookies["confidant_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
            assert not cookie["secure"]  # development configuration
        async with http.get("/") as resp:
            page = await resp.text()
        assert resp.status == 200
        assert "Lakeside Counseling" in page and "Dana Rivera" in page
        assert ">Secure Messages</button>" in page
        assert 'aria-label="New unread messages" hidden' in page
        assert "New Message" in page and "No conversations yet. Start one with New Message." in page
        # Signing out ends the session server-side and clears the cookie.
        async with http.post("/sign-out", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/sign-in"
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/sign-in?next=/"


async def test_sign_in_follows_a_safe_next(stack):
    async with stack.client_session() as http:
        async with http.post("/sign-in", data={"email": "dana@lakeside.test", "password": "quiet-harbor-2026",
                                               "next": "/?tab=messages"}, allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/?tab=messages"


async def test_pages_need_a_session(stack):
    async with stack.client_session() as http:
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/sign-in?next=/"
        async with http.get("/portal/conversations/abc", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/portal/sign-in?next=/portal/conversations/abc"
        # A stale cookie is cleared.
        http.cookie_jar.update_cookies({"confidant_session": "stale"}, response_url=URL(stack.url))
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.cookies["confidant_session"].value == ""


async def test_api_errors_are_json(stack):
    async with stack.client_session() as http:
        async with http.get("/api/me") as resp:
            assert resp.status == 401 and await resp.json() == {"error": "Please sign in."}
        async with http.get("/api/no-such-thing") as resp:
            assert resp.status == 404 and "error" in await resp.json()
    async with await stack.signed_in("dana") as http:
        async with http.get("/api/conversations/not-an-id/messages", params={"after_seq": "-1"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "after_seq must not be negative."
        async with http.get("/api/conversations/not-an-id/messages") as resp:
            assert resp.status == 400
            assert "not a valid id" in (await resp.json())["error"]
        async with http.get(f"/api/conversations/{uuid.uuid4()}") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "No such conversation."
        async with http.post("/api/conversations", data="not json",
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "The request body must be JSON."
        async with http.post("/api/conversations", json={"participant_ids": []}) as resp:
            assert resp.status == 400
        async with http.get("/nowhere") as resp:
            assert resp.status == 404 and "text/html" in resp.headers["Content-Type"]
            assert "Not found" in await resp.text()


async def test_cross_site_posts_are_refused(stack):
    async with await stack.signed_in("dana") as http:
        # No Origin and no Referer.
        async with stack.client_session(origin=False) as bare:
            bare.cookie_jar.update_cookies(http.cookie_jar.filter_cookies(URL(stack.url)))
            async with bare.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]}) as resp:
                assert resp.status == 403
                assert "did not come from a page of this site" in (await resp.json())["error"]
            async with bare.post("/sign-out", allow_redirects=False) as resp:
                assert resp.status == 403 and "text/html" in resp.headers["Content-Type"]
            # A same-site Referer is enough when there is no Origin.
            async with bare.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]},
                                 headers={"Referer": stack.url + "/"}) as resp:
                assert resp.status in (200, 201), await resp.text()
        async with http.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]},
                             headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        async with http.post("/sign-in", data={"email": "dana@lakeside.test", "password": "quiet-harbor-2026"},
                             headers={"Origin": "http://127.0.0.1:1"}, allow_redirects=False) as resp:
            assert resp.status == 403


async def test_staff_find_enable_open_send_and_list(stack):
    alex, sam = stack.people["alex"], stack.people["sam"]
    async with await stack.signed_in("dana") as http:
        async with http.get("/api/directory", params={"q": "Alex"}) as resp:
            users = (await resp.json())["users"]
        assert [(u["display_name"], u["role"], u["role_label"]) for u in users] == [("Alex Chen", "client", "Client")]
        async with http.get("/api/directory", params={"q": "sam"}) as resp:
            assert [(u["user_id"], u["role_label"]) for u in (await resp.json())["users"]] == [(sam.user_id, "Team member")]
        async with http.get("/api/directory", params={"q": ""}) as resp:
            assert (await resp.json())["users"] == []
        async with http.get("/api/directory", params={"q": "x" * 101}) as resp:
            assert resp.status == 400

        path = f"/api/clients/{alex.user_id}/secure-messaging"
        async with http.get(path) as resp:
            assert await resp.json() == {"client_id": alex.user_id, "enabled": False}
        async with http.post("/api/conversations", json={"participant_ids": [alex.user_id]}) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"] == "Secure messaging is not enabled for this client."
        async with http.post(path) as resp:
            assert await resp.json() == {"client_id": alex.user_id, "enabled": True}

        async with http.post("/api/conversations", json={"participant_ids": [alex.user_id]}) as resp:
            assert resp.status == 201
            opened = await resp.json()
        conversation = opened["conversation"]
        cid = conversation["conversation_id"]
        assert opened["created"] is True and conversation["title"] == "Alex Chen"
        assert {p["display_name"] for p in conversation["participants"]} == {"Alex Chen", "Dana Rivera"}
        async with http.post("/api/conversations", json={"participant_ids": [alex.user_id]}) as resp:
            assert resp.status == 200 and (await resp.json())["conversation"]["conversation_id"] == cid

        key = str(uuid.uuid4())
        send = {"body": "Hello Alex <b>not bold</b>", "idempotency_key": key}
        async with http.post(f"/api/conversations/{cid}/messages", json=send) as resp:
            assert resp.status == 201
            first = (await resp.json())["message"]
        assert first["mine"] is True and first["sender_name"] == "Dana Rivera" and first["seq"] == 1
        async with http.post(f"/api/conversations/{cid}/messages", json=send) as resp:
            assert resp.status == 200
            again = await resp.json()
        assert again["created"] is False and again["message"]["message_id"] == first["message_id"]

        async with http.post(f"/api/conversations/{cid}/messages",
                             json={"body": "x" * 5001, "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 400
            assert "5,000" in (await resp.json())["error"]
        async with http.post(f"/api/conversations/{cid}/messages", json={"body": "hi"}) as resp:
            assert resp.status == 400 and "idempotency_key" in (await resp.json())["error"]

        async with http.get(f"/api/conversations/{cid}/messages", params={"after_seq": "0"}) as resp:
            messages = (await resp.json())["messages"]
        assert [(m["body"], m["sender_name"], m["mine"]) for m in messages] == [
            ("Hello Alex <b>not bold</b>", "Dana Rivera", True)
        ]
        async with http.get(f"/api/conversations/{cid}/messages", params={"after_seq": "1"}) as resp:
            assert (await resp.json())["messages"] == []

        async with http.get("/api/conversations") as resp:
            listed = (await resp.json())["conversations"]
        mine = next(c for c in listed if c["conversation_id"] == cid)
        assert mine["title"] == "Alex Chen" and mine["unread_count"] == 0 and mine["last_activity_at"]

        async with http.get("/api/recent-contacts") as resp:
            recent = (await resp.json())["users"]
        assert alex.user_id in [u["user_id"] for u in recent]

        async with http.get("/api/me") as resp:
            me = await resp.json()
        assert me["display_name"] == "Dana Rivera" and me["is_staff"] and me["message_max_length"] == 5000
        async with http.get("/api/unread") as resp:
            assert await resp.json() == {"unread_messages": 0, "unread_conversations": 0}


async def _message_jordan(stack, text: str) -> str:
    """Dana enables Jordan and messages him; returns the conversation id."""
    jordan = stack.people["jordan"]
    async with await stack.signed_in("dana") as http:
        async with http.post(f"/api/clients/{jordan.user_id}/secure-messaging") as resp:
            assert resp.status == 200
        async with http.post("/api/conversations", json={"participant_ids": [jordan.user_id]}) as resp:
            cid = (await resp.json())["conversation"]["conversation_id"]
        async with http.post(f"/api/conversations/{cid}/messages",
                             json={"body": text, "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status in (200, 201), await resp.text()
    return cid


async def test_quick_sign_in_link_reads_and_replies_once(stack):
    jordan = stack.people["jordan"]
    before = len(await stack.wait_for_emails(jordan.email, 0, within=0))
    secret = f"CANARY-{uuid.uuid4()}"
    cid = await _message_jordan(stack, secret)
    emails = await stack.wait_for_emails(jordan.email, before + 1)
    assert len(emails) == before + 1
    email = emails[0]
    assert secret not in email["subject"] + email["text"] + email["html"]
    link = LINK.search(email["text"]).group(0)
    path = link.removeprefix(stack.url)
    assert path.startswith("/m/")

    async with stack.client_session() as phone:
        # GETs (mail scanners, previews) never use the link up.
        for _ in range(2):
            async with phone.get(path, allow_redirects=False) as resp:
                page = await resp.text()
                assert resp.status == 200
                assert "You have a secure message." in page and ">View message</button>" in page
                assert f'action="{path}"' in page
                # The link's token is in this page's URL: it must never leave in a Referer.
                assert resp.headers["Referrer-Policy"] == "no-referrer"
        async with phone.post(path, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == f"/portal/conversations/{cid}"
        async with phone.get(f"/portal/conversations/{cid}") as resp:
            page = await resp.text()
        assert resp.status == 200
        assert secret in page and "Dana Rivera" in page
        assert "0 / 1000" in page and ">Send</button>" in page and '<label for="message-body">Message</label>' in page
        assert 'aria-label="New unread messages"' in page
        # The quick session reaches only its conversation and only secure messaging.
        async with phone.get("/portal", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/portal/conversations/{cid}"
        async with phone.get(f"/portal/conversations/{uuid.uuid4()}") as resp:
            assert resp.status == 403
            assert "only the conversation it was sent for" in await resp.text()
        async with phone.get("/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/portal"
        async with phone.get("/api/directory", params={"q": "a"}) as resp:
            assert resp.status == 403
        async with phone.post("/api/conversations", json={"participant_ids": [stack.people["dana"].user_id]}) as resp:
            assert resp.status == 403
        async with phone.get("/api/recent-contacts") as resp:
            assert resp.status == 403
        async with phone.get("/api/me") as resp:
            me = await resp.json()
        assert me["session"]["kind"] == "magic_link" and me["message_max_length"] == 1000
        # Replies: within the client limit only.
        async with phone.post(f"/api/conversations/{cid}/messages",
                              json={"body": "y" * 1001, "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 400 and "1,000" in (await resp.json())["error"]
        async with phone.post(f"/api/conversations/{cid}/messages",
                              json={"body": "Thanks, see you Thursday", "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 201
        # The form fallback (no JavaScript) sends too.
        async with phone.post(f"/portal/conversations/{cid}/messages",
                              data={"body": "Sent without script", "idempotency_key": str(uuid.uuid4())},
                              allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/portal/conversations/{cid}"

    # Used once: the link now leads to the Client Portal sign-in, then to the conversation.
    async with stack.client_session() as later:
        async with later.post(path, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == f"/portal/sign-in?next=/portal/conversations/{cid}"
        async with later.get(path, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == f"/portal/sign-in?next=/portal/conversations/{cid}"
        async with later.get(f"/portal/sign-in?next=/portal/conversations/{cid}") as resp:
            page = await resp.text()
        assert "Client Portal" in page and f'name="next" value="/portal/conversations/{cid}"' in page
        async with later.post("/sign-in", data={"email": jordan.email, "password": jordan.password,
                                                "next": f"/portal/conversations/{cid}", "portal": "1"},
                              allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/portal/conversations/{cid}"
        async with later.get(f"/portal/conversations/{cid}") as resp:
            page = await resp.text()
        assert "Thanks, see you Thursday" in page and "Sent without script" in page

    # Dana sees the replies as unread.
    async with await stack.signed_in("dana") as http:
        async with http.get("/api/unread") as resp:
            assert (await resp.json())["unread_messages"] >= 2
        async with http.get("/") as resp:
            assert 'aria-label="New unread messages" >' in await resp.text()


async def test_unknown_links_lead_to_the_portal_sign_in(stack):
    async with stack.client_session() as http:
        for method in ("GET", "POST"):
            async with http.request(method, "/m/" + "A" * 43, allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/portal/sign-in"


async def test_clients_with_a_password_use_the_portal_not_staff_pages(stack):
    cid = await _message_jordan(stack, "Portal check")
    async with await stack.signed_in("jordan") as http:
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/portal"
        async with http.get("/api/directory", params={"q": "a"}) as resp:
            assert resp.status == 403
        async with http.get("/api/conversations") as resp:
            listed = (await resp.json())["conversations"]
        assert [c["conversation_id"] for c in listed] == [cid]
        assert listed[0]["title"] == "Dana Rivera"
        async with http.get("/portal", allow_redirects=False) as resp:
            # Exactly one conversation: straight to it.
            assert resp.status == 303 and resp.headers["Location"] == f"/portal/conversations/{cid}"
        async with http.post("/sign-out", allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/portal/sign-in"
    # With a second conversation (Sam's), the portal lists both.
    jordan = stack.people["jordan"]
    async with await stack.signed_in("sam") as http:
        async with http.post("/api/conversations", json={"participant_ids": [jordan.user_id]}) as resp:
            sam_cid = (await resp.json())["conversation"]["conversation_id"]
        async with http.post(f"/api/conversations/{sam_cid}/messages",
                             json={"body": "Hi from Sam", "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 201
    async with await stack.signed_in("jordan") as http:
        async with http.get("/portal") as resp:
            page = await resp.text()
        assert resp.status == 200
        assert f'href="/portal/conversations/{cid}"' in page and f'href="/portal/conversations/{sam_cid}"' in page
        assert "Sam Okafor" in page and "Dana Rivera" in page
        assert '<span class="badge">1<span class="visually-hidden"> unread</span></span>' in page
        assert 'aria-label="New unread messages" >' in page
    async with await stack.signed_in("dana") as http:
        async with http.get("/portal", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"

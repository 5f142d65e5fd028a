"""The conversation list's JSON API over HTTP, against the four real services:
previews and unread counts, keyset pages, archiving for oneself (and the return
on a new message), and a thread whose client has secure messaging off.
"""

from __future__ import annotations

import uuid

import pytest


async def api(http, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async with http.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


async def send(http, cid: str, text: str) -> dict:
    status, body = await api(http, "POST", f"/api/conversations/{cid}/messages",
                             json={"body": text, "idempotency_key": str(uuid.uuid4())})
    assert status == 201, body
    return body["message"]


async def listed(http, archived: bool = False) -> dict[str, dict]:
    status, body = await api(http, "GET", "/api/conversations", params={"archived": "1" if archived else "0"})
    assert status == 200, body
    return {c["conversation_id"]: c for c in body["conversations"]}


@pytest.fixture(scope="module")
async def jordan_thread(stack) -> str:
    """Dana's conversation with Jordan (enabled), with one message from her."""
    jordan = stack.people["jordan"]
    async with await stack.signed_in("dana") as http:
        status, _ = await api(http, "POST", f"/api/clients/{jordan.user_id}/secure-messaging", json={"enabled": True})
        assert status == 200
        status, body = await api(http, "POST", "/api/conversations", json={"participant_ids": [jordan.user_id]})
        assert status in (200, 201), body
        cid = body["conversation"]["conversation_id"]
        await send(http, cid, "Hello Jordan, a note about Thursday")
    return cid


async def test_previews_unread_counts_and_pages(stack, jordan_thread):
    cid = jordan_thread
    async with await stack.signed_in("dana") as http:
        mine = (await listed(http))[cid]
        assert mine["preview"].startswith("Hello Jordan") and mine["last_sender_name"] == "You"
        assert mine["unread_count"] == 0 and mine["archived"] is False and mine["can_send"] is True

        # A second conversation (with Sam), newer: pages of one, newest first, then the older one.
        status, body = await api(http, "POST", "/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]})
        sam_cid = body["conversation"]["conversation_id"]
        await send(http, sam_cid, "Team note")
        status, first = await api(http, "GET", "/api/conversations", params={"page_size": "1"})
        assert status == 200 and [c["conversation_id"] for c in first["conversations"]] == [sam_cid]
        assert first["next_page_token"]
        status, second = await api(http, "GET", "/api/conversations",
                                   params={"page_size": "1", "page_token": first["next_page_token"]})
        assert [c["conversation_id"] for c in second["conversations"]] == [cid]

    async with await stack.signed_in("jordan") as http:
        theirs = (await listed(http))[cid]
        assert theirs["unread_count"] == 1 and theirs["last_sender_name"] == "Dana Rivera"
        assert theirs["preview"].startswith("Hello Jordan") and theirs["can_send"] is True
        await send(http, cid, "Thanks, Thursday works")
    async with await stack.signed_in("dana") as http:
        mine = (await listed(http))[cid]
        assert mine["unread_count"] == 1 and mine["preview"] == "Thanks, Thursday works"
        assert mine["last_sender_name"] == "Jordan Lee"

        for params, message in (
            ({"archived": "maybe"}, "archived must be true or false."),
            ({"page_size": "0"}, "page_size must be between 1 and 50."),
            ({"page_size": "51"}, "page_size must be between 1 and 50."),
            ({"page_size": "x"}, "page_size must be a whole number."),
            ({"page_token": "x" * 600}, "page_token is not a page token from this list."),
        ):
            status, body = await api(http, "GET", "/api/conversations", params=params)
            assert status == 400 and body["error"] == message, (params, body)
        status, body = await api(http, "GET", "/api/conversations", params={"page_token": "not-a-token"})
        assert status == 400 and body["error"] == "The page token is not valid."


async def test_archive_for_oneself_and_return_on_a_new_message(stack, jordan_thread):
    cid = jordan_thread
    async with await stack.signed_in("dana") as http:
        status, body = await api(http, "POST", f"/api/conversations/{cid}/archive", json={"archived": True})
        assert status == 200 and body == {"conversation_id": cid, "archived": True}
        assert cid not in await listed(http)
        archived = (await listed(http, archived=True))[cid]
        assert archived["archived"] is True and archived["title"] == "Jordan Lee"

    # Only for Dana: Jordan still has it, and his message brings it back for her.
    async with await stack.signed_in("jordan") as http:
        assert cid in await listed(http)
        await send(http, cid, "One more question")
    async with await stack.signed_in("dana") as http:
        back = (await listed(http))[cid]
        assert back["archived"] is False and back["preview"] == "One more question"
        assert cid not in await listed(http, archived=True)

        # Archive, then bring it back by hand.
        await api(http, "POST", f"/api/conversations/{cid}/archive", json={"archived": True})
        status, body = await api(http, "POST", f"/api/conversations/{cid}/archive", json={"archived": False})
        assert status == 200 and body["archived"] is False
        assert cid in await listed(http)

        # Bad input and unknown conversations.
        status, body = await api(http, "POST", f"/api/conversations/{cid}/archive", json={"archived": "yes"})
        assert status == 400 and body["error"] == "archived must be true or false."
        status, body = await api(http, "POST", f"/api/conversations/{cid}/archive", data="[",
                                 headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"] == "The request body must be JSON."
        status, body = await api(http, "POST", f"/api/conversations/{uuid.uuid4()}/archive", json={"archived": True})
        assert status == 404 and body["error"] == "No such conversation."
        status, body = await api(http, "POST", "/api/conversations/not-an-id/archive", json={"archived": True})
        assert status == 400 and body["error"]

    # Someone who is not in the conversation cannot archive it (nor learn it exists).
    async with await stack.signed_in("sam") as http:
        status, body = await api(http, "POST", f"/api/conversations/{cid}/archive", json={"archived": True})
        assert status == 404 and body["error"] == "No such conversation."
    async with stack.client_session() as http:
        status, body = await api(http, "POST", f"/api/conversations/{cid}/archive", json={"archived": True})
        assert status == 401
        status, body = await api(http, "GET", "/api/conversations", params={"archived": "1"})
        assert status == 401
    async with await stack.signed_in("dana") as http:
        assert cid in await listed(http)  # none of that changed Dana's list
        async with http.post(f"/api/conversations/{cid}/archive", json={"archived": True},
                             headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        assert cid in await listed(http)


async def test_a_thread_whose_client_is_off_can_be_enabled_again(stack, jordan_thread):
    cid, jordan = jordan_thread, stack.people["jordan"]
    async with await stack.signed_in("dana") as http:
        status, state = await api(http, "POST", f"/api/clients/{jordan.user_id}/secure-messaging",
                                  json={"enabled": False})
        assert status == 200 and state["enabled"] is False
        status, body = await api(http, "GET", f"/api/conversations/{cid}")
        assert body["conversation"]["can_send"] is False and body["conversation"]["client_id"] == jordan.user_id
        status, refused = await api(http, "POST", f"/api/conversations/{cid}/messages",
                                    json={"body": "Are you there?", "idempotency_key": str(uuid.uuid4())})
        assert status == 409 and refused["error"]
        # The thread stays readable.
        status, body = await api(http, "GET", f"/api/conversations/{cid}/messages")
        assert status == 200 and body["messages"]

    async with await stack.signed_in("jordan") as http:
        status, body = await api(http, "GET", f"/api/conversations/{cid}")
        assert body["conversation"]["can_send"] is False
        async with http.get(f"/portal/conversations/{cid}") as resp:
            page = await resp.text()
        assert "replies cannot be sent here" in page and ">Send</button>" not in page

    async with await stack.signed_in("dana") as http:
        status, state = await api(http, "POST", f"/api/clients/{jordan.user_id}/secure-messaging",
                                  json={"enabled": True})
        assert state["enabled"] is True
        status, body = await api(http, "GET", f"/api/conversations/{cid}")
        assert body["conversation"]["can_send"] is True
        await send(http, cid, "Back on")

"""The practice's messaging settings page over HTTP, against the four real services.

The owner turns the three switches on and off ("Secure messaging with clients",
"Automatically enable for new clients", "Team messaging") and each takes effect:
a new client is enabled at once, staff conversations stop, client conversations
stop. Other staff read the settings; clients and anonymous callers do not.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

from tests.support import unique

SWITCHES = ("secure_messaging_enabled", "auto_enable_new_clients", "team_messaging_enabled")


async def get(http, path: str) -> tuple[int, str, str]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def post(http, path: str, form: dict) -> tuple[int, str, str]:
    async with http.post(path, data=form, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


def ticked(page: str) -> set[str]:
    return {name for name in SWITCHES if re.search(rf'name="{name}" value="1" checked', page)}


async def save(http, *on: str) -> None:
    status, page, location = await post(http, "/settings", {name: "1" for name in on})
    assert status == 303 and location == "/settings?saved=1", page


async def test_the_owner_changes_the_settings(stack):
    async with await stack.signed_in("dana") as http:
        status, page, _ = await get(http, "/")
        assert 'href="/settings">Settings</a>' in page
        status, page, _ = await get(http, "/settings")
        assert status == 200
        for text in ("<h1>Settings</h1>", "Secure messaging with clients", "Automatically enable for new clients",
                     "Team messaging", ">Save</button>"):
            assert text in page, text
        assert "<fieldset >" in page  # editable
        assert ticked(page) == {"secure_messaging_enabled", "team_messaging_enabled"}

        await save(http, "secure_messaging_enabled", "auto_enable_new_clients")
        status, page, _ = await get(http, "/settings?saved=1")
        assert "Settings saved." in page
        assert ticked(page) == {"secure_messaging_enabled", "auto_enable_new_clients"}

        # Team messaging off: staff cannot start a conversation with each other.
        async with http.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]}) as resp:
            assert resp.status == 409, await resp.text()
            assert (await resp.json())["error"]

        # Automatically enable for new clients: a client added now can be messaged at once.
        async with http.post("/api/clients", json={"display_name": "Morgan Auto",
                                                   "email": f"{unique('morgan')}@client.test"}) as resp:
            assert resp.status == 201
            client_id = (await resp.json())["client"]["user_id"]
        deadline = time.monotonic() + 15
        while True:
            async with http.get(f"/api/clients/{client_id}/secure-messaging") as resp:
                enabled = (await resp.json())["enabled"]
            if enabled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert enabled

        # Secure messaging with clients off: no client conversation, the Client Info page says why.
        await save(http, "team_messaging_enabled")
        async with http.post("/api/conversations", json={"participant_ids": [client_id]}) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"] == "Secure messaging is turned off for this practice."
        status, page, _ = await get(http, f"/clients/{client_id}")
        assert "Secure messaging is turned off for the practice." in page
        assert f'action="/clients/{client_id}/secure-messaging"' not in page

        await save(http, "secure_messaging_enabled", "team_messaging_enabled")
        async with http.post("/api/conversations", json={"participant_ids": [client_id]}) as resp:
            assert resp.status in (200, 201)
        async with http.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]}) as resp:
            assert resp.status in (200, 201)
            cid = (await resp.json())["conversation"]["conversation_id"]
        async with http.post(f"/api/conversations/{cid}/messages",
                             json={"body": "Team hello", "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 201


async def test_others_cannot_change_the_settings(stack):
    async with await stack.signed_in("sam") as http:
        status, page, _ = await get(http, "/")
        assert 'href="/settings"' not in page  # the link is the owner's
        status, page, _ = await get(http, "/settings")
        assert status == 200 and "<fieldset disabled>" in page
        assert "Only the practice owner can change these settings." in page and ">Save</button>" not in page
        status, page, _ = await post(http, "/settings", {"team_messaging_enabled": "1"})
        assert status == 403 and "Only the practice owner can change the practice&#x27;s settings." in page
    async with await stack.signed_in("jordan") as http:
        status, _, location = await get(http, "/settings")
        assert status == 303 and location == "/portal"
        status, _, location = await post(http, "/settings", {"team_messaging_enabled": "1"})
        assert status == 303 and location == "/portal"
    async with stack.client_session() as http:
        status, _, location = await get(http, "/settings")
        assert status == 303 and location == "/sign-in?next=/settings"
        status, _, location = await post(http, "/settings", {})
        assert status == 303 and location.startswith("/sign-in")
    async with await stack.signed_in("dana") as http:
        # Nothing changed; and a cross-site post is refused.
        status, page, _ = await get(http, "/settings")
        assert ticked(page) == {"secure_messaging_enabled", "team_messaging_enabled"}
        async with http.post("/settings", data={}, headers={"Origin": "https://evil.example"},
                             allow_redirects=False) as resp:
            assert resp.status == 403
        status, page, _ = await get(http, "/settings")
        assert ticked(page) == {"secure_messaging_enabled", "team_messaging_enabled"}

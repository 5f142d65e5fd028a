"""The Clients pages and their JSON API over HTTP, against the four real services.

Staff list, search and page through the practice's clients, add one (form and
JSON), edit Client Info (name, email, phone number, "Text message ok") and turn
secure messaging on and off. Clients, other practices and anonymous callers are
refused; bad input gets a 400 with a sentence.
"""

from __future__ import annotations

import html
import re
import uuid

from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.common.clients import bearer
from tests.support import Tokens, unique
from tests.web.conftest import STAFF_PASSWORD, Person


async def get(http, path: str, **params) -> tuple[int, str, str]:
    async with http.get(path, params=params or None, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def post(http, path: str, form: dict) -> tuple[int, str, str]:
    async with http.post(path, data=form, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def api(http, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async with http.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


async def other_practice_owner(stack) -> Person:
    """The owner of another practice, signed in through the same web edge."""
    email = f"{unique('owner')}@elsewhere.test"
    async with stack.auth() as auth:
        created = await auth.CreatePractice(
            auth_pb.CreatePracticeRequest(name="Elsewhere Therapy", owner_email=email,
                                          owner_display_name="Erin Blake", owner_password=STAFF_PASSWORD),
            metadata=bearer(Tokens(stack.keys_dir).service("web")), timeout=30,
        )
    stack.people["erin"] = Person(created.owner.user_id, email, "Erin Blake", STAFF_PASSWORD)
    return stack.people["erin"]


def field_value(page: str, field_id: str) -> str:
    match = re.search(rf'<input id="{field_id}"[^>]*value="([^"]*)"', page, re.S)
    assert match, f"no #{field_id} in the page"
    return html.unescape(match.group(1))


async def test_staff_find_clients_by_search_and_pages(stack):
    # Letters only: a digit in the tag would let the search for "26" below match every client.
    tag = uuid.uuid4().hex[:6].translate(str.maketrans("0123456789", "ghijklmnop"))
    async with await stack.signed_in("dana") as http:
        status, page, _ = await get(http, "/")
        assert status == 200 and 'href="/clients">Clients</a>' in page

        created = []
        for n in range(27):
            status, body = await api(http, "POST", "/api/clients",
                                     json={"display_name": f"Pager{tag} {n:02d}", "email": f"pager{tag}.{n}@client.test"})
            assert status == 201, body
            assert body["client"]["display_name"] == f"Pager{tag} {n:02d}" and body["client"]["has_password"] is False
            created.append(body["client"]["user_id"])

        status, first = await api(http, "GET", "/api/clients", params={"q": f"pager{tag}"})
        assert status == 200 and len(first["clients"]) == 25 and first["next_page_token"]
        status, second = await api(http, "GET", "/api/clients",
                                   params={"q": f"pager{tag}", "page_token": first["next_page_token"]})
        assert status == 200 and second["next_page_token"] == ""
        names = [c["display_name"] for c in first["clients"] + second["clients"]]
        assert names == [f"Pager{tag} {n:02d}" for n in range(27)]  # name order, none twice, none missed
        assert {c["user_id"] for c in first["clients"] + second["clients"]} == set(created)

        # A partial, accent-free, case-insensitive search.
        status, body = await api(http, "POST", "/api/clients",
                                 json={"display_name": f"Zoë Ibáñez{tag}", "email": f"zoe{tag}@client.test"})
        assert status == 201
        status, found = await api(http, "GET", "/api/clients", params={"q": f"IBANEZ{tag}"})
        assert [c["display_name"] for c in found["clients"]] == [f"Zoë Ibáñez{tag}"]

        # The page itself: the first page, the search box, "Load more" carrying the token.
        status, page, _ = await get(http, "/clients", q=f"pager{tag}")
        assert status == 200
        for text in ("<h1>Clients</h1>", '<label for="client-search">Search</label>', ">Load more</button>",
                     f'name="page_token" value="{first["next_page_token"]}"', ">Add client</button>",
                     f'href="/clients/{created[0]}"', f"pager{tag}.0@client.test"):
            assert text in page, text
        assert f'href="/clients/{created[26]}"' not in page
        status, page, _ = await get(http, "/clients", q=f"pager{tag}", page_token=first["next_page_token"])
        assert status == 200 and f'href="/clients/{created[26]}"' in page
        status, page, _ = await get(http, "/clients", q=f"nobody{tag}")
        assert status == 200 and f"No clients match “nobody{tag}”." in html.unescape(page)

        # Team members see the clients too.
    async with await stack.signed_in("sam") as http:
        status, found = await api(http, "GET", "/api/clients", params={"q": f"pager{tag} 26"})
        assert status == 200 and [c["user_id"] for c in found["clients"]] == [created[26]]


async def test_new_message_search_puts_recent_contacts_first(stack):
    tag = uuid.uuid4().hex[:6]
    async with await stack.signed_in("dana") as http:
        ids = []
        for n in range(2):
            status, body = await api(http, "POST", "/api/clients",
                                     json={"display_name": f"Recent{tag} Person{n}", "email": f"r{tag}{n}@client.test"})
            ids.append(body["client"]["user_id"])
        status, found = await api(http, "GET", "/api/directory", params={"q": f"recent{tag}"})
        assert [u["display_name"] for u in found["users"]] == [f"Recent{tag} Person0", f"Recent{tag} Person1"]
        assert not any(u["recent"] for u in found["users"])
        # Dana messages Person1: from then on Person1 comes first.
        await api(http, "POST", f"/api/clients/{ids[1]}/secure-messaging", json={"enabled": True})
        status, opened = await api(http, "POST", "/api/conversations", json={"participant_ids": [ids[1]]})
        assert status == 201, opened
        status, _ = await api(http, "POST", f"/api/conversations/{opened['conversation']['conversation_id']}/messages",
                              json={"body": "Welcome", "idempotency_key": str(uuid.uuid4())})
        assert status == 201
        status, found = await api(http, "GET", "/api/directory", params={"q": f"recent{tag}"})
        assert [(u["display_name"], u["recent"]) for u in found["users"]] == [
            (f"Recent{tag} Person1", True), (f"Recent{tag} Person0", False)]


async def test_add_a_client_then_edit_client_info(stack):
    email = f"{unique('riley')}@client.test"
    async with await stack.signed_in("dana") as http:
        status, page, _ = await post(http, "/clients", {"display_name": "  Riley   Moss ", "email": ""})
        assert status == 400 and "Enter the client&#x27;s name and email address." in page
        assert 'value="Riley Moss"' in page  # what was typed stays

        status, _, location = await post(http, "/clients", {"display_name": "Riley Moss", "email": email})
        assert status == 303 and re.fullmatch(r"/clients/[0-9a-f-]{36}\?added=1", location)
        client_id = location.split("/")[2].split("?")[0]
        assert email not in location

        status, page, _ = await get(http, location)
        assert status == 200
        for text in ("<h1>Riley Moss</h1>", "Client added.", ">Client Info</h2>", '<label for="client-name">Name</label>',
                     '<label for="client-phone">Phone number</label>', "Text message ok", ">Save</button>",
                     "Secure messaging is off for Riley Moss.", ">Enable Secure Messaging</button>"):
            assert text in page, text
        assert field_value(page, "client-email") == email

        # The same email again is refused with auth's sentence, and the form keeps the input.
        status, page, _ = await post(http, "/clients", {"display_name": "Riley Again", "email": email})
        assert status == 409 and 'value="Riley Again"' in page and 'class="error" role="alert"' in page

        # Client Info's Save: the profile to auth, the phone to consent.
        new_email = f"{unique('riley.moss')}@client.test"
        status, _, location = await post(http, f"/clients/{client_id}", {
            "display_name": "Riley Moss-Hart", "email": new_email, "phone_number": "(212) 555-0199", "text_ok": "1"})
        assert status == 303 and location == f"/clients/{client_id}?saved=1"
        status, page, _ = await get(http, location)
        assert "Saved." in page and "<h1>Riley Moss-Hart</h1>" in page
        assert field_value(page, "client-email") == new_email
        assert field_value(page, "client-phone") == "+12125550199"
        assert re.search(r'name="text_ok" value="1" checked', page)
        assert "Text messages are on" in page

        # Removing the number turns "Text message ok" off with it.
        status, _, _ = await post(http, f"/clients/{client_id}", {
            "display_name": "Riley Moss-Hart", "email": new_email, "phone_number": ""})
        assert status == 303
        status, page, _ = await get(http, f"/clients/{client_id}")
        assert field_value(page, "client-phone") == "" and not re.search(r'name="text_ok" value="1" checked', page)

        # Bad input: a readable 400 on the page, nothing saved.
        status, page, _ = await post(http, f"/clients/{client_id}", {
            "display_name": "", "email": new_email, "phone_number": ""})
        assert status == 400 and "Enter the client&#x27;s name and email address." in page
        status, page, _ = await post(http, f"/clients/{client_id}", {
            "display_name": "Riley Moss-Hart", "email": new_email, "phone_number": "not a phone"})
        assert status == 400 and 'class="error" role="alert"' in page and 'value="not a phone"' in page

        # Secure messaging on, then off, from Client Info.
        status, _, location = await post(http, f"/clients/{client_id}/secure-messaging", {"enabled": "1"})
        assert status == 303 and location == f"/clients/{client_id}?messaging=on"
        status, page, _ = await get(http, location)
        assert "Secure messaging is on for Riley Moss-Hart." in page and ">Disable Secure Messaging</button>" in page
        status, state = await api(http, "GET", f"/api/clients/{client_id}/secure-messaging")
        assert state == {"client_id": client_id, "enabled": True}
        status, _, location = await post(http, f"/clients/{client_id}/secure-messaging", {"enabled": "0"})
        assert status == 303 and location == f"/clients/{client_id}?messaging=off"
        status, state = await api(http, "GET", f"/api/clients/{client_id}/secure-messaging")
        assert state["enabled"] is False
        status, page, _ = await post(http, f"/clients/{client_id}/secure-messaging", {"enabled": "maybe"})
        assert status == 400 and "Choose to enable or disable secure messaging." in page

        # And over the JSON API: {"enabled": false|true}.
        status, state = await api(http, "POST", f"/api/clients/{client_id}/secure-messaging", json={"enabled": True})
        assert status == 200 and state["enabled"] is True
        status, state = await api(http, "POST", f"/api/clients/{client_id}/secure-messaging", json={"enabled": False})
        assert status == 200 and state["enabled"] is False
        status, body = await api(http, "POST", f"/api/clients/{client_id}/secure-messaging", json={"enabled": "no"})
        assert status == 400 and body["error"] == "enabled must be true or false."


async def test_refusals(stack):
    alex = stack.people["alex"]
    # Anonymous: pages go to sign-in, the API says 401.
    async with stack.client_session() as http:
        status, _, location = await get(http, "/clients")
        assert status == 303 and location == "/sign-in?next=/clients"
        status, _, location = await get(http, f"/clients/{alex.user_id}")
        assert status == 303 and location.startswith("/sign-in?next=")
        status, body = await api(http, "GET", "/api/clients")
        assert status == 401 and body == {"error": "Please sign in."}
        status, body = await api(http, "POST", "/api/clients", json={"display_name": "X", "email": "x@client.test"})
        assert status == 401
        status, _, location = await post(http, "/clients", {"display_name": "X", "email": "x@client.test"})
        assert status == 303 and location.startswith("/sign-in")

    # A client: the portal, and 403 from the staff API.
    async with await stack.signed_in("jordan") as http:
        status, _, location = await get(http, "/clients")
        assert status == 303 and location == "/portal"
        status, _, location = await post(http, f"/clients/{alex.user_id}/secure-messaging", {"enabled": "1"})
        assert status == 303 and location == "/portal"
        for method, path, kwargs in (
            ("GET", "/api/clients", {}),
            ("POST", "/api/clients", {"json": {"display_name": "X", "email": "x@client.test"}}),
            ("POST", f"/api/clients/{alex.user_id}/secure-messaging", {"json": {"enabled": True}}),
        ):
            status, body = await api(http, method, path, **kwargs)
            assert status == 403 and body["error"] == "Only the practice's clinicians and team members can do this."

    # Another practice's owner sees none of Lakeside's clients.
    await other_practice_owner(stack)
    async with await stack.signed_in("erin") as http:
        status, page, _ = await get(http, f"/clients/{alex.user_id}")
        assert status == 404 and "No such client in your practice." in page and "Alex Chen" not in page
        status, _, _ = await post(http, f"/clients/{alex.user_id}",
                                  {"display_name": "Taken Over", "email": "evil@client.test"})
        assert status == 404
        status, _, _ = await post(http, f"/clients/{alex.user_id}/secure-messaging", {"enabled": "1"})
        assert status == 404
        status, body = await api(http, "GET", "/api/clients", params={"q": "Alex"})
        assert status == 200 and body["clients"] == []
        status, body = await api(http, "POST", f"/api/clients/{alex.user_id}/secure-messaging", json={"enabled": True})
        assert status == 404 and body["error"]
    async with await stack.signed_in("dana") as http:
        status, page, _ = await get(http, f"/clients/{alex.user_id}")
        assert status == 200 and "<h1>Alex Chen</h1>" in page  # untouched

        # Not a client, not an id.
        status, page, _ = await get(http, f"/clients/{stack.people['sam'].user_id}")
        assert status == 404 and "No such client in your practice." in page
        status, _, _ = await get(http, "/clients/not-an-id")
        assert status == 404

        # Bad input to the API: 400 with a sentence.
        for payload, message in (
            ({}, "Enter the client's name."),
            ({"display_name": "Only Name"}, "Enter the client's email address."),
            ({"display_name": "N" * 201, "email": "n@client.test"}, "A name can be at most 200 characters."),
        ):
            status, body = await api(http, "POST", "/api/clients", json=payload)
            assert status == 400 and body["error"] == message
        status, body = await api(http, "POST", "/api/clients", data="nope", headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"] == "The request body must be JSON."
        status, body = await api(http, "POST", "/api/clients", json={"display_name": "Bad Mail", "email": "not-an-email"})
        assert status == 400 and body["error"]
        status, body = await api(http, "GET", "/api/clients", params={"q": "x" * 101})
        assert status == 400 and body["error"] == "A search can be at most 100 characters."
        status, body = await api(http, "GET", "/api/clients", params={"page_token": "garbage"})
        assert status == 400 and body["error"]

        # A form post from another site is refused.
        async with http.post("/clients", data={"display_name": "X", "email": "x@client.test"},
                             headers={"Origin": "https://evil.example"}, allow_redirects=False) as resp:
            assert resp.status == 403

"""Who may use each messaging page and API route of the web edge: every role against
every route, through the real web edge in front of the real services.

The roles are those of the RPC matrix (tests/authz/test_messaging_rpc_matrix.py), as a
browser would be: signed in with email and password, through a quick sign-in link, or
not at all. A practice system's service-account token sent to the web edge is not a
session: the edge treats it as anonymous (the gRPC APIs are the practice systems' way in).

Each cell is the HTTP status the route answers (redirects are not followed: 303 is the
way to a sign-in page). Changing requests are aimed so that repeating them leaves the
world as it was. A test fails if a route is added without a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.common.clients import bearer
from services.web.config import WebConfig
from services.web.routes import setup_routes
from tests.support import Tokens, service_env
from tests.web.conftest import STAFF_PASSWORD, WebStack, web_stack

ROLES = (
    "client", "other_client", "clinician", "other_clinician", "team_member", "owner",
    "outside_clinician", "service_account", "quick_link", "anonymous",
)
STAFF = ("clinician", "other_clinician", "team_member", "owner")
CLIENTS = ("client", "other_client", "quick_link")
NOBODY = ("service_account", "anonymous")
IN_CONVERSATION = ("client", "clinician", "quick_link")
NOT_IN_CONVERSATION = ("other_client", "other_clinician", "team_member", "owner", "outside_clinician")


def row(**by_group: int) -> dict[str, int]:
    """A route's row: keys are roles or the groups above (lower-cased group names)."""
    groups = {"staff": STAFF, "clients": CLIENTS, "nobody": NOBODY, "in_conversation": IN_CONVERSATION,
              "not_in_conversation": NOT_IN_CONVERSATION}
    cells: dict[str, int] = {}
    for key, status in by_group.items():
        for role in groups.get(key, (key,)):
            cells[role] = status
    assert set(cells) == set(ROLES), set(cells) ^ set(ROLES)
    return cells


# (method, path template, JSON body or form) -> role -> status.
CONV = "{conversation}"
CLIENT = "{client}"
ROUTES: dict[tuple[str, str], dict[str, int]] = {
    # Pages.
    ("GET", "/"): row(staff=200, outside_clinician=200, clients=303, nobody=303),
    # A client with one conversation is taken straight to it.
    ("GET", "/portal"): row(client=303, other_client=200, quick_link=303, staff=303, outside_clinician=303,
                            nobody=303),
    ("GET", f"/portal/conversations/{CONV}"): row(
        client=200, quick_link=200, other_client=404, staff=303, outside_clinician=303, nobody=303),
    ("POST", f"/portal/conversations/{CONV}/messages"): row(
        client=303, quick_link=303, other_client=404, staff=303, outside_clinician=303, nobody=303),
    ("GET", "/clients"): row(staff=200, outside_clinician=200, clients=303, nobody=303),
    ("GET", f"/clients/{CLIENT}"): row(staff=200, outside_clinician=404, clients=303, nobody=303),
    ("POST", f"/clients/{CLIENT}"): row(staff=303, outside_clinician=404, clients=303, nobody=303),
    ("POST", f"/clients/{CLIENT}/secure-messaging"): row(
        staff=303, outside_clinician=404, clients=303, nobody=303),
    ("POST", "/clients"): row(staff=303, outside_clinician=303, clients=303, nobody=303),
    ("GET", "/settings"): row(staff=200, outside_clinician=200, clients=303, nobody=303),
    ("POST", "/settings"): row(owner=303, clinician=403, other_clinician=403, team_member=403,
                               outside_clinician=403, clients=303, nobody=303),
    # "Send failed alerts again": the owner only (notify checks again).
    ("POST", "/settings/failed-alerts"): row(owner=303, clinician=403, other_clinician=403, team_member=403,
                                             outside_clinician=403, clients=303, nobody=303),
    # The JSON API.
    ("GET", "/api/me"): row(staff=200, outside_clinician=200, clients=200, nobody=401),
    ("GET", "/api/conversations"): row(staff=200, outside_clinician=200, clients=200, nobody=401),
    # The clinician's conversation with Jordan exists (200); the others start theirs (201).
    ("POST", "/api/conversations"): row(clinician=200, other_clinician=201, team_member=201, owner=201,
                                        outside_clinician=404, clients=403, nobody=401),
    ("GET", f"/api/conversations/{CONV}"): row(in_conversation=200, not_in_conversation=404, nobody=401),
    ("GET", f"/api/conversations/{CONV}/messages"): row(
        in_conversation=200, not_in_conversation=404, nobody=401),
    ("POST", f"/api/conversations/{CONV}/messages"): row(
        in_conversation=201, not_in_conversation=404, nobody=401),
    ("POST", f"/api/conversations/{CONV}/read"): row(in_conversation=200, not_in_conversation=404, nobody=401),
    ("POST", f"/api/conversations/{CONV}/archive"): row(
        in_conversation=200, not_in_conversation=404, nobody=401),
    # Where the alerts about the staff member's messages are: staff who may see the conversation.
    ("GET", f"/api/conversations/{CONV}/deliveries"): row(
        clinician=200, other_clinician=404, team_member=404, owner=404, outside_clinician=404, clients=403,
        nobody=401),
    ("GET", "/api/unread"): row(staff=200, outside_clinician=200, clients=200, nobody=401),
    ("GET", "/api/directory"): row(staff=200, outside_clinician=200, clients=403, nobody=401),
    ("GET", "/api/recent-contacts"): row(staff=200, outside_clinician=200, clients=403, nobody=401),
    ("GET", "/api/clients"): row(staff=200, outside_clinician=200, clients=403, nobody=401),
    ("POST", "/api/clients"): row(staff=201, outside_clinician=201, clients=403, nobody=401),
    ("GET", f"/api/clients/{CLIENT}/secure-messaging"): row(
        staff=200, outside_clinician=404, clients=403, nobody=401),
    ("POST", f"/api/clients/{CLIENT}/secure-messaging"): row(
        staff=200, outside_clinician=404, clients=403, nobody=401),
    ("GET", "/api/events"): row(staff=200, outside_clinician=200, clients=200, nobody=401),
}
# Routes of the web edge that are not about messaging (sign-in, credentials, team,
# security, health, the development mailbox, static files) are covered by their own tests.
MESSAGING_PREFIXES = ("/api/", "/portal/conversations", "/clients", "/settings")
MESSAGING_PAGES = {"/", "/portal"}


@dataclass
class World:
    stack: WebStack
    conversation_id: str
    client_id: str
    sessions: dict[str, aiohttp.ClientSession]


async def _sign_in(stack: WebStack, email: str, password: str, portal: bool) -> aiohttp.ClientSession:
    http = stack.client_session()
    data = {"email": email, "password": password, **({"portal": "1"} if portal else {})}
    async with http.post("/sign-in", data=data, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
    return http


@pytest.fixture(scope="module")
async def world(fresh_database, keys_dir, tokens):
    async with web_stack(fresh_database, keys_dir, tokens) as stack:
        clinician = await stack.add_person("riley", "clinician", "Riley Park", STAFF_PASSWORD)
        other = await stack.add_person("casey", "clinician", "Casey Moreno", STAFF_PASSWORD)
        other_client = await stack.add_person("morgan", "client", "Morgan Diaz", "birch-lantern-42")
        web = bearer(Tokens(keys_dir).service("web"))
        async with stack.auth() as auth:
            outside = await auth.CreatePractice(
                auth_pb.CreatePracticeRequest(name="Hillside Therapy", owner_email="lee@hillside.test",
                                              owner_display_name="Lee Hart", owner_password=STAFF_PASSWORD),
                metadata=web, timeout=30,
            )
            outsider = await auth.CreateUser(
                auth_pb.CreateUserRequest(practice_id=outside.practice.practice_id, role=auth_pb.ROLE_CLINICIAN,
                                          email="kim@hillside.test", display_name="Kim Vo",
                                          password=STAFF_PASSWORD),
                metadata=web, timeout=30,
            )
            owner = stack.people["dana"]
            owner_token = Tokens(keys_dir).user(owner.user_id, stack.practice_id, "owner")
            account = await auth.CreateServiceAccount(
                auth_pb.CreateServiceAccountRequest(display_name="EHR", scopes=["messaging.read", "messaging.send"]),
                metadata=bearer(owner_token), timeout=30,
            )
            issued = await auth.IssueServiceAccountToken(
                auth_pb.IssueServiceAccountTokenRequest(
                    client_id=account.account.client_id, client_secret=account.client_secret),
                timeout=30,
            )
        jordan = stack.people["jordan"]
        sessions = {
            "clinician": await _sign_in(stack, clinician.email, STAFF_PASSWORD, False),
            "other_clinician": await _sign_in(stack, other.email, STAFF_PASSWORD, False),
            "team_member": await _sign_in(stack, "sam@lakeside.test", STAFF_PASSWORD, False),
            "owner": await _sign_in(stack, "dana@lakeside.test", STAFF_PASSWORD, False),
            "outside_clinician": await _sign_in(stack, outsider.user.email, STAFF_PASSWORD, False),
            "client": await _sign_in(stack, jordan.email, jordan.password, True),
            "other_client": await _sign_in(stack, other_client.email, other_client.password, True),
            "anonymous": stack.client_session(),
        }
        http = stack.client_session()
        http.headers["Authorization"] = f"Bearer {issued.access_token}"
        sessions["service_account"] = http
        # The clinician's conversation with Jordan, with a message in it.
        doctor = sessions["clinician"]
        async with doctor.post(f"/api/clients/{jordan.user_id}/secure-messaging", json={"enabled": True}) as resp:
            assert resp.status == 200, await resp.text()
        async with doctor.post("/api/conversations", json={"participant_ids": [jordan.user_id]}) as resp:
            assert resp.status == 201, await resp.text()
            conversation_id = (await resp.json())["conversation"]["conversation_id"]
        async with doctor.post(f"/api/conversations/{conversation_id}/messages",
                               json={"body": "Hello Jordan.", "idempotency_key": "matrix-hello"}) as resp:
            assert resp.status in (200, 201), await resp.text()
        # Jordan through a quick sign-in link for that conversation.
        quick = stack.client_session()
        link = await stack.magic_link(jordan.user_id, conversation_id)
        async with quick.post(link, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
        sessions["quick_link"] = quick
        try:
            yield World(stack, conversation_id, jordan.user_id, sessions)
        finally:
            for session in sessions.values():
                await session.close()


def _request(world: World, method: str, template: str, role: str) -> tuple[str, dict]:
    path = template.format(conversation=world.conversation_id, client=world.client_id)
    if method == "GET":
        return path, {}
    if path.startswith("/api/"):
        bodies = {
            "/api/conversations": {"participant_ids": [world.client_id]},
            f"/api/conversations/{world.conversation_id}/messages": {
                "body": f"A note from {role}.", "idempotency_key": f"matrix-{role}"},
            f"/api/conversations/{world.conversation_id}/read": {"read_seq": 1},
            f"/api/conversations/{world.conversation_id}/archive": {"archived": False},
            "/api/clients": {"display_name": f"New Client {role}", "email": f"new-{role}@client.test"},
            f"/api/clients/{world.client_id}/secure-messaging": {"enabled": True},
        }
        return path, {"json": bodies[path]}
    forms = {
        f"/portal/conversations/{world.conversation_id}/messages": {
            "body": f"A reply from {role}.", "idempotency_key": f"matrix-portal-{role}"},
        f"/clients/{world.client_id}": {"display_name": "Jordan Lee", "email": "jordan@client.test"},
        f"/clients/{world.client_id}/secure-messaging": {"enabled": "1"},
        "/clients": {"display_name": f"Form Client {role}", "email": f"form-{role}@client.test"},
        "/settings": {"secure_messaging_enabled": "1", "team_messaging_enabled": "1"},
        "/settings/failed-alerts": {},
    }
    return path, {"data": forms[path]}


def test_every_messaging_route_has_a_row(keys_dir):
    app = web.Application()
    setup_routes(app, WebConfig.load(service_env(keys_dir)))
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("GET", "POST") and (path in MESSAGING_PAGES or path.startswith(MESSAGING_PREFIXES)):
            found.add((route.method, path.replace("{conversation_id}", CONV).replace("{client_id}", CLIENT)))
    assert found == set(ROUTES), found ^ set(ROUTES)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_cell(world: World, route: tuple[str, str], role: str):
    method, template = route
    path, body = _request(world, method, template, role)
    http = world.sessions[role]
    headers = {"Accept": "application/json"} if path.startswith("/api/") else {}
    async with http.request(method, path, allow_redirects=False, headers=headers, **body) as resp:
        status = resp.status
        text = "" if path == "/api/events" else (await resp.text())[:300]
    assert status == ROUTES[route][role], f"{method} {path} as {role}: {status} {text}"

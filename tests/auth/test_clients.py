"""CreateClient, UpdateClient, ListClients: staff and practice systems (clients.* scopes)
manage a practice's clients; everyone else is refused, and nothing crosses practices."""

from __future__ import annotations

import grpc
from confidant.auth.v1 import auth_service_pb2 as pb

from services.auth.handlers import _page_token
from tests.auth.harness import PASSWORD, AuthHarness, rpc_error


async def _create(auth: AuthHarness, caller, name="Jordan Lee", email=""):
    reply = await auth.stub.CreateClient(
        pb.CreateClientRequest(email=email or auth.email("client"), display_name=name), metadata=caller, timeout=5
    )
    return reply.client


async def _update(auth: AuthHarness, caller, client_id: str, email: str, name: str):
    reply = await auth.stub.UpdateClient(
        pb.UpdateClientRequest(client_id=client_id, email=email, display_name=name), metadata=caller, timeout=5
    )
    return reply.client


async def _list(auth: AuthHarness, caller, query="", page_size=0, page_token=""):
    return await auth.stub.ListClients(
        pb.ListClientsRequest(query=query, page_size=page_size, page_token=page_token), metadata=caller, timeout=5
    )


async def _names(auth: AuthHarness, caller, query="") -> list[str]:
    return [c.display_name for c in (await _list(auth, caller, query, page_size=100)).clients]


async def _account_token(auth: AuthHarness, owner: pb.User, scopes) -> tuple:
    return await auth.service_account(owner, scopes)


async def _staff(auth: AuthHarness):
    practice, owner = await auth.practice()
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Riley Park", password=PASSWORD)
    team_member = await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    return practice, owner, clinician, team_member


async def _code(call) -> grpc.StatusCode:
    return (await rpc_error(call)).code()


# -- CreateClient -------------------------------------------------------------------------


async def test_staff_create_clients_in_their_own_practice_without_a_password(auth: AuthHarness):
    practice, owner, clinician, team_member = await _staff(auth)
    made = []
    for who, name in ((owner, "Jordan Lee"), (clinician, "Alex Chen"), (team_member, "Zoë Ångström")):
        client = await _create(auth, auth.as_user(who), name=f"  {name} ", email=f" {name.split()[0]}@Client.TEST ")
        assert client.practice_id == practice.practice_id
        assert client.role == pb.ROLE_CLIENT and not client.has_password
        assert client.display_name == name  # whitespace normalized like CreateUser
        assert client.email == f"{name.split()[0].lower()}@client.test"
        made.append((who, client))

    rows = await auth.audit_rows("client.create")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (who.user_id, "success", client.user_id, practice.practice_id) for who, client in made
    ]
    # No PHI in the audit detail.
    for row in rows:
        assert "client.test" not in str(row[4]) and "Lee" not in str(row[4])
    # Each new client is in the client-created outbox, waiting for messaging.
    queued = await auth.execute("SELECT client_id::text, practice_id::text, done_at FROM client_events ORDER BY event_id")
    assert queued == [(client.user_id, practice.practice_id, None) for _, client in made]


async def test_create_client_refuses_clients_services_and_magic_link_sessions(auth: AuthHarness):
    practice, owner, clinician, _ = await _staff(auth)
    client = await _create(auth, auth.as_user(owner))
    for caller in (
        auth.as_user(client),
        auth.as_user(clinician, session_kind="magic_link", conversation_id="c-1"),
        auth.web,
    ):
        assert await _code(
            auth.stub.CreateClient(
                pb.CreateClientRequest(email=auth.email(), display_name="Mallory"), metadata=caller, timeout=5
            )
        ) == grpc.StatusCode.PERMISSION_DENIED
    no_token = await rpc_error(
        auth.stub.CreateClient(pb.CreateClientRequest(email=auth.email(), display_name="Mallory"), timeout=5)
    )
    assert no_token.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await auth.execute("SELECT count(*) FROM users WHERE display_name = 'Mallory'") == [(0,)]


async def test_create_client_validates_like_create_user_and_refuses_a_taken_email(auth: AuthHarness):
    _, owner = await auth.practice()
    me = auth.as_user(owner)
    for email, name, fragment in (
        ("not-an-email", "Jordan Lee", "valid email"),
        ("a b@client.test", "Jordan Lee", "valid email"),
        ("", "Jordan Lee", "valid email"),
        (auth.email(), "   ", "name is required"),
        (auth.email(), "x" * 201, "at most 200"),
    ):
        err = await rpc_error(
            auth.stub.CreateClient(pb.CreateClientRequest(email=email, display_name=name), metadata=me, timeout=5)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details()

    await _create(auth, me, email="jordan@client.test")
    # Case does not make a different address, and staff emails are taken too.
    for email in ("JORDAN@client.test", owner.email):
        err = await rpc_error(
            auth.stub.CreateClient(pb.CreateClientRequest(email=email, display_name="Other"), metadata=me, timeout=5)
        )
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        assert err.details() == "An account with this email address already exists."
    # A refused client leaves no outbox row behind.
    assert await auth.execute("SELECT count(*) FROM client_events") == [(1,)]


async def test_service_accounts_need_the_scopes(auth: AuthHarness):
    practice, owner = await auth.practice()
    writer = await _account_token(auth, owner, ["clients.write"])
    reader = await _account_token(auth, owner, ["clients.read"])
    neither = await _account_token(auth, owner, ["messaging.send"])

    created = await _create(auth, writer, name="Jordan Lee", email="jordan@client.test")
    assert created.practice_id == practice.practice_id and created.role == pb.ROLE_CLIENT
    updated = await _update(auth, writer, created.user_id, "jordan.lee@client.test", "Jordan Lee")
    assert updated.email == "jordan.lee@client.test"
    listed = await _list(auth, reader)
    assert [c.user_id for c in listed.clients] == [created.user_id]

    for caller in (reader, neither):
        err = await rpc_error(
            auth.stub.CreateClient(pb.CreateClientRequest(email=auth.email(), display_name="X"), metadata=caller, timeout=5)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "clients.write" in err.details()
        err = await rpc_error(
            auth.stub.UpdateClient(
                pb.UpdateClientRequest(client_id=created.user_id, email=auth.email(), display_name="X"),
                metadata=caller,
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "clients.write" in err.details()
    for caller in (writer, neither):
        err = await rpc_error(auth.stub.ListClients(pb.ListClientsRequest(), metadata=caller, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "clients.read" in err.details()

    # The account's id is the actor in the audit trail.
    actors = [r[0] for r in await auth.audit_rows("client.create")]
    account_rows = await auth.execute(
        "SELECT user_id::text FROM service_accounts WHERE 'clients.write' = ANY(scopes)"
    )
    assert actors == [account_rows[0][0]]


async def test_the_clients_scopes_can_be_granted(auth: AuthHarness):
    _, owner = await auth.practice()
    created = await auth.stub.CreateServiceAccount(
        pb.CreateServiceAccountRequest(display_name="Scheduler", scopes=["clients.write", "clients.read"]),
        metadata=auth.as_user(owner),
        timeout=5,
    )
    assert list(created.account.scopes) == ["clients.read", "clients.write"]


# -- UpdateClient -------------------------------------------------------------------------


async def test_staff_update_a_client_and_the_search_follows(auth: AuthHarness):
    practice, owner, clinician, team_member = await _staff(auth)
    client = await _create(auth, auth.as_user(owner), name="Alex Chen", email="alex@client.test")
    me = auth.as_user(team_member)
    assert await _names(auth, me, "alex") == ["Alex Chen"]

    updated = await _update(auth, me, client.user_id, " Álex.Moreno@Client.test ", "  Álex   Moreno ")
    assert (updated.user_id, updated.email, updated.display_name) == (
        client.user_id,
        "álex.moreno@client.test",
        "Álex Moreno",
    )
    assert updated.role == pb.ROLE_CLIENT and updated.practice_id == practice.practice_id
    # The stored profile, and the folded search text, follow the update.
    got = await auth.stub.GetUsers(pb.GetUsersRequest(user_ids=[client.user_id]), metadata=me, timeout=5)
    assert got.users[0].display_name == "Álex Moreno" and got.users[0].email == "álex.moreno@client.test"
    assert await _names(auth, me, "chen") == []
    assert await _names(auth, me, "moreno") == ["Álex Moreno"]
    assert await _names(auth, me, "ALEX.MOR") == ["Álex Moreno"]

    # Only the name changes: the audit says which field, never the values.
    await _update(auth, auth.as_user(clinician), client.user_id, "álex.moreno@client.test", "Alex Moreno")
    await _update(auth, auth.as_user(clinician), client.user_id, "álex.moreno@client.test", "Alex Moreno")
    rows = await auth.audit_rows("client.update")
    assert [(r[0], r[2], r[4]["fields"]) for r in rows] == [
        (team_member.user_id, client.user_id, ["email", "display_name"]),
        (clinician.user_id, client.user_id, ["display_name"]),
        (clinician.user_id, client.user_id, []),
    ]
    for row in rows:
        assert "moreno" not in str(row[4]).lower() and "chen" not in str(row[4]).lower()


async def test_update_client_finds_only_clients_of_the_callers_practice(auth: AuthHarness):
    practice, owner, clinician, _ = await _staff(auth)
    other, other_owner = await auth.practice("Hillside Therapy", "Riley Stone")
    theirs = await _create(auth, auth.as_user(other_owner), name="Their Client")
    ours = await _create(auth, auth.as_user(owner), name="Our Client")
    me = auth.as_user(owner)
    writer_elsewhere = await _account_token(auth, other_owner, ["clients.write"])
    for caller, target in (
        (me, theirs.user_id),  # another practice's client
        (me, clinician.user_id),  # a member of staff is not a client
        (me, owner.user_id),
        (me, "8a4c6e1e-4a53-4f51-9bd5-000000000000"),  # nobody
        (writer_elsewhere, ours.user_id),  # a service account of another practice
    ):
        err = await rpc_error(
            auth.stub.UpdateClient(
                pb.UpdateClientRequest(client_id=target, email=auth.email(), display_name="Changed"),
                metadata=caller,
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "No such client."
    assert await auth.execute("SELECT count(*) FROM users WHERE display_name = 'Changed'") == [(0,)]

    # Clients and magic-link sessions are refused before anything is looked up.
    for caller in (auth.as_user(ours), auth.as_user(clinician, session_kind="magic_link", conversation_id="c-1")):
        assert await _code(
            auth.stub.UpdateClient(
                pb.UpdateClientRequest(client_id=ours.user_id, email=auth.email(), display_name="Changed"),
                metadata=caller,
                timeout=5,
            )
        ) == grpc.StatusCode.PERMISSION_DENIED


async def test_update_client_validates_and_keeps_emails_unique(auth: AuthHarness):
    _, owner = await auth.practice()
    me = auth.as_user(owner)
    jordan = await _create(auth, me, name="Jordan Lee", email="jordan@client.test")
    await _create(auth, me, name="Alex Chen", email="alex@client.test")
    for client_id, email, name, code in (
        ("not-a-uuid", "jordan@client.test", "Jordan Lee", grpc.StatusCode.INVALID_ARGUMENT),
        (jordan.user_id, "nope", "Jordan Lee", grpc.StatusCode.INVALID_ARGUMENT),
        (jordan.user_id, "jordan@client.test", "", grpc.StatusCode.INVALID_ARGUMENT),
        (jordan.user_id, "ALEX@client.test", "Jordan Lee", grpc.StatusCode.ALREADY_EXISTS),
        (jordan.user_id, owner.email, "Jordan Lee", grpc.StatusCode.ALREADY_EXISTS),
    ):
        err = await rpc_error(
            auth.stub.UpdateClient(
                pb.UpdateClientRequest(client_id=client_id, email=email, display_name=name), metadata=me, timeout=5
            )
        )
        assert err.code() == code, (client_id, email, name)
    rows = await auth.execute("SELECT email, display_name FROM users WHERE user_id = %s", (jordan.user_id,))
    assert rows == [("jordan@client.test", "Jordan Lee")]
    # Keeping one's own email is no conflict.
    assert (await _update(auth, me, jordan.user_id, "jordan@client.test", "Jordan A. Lee")).display_name == (
        "Jordan A. Lee"
    )


# -- ListClients --------------------------------------------------------------------------


async def test_list_clients_pages_through_every_client_in_name_order(auth: AuthHarness):
    practice, owner, clinician, team_member = await _staff(auth)
    me = auth.as_user(owner)
    for n in range(45):
        # Created out of order; two pairs share a name (the id breaks the tie).
        await _create(auth, me, name=f"Client {(n * 7) % 43:02d}")
    other, other_owner = await auth.practice("Hillside Therapy", "Riley Stone")
    await _create(auth, auth.as_user(other_owner), name="Client 00 Elsewhere")

    seen, token, pages = [], "", 0
    while True:
        reply = await _list(auth, auth.as_user(team_member), page_size=20, page_token=token)
        pages += 1
        seen.extend(reply.clients)
        token = reply.next_page_token
        if not token:
            break
        assert len(reply.clients) == 20
        assert "Client" not in token  # the token carries no name
    assert pages == 3 and len(seen) == 45
    assert len({c.user_id for c in seen}) == 45  # no duplicates, no gaps
    assert all(c.practice_id == practice.practice_id and c.role == pb.ROLE_CLIENT for c in seen)
    stored = await auth.execute(
        "SELECT user_id::text FROM users WHERE practice_id = %s AND role = 'client' ORDER BY sort_name, user_id",
        (practice.practice_id,),
    )
    assert [c.user_id for c in seen] == [r[0] for r in stored]
    names = [c.display_name for c in seen]
    assert names == sorted(names)

    # The default page is 20; staff are never listed; each client listed is audited, by id, as the row's target.
    first = await _list(auth, me)
    assert len(first.clients) == 20 and first.next_page_token
    assert owner.user_id not in {c.user_id for c in first.clients}
    rows = await auth.audit_rows("clients.list")
    assert [(r[0], r[2], r[3]) for r in rows[:45]] == [(team_member.user_id, c.user_id, practice.practice_id) for c in seen]
    assert [(r[0], r[2]) for r in rows[45:]] == [(owner.user_id, c.user_id) for c in first.clients]


async def test_list_clients_search_is_case_and_accent_insensitive_and_partial(auth: AuthHarness):
    _, owner = await auth.practice()
    me = auth.as_user(owner)
    await _create(auth, me, name="Álex Chen", email="alex@client.test")
    await _create(auth, me, name="Jordan Lee", email="jordan@client.test")
    await _create(auth, me, name="Zoë Ångström", email="z.a@client.test")
    await _create(auth, me, name="Percent 100%", email="pct@client.test")
    await auth.user(owner.practice_id, pb.ROLE_TEAM_MEMBER, "Alexis Staff", password=PASSWORD)
    other, other_owner = await auth.practice("Hillside Therapy", "Riley Stone")
    await _create(auth, auth.as_user(other_owner), name="Alexis Other")

    assert await _names(auth, me, "alex") == ["Álex Chen"]  # no staff, no other practice
    assert await _names(auth, me, "ÁLEX") == ["Álex Chen"]
    assert await _names(auth, me, "che") == ["Álex Chen"]
    assert await _names(auth, me, " chen  alex ") == ["Álex Chen"]
    assert await _names(auth, me, "zoe angstrom") == ["Zoë Ångström"]
    assert await _names(auth, me, "jordan@client") == ["Jordan Lee"]
    assert await _names(auth, me, "%") == ["Percent 100%"]
    assert await _names(auth, me, "n_l") == []
    assert await _names(auth, me, "nobody") == []

    # Paging within a search.
    page = await _list(auth, me, "client.test", page_size=3)
    assert [c.display_name for c in page.clients] == ["Álex Chen", "Jordan Lee", "Percent 100%"]
    rest = await _list(auth, me, "client.test", page_size=3, page_token=page.next_page_token)
    assert [c.display_name for c in rest.clients] == ["Zoë Ångström"] and rest.next_page_token == ""

    # An empty result is not audited as a read of anyone.
    before = len(await auth.audit_rows("clients.list"))
    await _names(auth, me, "nobody")
    assert len(await auth.audit_rows("clients.list")) == before


async def test_list_clients_refusals_and_bad_arguments(auth: AuthHarness):
    practice, owner, clinician, _ = await _staff(auth)
    client = await _create(auth, auth.as_user(owner))
    other, other_owner = await auth.practice("Hillside Therapy", "Riley Stone")
    theirs = await _create(auth, auth.as_user(other_owner), name="Their Client")

    for caller in (
        auth.as_user(client),
        auth.as_user(clinician, session_kind="magic_link", conversation_id="c-1"),
        auth.web,
    ):
        assert await _code(auth.stub.ListClients(pb.ListClientsRequest(), metadata=caller, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    # Another practice's staff see only their own clients.
    assert [c.user_id for c in (await _list(auth, auth.as_user(other_owner))).clients] == [theirs.user_id]

    me = auth.as_user(owner)
    # A page token naming another practice's client (or garbage) is refused, never followed.
    for token in ("!!!", "AAAA", _page_token(theirs.user_id, 0), _page_token(owner.user_id, 0)):
        err = await rpc_error(_list(auth, me, page_token=token))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page token" in err.details()
    for kwargs in ({"page_size": -1}, {"query": "x" * 201}):
        assert await _code(_list(auth, me, **kwargs)) == grpc.StatusCode.INVALID_ARGUMENT
    # Page sizes above the maximum are capped, not refused.
    assert len((await _list(auth, me, page_size=10_000)).clients) == 1

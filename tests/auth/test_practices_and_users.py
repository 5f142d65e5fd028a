"""CreatePractice, GetPractice, CreateUser and GetUsers: rules and who may call them."""

from __future__ import annotations

import uuid

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as pb

from services.common.audit import verify_chain
from tests.auth.harness import PASSWORD, rpc_error


async def test_create_practice_makes_its_owner(auth):
    reply = await auth.stub.CreatePractice(
        pb.CreatePracticeRequest(
            name="  Lakeside   Counseling ",
            owner_email="  Dana.Rivera@Lakeside.TEST ",
            owner_display_name="Dana Rivera",
            owner_password=PASSWORD,
        ),
        metadata=auth.web,
        timeout=10,
    )
    assert reply.practice.name == "Lakeside Counseling"
    assert uuid.UUID(reply.practice.practice_id)
    owner = reply.owner
    assert (owner.role, owner.email, owner.display_name, owner.has_password) == (
        pb.ROLE_OWNER,
        "dana.rivera@lakeside.test",
        "Dana Rivera",
        True,
    )
    assert owner.practice_id == reply.practice.practice_id
    # Only the argon2id hash is stored.
    [(stored,)] = await auth.execute("SELECT password_hash FROM users WHERE user_id = %s", (owner.user_id,))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    [(actor, outcome, target, practice_id, _)] = await auth.audit_rows("practice.create")
    assert (actor, outcome, target, practice_id) == (
        "service:web",
        "success",
        owner.practice_id,
        owner.practice_id,
    )


async def test_create_practice_is_for_the_web_edge_only(auth, tokens):
    request = pb.CreatePracticeRequest(
        name="P", owner_email=auth.email(), owner_display_name="Owner", owner_password=PASSWORD
    )
    err = await rpc_error(auth.stub.CreatePractice(request, metadata=auth.notify, timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    _, owner = await auth.practice()
    err = await rpc_error(auth.stub.CreatePractice(request, metadata=auth.as_user(owner), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.CreatePractice(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_emails_are_unique_whatever_their_case(auth):
    _, owner = await auth.practice()
    err = await rpc_error(
        auth.stub.CreatePractice(
            pb.CreatePracticeRequest(
                name="Other",
                owner_email=owner.email.upper(),
                owner_display_name="Someone",
                owner_password=PASSWORD,
            ),
            metadata=auth.web,
            timeout=10,
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    err = await rpc_error(auth.user(owner.practice_id, pb.ROLE_CLIENT, "Twin", email=owner.email.title()))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == "An account with this email address already exists."


async def test_bad_practice_input_is_invalid_argument(auth):
    cases = [
        ("", auth.email(), "Owner", PASSWORD, "practice name"),
        ("P", "not-an-email", "Owner", PASSWORD, "valid email"),
        ("P", "a@" + "b" * 260, "Owner", PASSWORD, "valid email"),
        ("P", auth.email(), "   ", PASSWORD, "name"),
        ("P", auth.email(), "Owner", "short", "at least 12"),
    ]
    for name, email, display_name, password, words in cases:
        err = await rpc_error(
            auth.stub.CreatePractice(
                pb.CreatePracticeRequest(
                    name=name, owner_email=email, owner_display_name=display_name, owner_password=password
                ),
                metadata=auth.web,
                timeout=10,
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, words
        assert words in err.details()


async def test_password_rules(auth):
    practice, _ = await auth.practice()

    async def attempt(
        password: str, email: str = "", name: str = "Morgan Blackwood"
    ) -> grpc.aio.AioRpcError | None:
        try:
            await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, name, password=password, email=email)
        except grpc.aio.AioRpcError as exc:
            return exc
        return None

    refused = {
        "eleven-char": "at least 12 characters",
        "x" * 1025: "at most 1024 characters",
        "Password1234": "too common",
        "aaaaaaaaaaaaaaaa": "too common",
        # From the shipped list of the 10,000 most common passwords.
        "1QAZ2WSX3EDC": "too common",
        "mailcreated5240": "too common",
        "blackwood-is-safe": "must not contain your name",
        "MÖRGAN-and-more": "must not contain your name",
    }
    for password, words in refused.items():
        err = await attempt(password)
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, password
        assert words in err.details(), err.details()
    err = await attempt("winterbourne-42-lamps", email=f"winterbourne@{uuid.uuid4().hex[:8]}.test")
    assert err is not None and "must not contain your name or email" in err.details()
    # Short name parts are too common to refuse; long passphrases are welcome.
    assert await attempt("lee-and-the-quiet-harbor", name="Jo Lee") is None
    assert await attempt("correct horse battery staple " * 4 + "ok") is None  # 118 characters
    assert await attempt("ü" * 3 + "long passphrase with a view" * 4 + "!") is None  # > 100 characters


async def test_get_practice_is_for_services_and_its_own_people(auth):
    practice, owner = await auth.practice()
    other_practice, other_owner = await auth.practice("Hillside Therapy", "Riley Stone")
    for metadata in (auth.web, auth.notify, auth.as_user(owner)):
        reply = await auth.stub.GetPractice(
            pb.GetPracticeRequest(practice_id=practice.practice_id), metadata=metadata, timeout=5
        )
        assert reply.practice == practice
    err = await rpc_error(
        auth.stub.GetPractice(
            pb.GetPracticeRequest(practice_id=practice.practice_id),
            metadata=auth.as_user(other_owner),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        auth.stub.GetPractice(
            pb.GetPracticeRequest(practice_id=str(uuid.uuid4())), metadata=auth.web, timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(
        auth.stub.GetPractice(pb.GetPracticeRequest(practice_id="42"), metadata=auth.web, timeout=5)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(
        auth.stub.GetPractice(pb.GetPracticeRequest(practice_id=practice.practice_id), timeout=5)
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert other_practice.practice_id != practice.practice_id


async def test_owner_adds_people_to_their_own_practice_only(auth):
    practice, owner = await auth.practice()
    other_practice, _ = await auth.practice("Hillside Therapy", "Riley Stone")
    reply = await auth.stub.CreateUser(
        pb.CreateUserRequest(
            practice_id=practice.practice_id,
            role=pb.ROLE_CLIENT,
            email="Jordan@Client.test",
            display_name="Jordan Lee",
        ),
        metadata=auth.as_user(owner),
        timeout=10,
    )
    client = reply.user
    assert (client.role, client.email, client.has_password, client.practice_id) == (
        pb.ROLE_CLIENT,
        "jordan@client.test",
        False,
        practice.practice_id,
    )
    [(actor, outcome, target, practice_id, detail)] = await auth.audit_rows("user.create")
    assert (actor, outcome, target, practice_id, detail) == (
        owner.user_id,
        "success",
        client.user_id,
        practice.practice_id,
        {"role": "client"},
    )

    def request(practice_id: str, role=pb.ROLE_TEAM_MEMBER) -> pb.CreateUserRequest:
        return pb.CreateUserRequest(
            practice_id=practice_id, role=role, email=auth.email(), display_name="Sam Okafor"
        )

    err = await rpc_error(
        auth.stub.CreateUser(request(other_practice.practice_id), metadata=auth.as_user(owner), timeout=5)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Casey Wong", password=PASSWORD)
    for metadata in (auth.as_user(clinician), auth.as_user(client), auth.notify):
        err = await rpc_error(
            auth.stub.CreateUser(request(practice.practice_id), metadata=metadata, timeout=5)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    for role in (pb.ROLE_OWNER, pb.ROLE_SERVICE_ACCOUNT, pb.ROLE_UNSPECIFIED):
        err = await rpc_error(
            auth.stub.CreateUser(request(practice.practice_id, role), metadata=auth.web, timeout=5)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(auth.stub.CreateUser(request(str(uuid.uuid4())), metadata=auth.web, timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(auth.stub.CreateUser(request("nope"), metadata=auth.web, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_users_shows_each_caller_only_what_they_may_see(auth):
    practice, owner = await auth.practice()
    team = await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    jordan = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee")
    alex = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Alex Chen")
    _, stranger = await auth.practice("Hillside Therapy", "Riley Stone")

    async def get(metadata, *users):
        reply = await auth.stub.GetUsers(
            pb.GetUsersRequest(user_ids=[u.user_id for u in users]), metadata=metadata, timeout=5
        )
        return [u.user_id for u in reply.users]

    everyone = (owner, team, jordan, alex)
    # Services and the practice's staff see everyone in it, in the order asked.
    assert await get(auth.notify, alex, stranger, owner) == [alex.user_id, stranger.user_id, owner.user_id]
    assert await get(auth.as_user(team), *everyone) == [u.user_id for u in everyone]
    # A client sees themselves and the practice's staff, not other clients.
    assert await get(auth.as_user(jordan, "magic_link", "c-1"), jordan, owner, team) == [
        jordan.user_id,
        owner.user_id,
        team.user_id,
    ]
    err = await rpc_error(
        auth.stub.GetUsers(
            pb.GetUsersRequest(user_ids=[alex.user_id]), metadata=auth.as_user(jordan), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # Staff of another practice: the same answer as for ids that do not exist.
    err = await rpc_error(
        auth.stub.GetUsers(
            pb.GetUsersRequest(user_ids=[jordan.user_id, owner.user_id, str(uuid.uuid4())]),
            metadata=auth.as_user(stranger),
            timeout=5,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "3 of the 3 requested users were not found."
    assert await get(auth.web) == []

    err = await rpc_error(
        auth.stub.GetUsers(pb.GetUsersRequest(user_ids=[owner.user_id, "x"]), metadata=auth.web, timeout=5)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(
        auth.stub.GetUsers(
            pb.GetUsersRequest(user_ids=[str(uuid.uuid4()) for _ in range(501)]), metadata=auth.web, timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(auth.stub.GetUsers(pb.GetUsersRequest(user_ids=[owner.user_id]), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    # Reads of clients' profiles are audited, one row per client naming them as its target, in
    # their practice's trail (services have no practice of their own); so are refused reads.
    rows = await auth.audit_rows("users.read")
    assert ("service:notify", "success", alex.user_id, practice.practice_id) in [(a, o, t, p) for a, o, t, p, _ in rows]
    assert ("service:notify", "success", stranger.user_id) not in [(a, o, t) for a, o, t, _, _ in rows]
    assert any(actor == stranger.user_id and outcome == "not_found" for actor, outcome, *_ in rows)
    dump = str(await auth.execute("SELECT detail::text FROM audit_events"))
    assert "Jordan" not in dump and "@" not in dump
    async with await psycopg.AsyncConnection.connect(auth.database_url) as conn:
        assert await verify_chain(conn)

"""SignIn, AuthenticateSession and SignOut: full sessions, their expiry and the audit trail."""

from __future__ import annotations

import hashlib
import time
import uuid

import grpc
import psycopg
from confidant.auth.v1 import auth_service_pb2 as pb

from services.common.audit import verify_chain
from services.common.tokens import TokenVerifier
from tests.auth.harness import PASSWORD, rpc_error

WRONG = "Email or password is incorrect."
ENDED = "Your session has ended."


async def _sign_in(
    auth, email: str, password: str = PASSWORD, address: str = "203.0.113.7"
) -> pb.SignInResponse:
    return await auth.stub.SignIn(
        pb.SignInRequest(email=email, password=password, client_address=address),
        metadata=auth.web,
        timeout=10,
    )


async def _authenticate(auth, token: str) -> pb.AuthenticateSessionResponse:
    return await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=token), metadata=auth.web, timeout=5
    )


async def test_sign_in_opens_a_full_session_whose_access_token_carries_the_person(auth):
    practice, owner = await auth.practice()
    before = time.time()
    reply = await _sign_in(auth, "  " + owner.email.upper())
    assert reply.user == owner
    assert reply.session.kind == pb.SESSION_KIND_FULL
    # A fresh session ends after the idle window unless used.
    assert before + 1800 - 5 <= reply.session.expires_at.seconds <= time.time() + 1800 + 5
    assert len(reply.session_token) >= 43
    # Only the token's sha256 is stored.
    [(kind,)] = await auth.execute(
        "SELECT kind FROM sessions WHERE session_hash = %s",
        (hashlib.sha256(reply.session_token.encode()).digest(),),
    )
    assert kind == "full"

    authed = await _authenticate(auth, reply.session_token)
    assert authed.user == owner and authed.session.kind == pb.SESSION_KIND_FULL
    principal = TokenVerifier.from_keys_dir(auth.keys_dir).verify(authed.access_token)
    assert (principal.subject, principal.role, principal.practice_id, principal.session_kind) == (
        owner.user_id,
        "owner",
        practice.practice_id,
        "full",
    )
    assert principal.conversation_id == ""
    assert time.time() + 290 <= authed.access_token_expires_at.seconds <= time.time() + 301

    # The access token works for the person's own calls, here against auth itself.
    found = await auth.stub.SearchDirectory(
        pb.SearchDirectoryRequest(), metadata=auth.tokens.metadata(authed.access_token), timeout=5
    )
    assert [u.user_id for u in found.users] == [owner.user_id]

    # Each sign-in is its own session.
    again = await _sign_in(auth, owner.email)
    assert again.session_token != reply.session_token
    [(count,)] = await auth.execute("SELECT count(*) FROM sessions WHERE user_id = %s", (owner.user_id,))
    assert count == 2

    [row, _] = await auth.audit_rows("sign_in")
    actor, outcome, target, practice_id, detail = row
    assert (actor, outcome, target, practice_id) == (
        owner.user_id,
        "success",
        owner.user_id,
        practice.practice_id,
    )
    assert detail == {"client_address": "203.0.113.7", "via": "web"}


async def test_wrong_password_unknown_email_and_no_password_answer_alike(auth):
    practice, owner = await auth.practice()
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Alex Chen")
    unknown = "Nobody@Nowhere.test"
    attempts = [
        (owner.email, "not-the-password!"),
        (unknown, PASSWORD),
        (client.email, PASSWORD),
        (owner.email, "x" * 2000),
    ]
    for email, password in attempts:
        err = await rpc_error(_sign_in(auth, email, password))
        assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)

    rows = await auth.audit_rows("sign_in")
    assert [(actor, outcome) for actor, outcome, *_ in rows] == [
        (owner.user_id, "failure"),
        ("unknown", "failure"),
        (client.user_id, "failure"),
        (owner.user_id, "failure"),
    ]
    unknown_detail = rows[1][4]
    assert unknown_detail["email_sha256"] == hashlib.sha256(b"nobody@nowhere.test").hexdigest()
    # No email address anywhere in the audit trail.
    dump = str(await auth.execute("SELECT * FROM audit_events"))
    assert "nowhere" not in dump and owner.email not in dump and client.email not in dump
    async with await psycopg.AsyncConnection.connect(auth.database_url) as conn:
        assert await verify_chain(conn)


async def test_unknown_and_known_emails_take_about_as_long(auth):
    _, owner = await auth.practice()

    async def timed(email: str) -> float:
        started = time.perf_counter()
        await rpc_error(_sign_in(auth, email, "definitely-wrong-password"))
        return time.perf_counter() - started

    known = min([await timed(owner.email) for _ in range(3)])
    unknown = min([await timed(f"{uuid.uuid4().hex}@nowhere.test") for _ in range(3)])
    # Both pay for one argon2id verification: no fast path for unknown accounts.
    assert unknown > known * 0.5


async def test_sign_in_rules_and_callers(auth):
    _, owner = await auth.practice()
    for email, password in (("", PASSWORD), (owner.email, "")):
        err = await rpc_error(_sign_in(auth, email, password))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = pb.SignInRequest(email=owner.email, password=PASSWORD)
    for metadata in (auth.notify, auth.as_user(owner)):
        err = await rpc_error(auth.stub.SignIn(request, metadata=metadata, timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.SignIn(request, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    token = (await _sign_in(auth, owner.email)).session_token
    err = await rpc_error(
        auth.stub.AuthenticateSession(
            pb.AuthenticateSessionRequest(session_token=token), metadata=auth.as_user(owner), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_sign_out_ends_the_session_and_is_idempotent(auth):
    practice, owner = await auth.practice()
    token = (await _sign_in(auth, owner.email)).session_token
    other = (await _sign_in(auth, owner.email)).session_token
    await _authenticate(auth, token)
    for _ in range(2):
        await auth.stub.SignOut(pb.SignOutRequest(session_token=token), metadata=auth.web, timeout=5)
    await auth.stub.SignOut(pb.SignOutRequest(session_token="never-issued"), metadata=auth.web, timeout=5)
    err = await rpc_error(_authenticate(auth, token))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, ENDED)
    # Other sessions of the same person are untouched.
    assert (await _authenticate(auth, other)).user.user_id == owner.user_id
    assert [(a, o, p) for a, o, _, p, _ in await auth.audit_rows("sign_out")] == [
        (owner.user_id, "success", practice.practice_id)
    ]
    err = await rpc_error(
        auth.stub.SignOut(pb.SignOutRequest(session_token=token), metadata=auth.notify, timeout=5)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_sessions_have_ended(auth):
    for token in ("", "made-up-token", "x" * 5000):
        err = await rpc_error(_authenticate(auth, token))
        assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, ENDED)


async def test_idle_sessions_end_and_activity_keeps_them_alive(auth):
    _, owner = await auth.practice()
    token = (await _sign_in(auth, owner.email)).session_token
    session_hash = hashlib.sha256(token.encode()).digest()
    # 29 minutes of silence: still alive, and using it moves the idle deadline.
    await auth.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '29 minutes' WHERE session_hash = %s",
        (session_hash,),
    )
    authed = await _authenticate(auth, token)
    assert authed.session.expires_at.seconds >= time.time() + 1800 - 5
    [(idle,)] = await auth.execute(
        "SELECT now() - last_seen_at < interval '5 seconds' FROM sessions WHERE session_hash = %s",
        (session_hash,),
    )
    assert idle
    # 30 minutes of silence: ended.
    await auth.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '30 minutes 1 second' WHERE session_hash = %s",
        (session_hash,),
    )
    err = await rpc_error(_authenticate(auth, token))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, ENDED)


async def test_sessions_end_at_their_absolute_deadline_whatever_the_activity(auth):
    _, owner = await auth.practice()
    reply = await _sign_in(auth, owner.email)
    session_hash = hashlib.sha256(reply.session_token.encode()).digest()
    [(absolute,)] = await auth.execute(
        "SELECT extract(epoch FROM expires_at - created_at) FROM sessions WHERE session_hash = %s",
        (session_hash,),
    )
    assert absolute == 43200
    # Ten seconds left of the twelve hours: the access token does not outlive the session.
    await auth.execute(
        "UPDATE sessions SET expires_at = now() + interval '10 seconds' WHERE session_hash = %s",
        (session_hash,),
    )
    authed = await _authenticate(auth, reply.session_token)
    assert authed.access_token_expires_at.seconds <= time.time() + 11
    assert abs(authed.session.expires_at.seconds - authed.access_token_expires_at.seconds) <= 1
    await auth.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE session_hash = %s",
        (session_hash,),
    )
    err = await rpc_error(_authenticate(auth, reply.session_token))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, ENDED)


async def test_background_checks_do_not_keep_an_idle_session_alive(auth):
    """A tab left open renews its stream's token in the background; that is not activity."""
    _, owner = await auth.practice()
    token = (await _sign_in(auth, owner.email)).session_token
    session_hash = hashlib.sha256(token.encode()).digest()
    await auth.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '29 minutes' WHERE session_hash = %s",
        (session_hash,),
    )
    await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=token, background=True), metadata=auth.web, timeout=5
    )
    [(still_old,)] = await auth.execute(
        "SELECT now() - last_seen_at > interval '28 minutes' FROM sessions WHERE session_hash = %s",
        (session_hash,),
    )
    assert still_old
    await auth.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '30 minutes 1 second' WHERE session_hash = %s",
        (session_hash,),
    )
    err = await rpc_error(_authenticate(auth, token))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, ENDED)

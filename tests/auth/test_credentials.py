"""Client Portal credentials: invitations, password resets, password changes.

notify is unreachable here, so each link's token stays in auth's outbox row
(account_notices.link_token) where the test reads it; the emails themselves are
tested with a real notify in tests/notify/test_credential_notices.py. Time is
moved by editing stored timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as pb
from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.app import create_service
from services.auth.config import AuthConfig
from services.common.audit import verify_chain
from tests.auth.harness import PASSWORD, AuthHarness, rpc_error
from tests.support import channel, running, service_env

NOTIFY_DOWN = "127.0.0.1:1"
ADDRESS = "198.51.100.9"
NEW_PASSWORD = "amber-tide-lantern-41"
LINK_ENDED = "This link has expired or was already used. Ask for a new one with “Forgot password?”."


@contextlib.asynccontextmanager
async def auth_with(fresh_database, keys_dir, tokens, **settings):
    url = await fresh_database("auth")
    env = service_env(keys_dir, auth_database_url=url, notify_addr=NOTIFY_DOWN, **settings)
    service = await create_service(AuthConfig.load(env))
    async with running(service) as address, channel(address) as ch:
        yield AuthHarness(pb_grpc.AuthServiceStub(ch), url, tokens, keys_dir)


@pytest.fixture
async def auth(fresh_database, keys_dir, tokens):
    async with auth_with(fresh_database, keys_dir, tokens, sign_in_address_limit="1000") as harness:
        yield harness


async def latest_token(auth: AuthHarness, user_id: str, kind: str) -> str:
    rows = await auth.execute(
        "SELECT link_token FROM account_notices WHERE user_id = %s AND kind = %s ORDER BY notice_id DESC LIMIT 1",
        (user_id, kind),
    )
    assert rows and rows[0][0], rows
    return rows[0][0]


async def invite(auth: AuthHarness, user_id: str, metadata=None) -> str:
    await auth.stub.InviteUser(pb.InviteUserRequest(user_id=user_id), metadata=metadata or auth.web, timeout=10)
    return await latest_token(auth, user_id, "invitation")


async def inspect(auth: AuthHarness, token: str) -> pb.InspectCredentialLinkResponse:
    return await auth.stub.InspectCredentialLink(
        pb.InspectCredentialLinkRequest(token=token), metadata=auth.web, timeout=10
    )


def set_password(auth: AuthHarness, token: str, password: str = NEW_PASSWORD, address: str = ADDRESS):
    return auth.stub.SetPasswordWithLink(
        pb.SetPasswordWithLinkRequest(token=token, new_password=password, client_address=address),
        metadata=auth.web, timeout=20,
    )


def sign_in(auth: AuthHarness, email: str, password: str, address: str = ADDRESS):
    return auth.stub.SignIn(
        pb.SignInRequest(email=email, password=password, client_address=address), metadata=auth.web, timeout=10
    )


def authenticate(auth: AuthHarness, session_token: str):
    return auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=session_token), metadata=auth.web, timeout=10
    )


def reset(auth: AuthHarness, email: str, address: str = ADDRESS):
    return auth.stub.RequestPasswordReset(
        pb.RequestPasswordResetRequest(email=email, client_address=address), metadata=auth.web, timeout=10
    )


async def client_without_password(auth: AuthHarness, name: str = "Alex Chen"):
    practice, owner = await auth.practice()
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, name)
    assert not client.has_password
    return practice, owner, client


async def test_invitation_link_sets_a_password_once_and_signs_in(auth):
    practice, owner, client = await client_without_password(auth)
    token = await invite(auth, client.user_id)
    assert len(token) >= 43  # token_urlsafe(32): 256 bits

    # Stored only as its sha256; lifetime 24 hours.
    [(stored_hash, purpose, lifetime)] = await auth.execute(
        "SELECT token_hash, purpose, extract(epoch FROM expires_at - created_at)::int FROM credential_links"
        " WHERE user_id = %s",
        (client.user_id,),
    )
    assert bytes(stored_hash) == hashlib.sha256(token.encode()).digest()
    assert (purpose, lifetime) == ("invitation", 86400)
    [(found,)] = await auth.execute(
        "SELECT count(*) FROM credential_links c WHERE position(%s in c::text) > 0", (token,)
    )
    assert found == 0

    # Inspecting never consumes.
    for _ in range(3):
        seen = await inspect(auth, token)
        assert seen.outcome == pb.CREDENTIAL_LINK_OUTCOME_VALID
        assert seen.purpose == pb.CREDENTIAL_PURPOSE_INVITATION
        assert (seen.email, seen.role) == (client.email, pb.ROLE_CLIENT)

    reply = await set_password(auth, token)
    assert reply.user.user_id == client.user_id and reply.user.has_password
    assert reply.session.kind == pb.SESSION_KIND_FULL
    me = await authenticate(auth, reply.session_token)
    assert me.user.user_id == client.user_id

    # Single use.
    err = await rpc_error(set_password(auth, token, "another-fine-phrase-77"))
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, LINK_ENDED)
    assert (await inspect(auth, token)).outcome == pb.CREDENTIAL_LINK_OUTCOME_ALREADY_USED
    assert (await inspect(auth, "x" * 43)).outcome == pb.CREDENTIAL_LINK_OUTCOME_UNKNOWN

    signed_in = await sign_in(auth, client.email, NEW_PASSWORD)
    assert signed_in.user.user_id == client.user_id

    # Now that the client has a password, an invitation is refused.
    err = await rpc_error(auth.stub.InviteUser(pb.InviteUserRequest(user_id=client.user_id), metadata=auth.web,
                                               timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    rows = await auth.audit_rows("invitation.create")
    assert [(row[1], row[2]) for row in rows] == [("success", client.user_id), ("has_password", client.user_id)]
    outcomes = [row[1] for row in await auth.audit_rows("credential_link.use")]
    assert outcomes == ["success", "already_used"]
    async with await psycopg.AsyncConnection.connect(auth.database_url, autocommit=True) as conn:
        assert await verify_chain(conn)


async def test_links_expire_invitations_after_a_day_and_resets_after_an_hour(auth):
    _, _, client = await client_without_password(auth)
    token = await invite(auth, client.user_id)
    # 23 hours 59 minutes later it still works ...
    await auth.execute(
        "UPDATE credential_links SET created_at = created_at - interval '23 hours 59 minutes',"
        " expires_at = expires_at - interval '23 hours 59 minutes' WHERE user_id = %s", (client.user_id,)
    )
    assert (await inspect(auth, token)).outcome == pb.CREDENTIAL_LINK_OUTCOME_VALID
    # ... and a day later it does not.
    await auth.execute(
        "UPDATE credential_links SET created_at = created_at - interval '2 minutes',"
        " expires_at = expires_at - interval '2 minutes' WHERE user_id = %s", (client.user_id,)
    )
    assert (await inspect(auth, token)).outcome == pb.CREDENTIAL_LINK_OUTCOME_EXPIRED
    err = await rpc_error(set_password(auth, token))
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, LINK_ENDED)

    practice, owner = await auth.practice()
    await reset(auth, owner.email)
    reset_token = await latest_token(auth, owner.user_id, "password_reset")
    [(lifetime,)] = await auth.execute(
        "SELECT extract(epoch FROM expires_at - created_at)::int FROM credential_links WHERE user_id = %s",
        (owner.user_id,),
    )
    assert lifetime == 3600
    seen = await inspect(auth, reset_token)
    assert (seen.outcome, seen.purpose) == (pb.CREDENTIAL_LINK_OUTCOME_VALID, pb.CREDENTIAL_PURPOSE_PASSWORD_RESET)
    await auth.execute(
        "UPDATE credential_links SET expires_at = expires_at - interval '1 hour' WHERE user_id = %s",
        (owner.user_id,),
    )
    assert (await inspect(auth, reset_token)).outcome == pb.CREDENTIAL_LINK_OUTCOME_EXPIRED


async def test_a_new_link_supersedes_the_older_one(auth):
    _, _, client = await client_without_password(auth)
    first = await invite(auth, client.user_id)
    second = await invite(auth, client.user_id)
    assert first != second
    assert (await inspect(auth, first)).outcome == pb.CREDENTIAL_LINK_OUTCOME_EXPIRED
    assert (await inspect(auth, second)).outcome == pb.CREDENTIAL_LINK_OUTCOME_VALID
    # The older email, not yet handed over, is dropped: one invitation in the outbox.
    [(queued,)] = await auth.execute(
        "SELECT count(*) FROM account_notices WHERE user_id = %s AND sent_at IS NULL", (client.user_id,)
    )
    assert queued == 1
    err = await rpc_error(set_password(auth, first))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    await set_password(auth, second)


async def test_exactly_one_of_concurrent_uses_wins(auth):
    _, _, client = await client_without_password(auth)
    token = await invite(auth, client.user_id)
    results = await asyncio.gather(
        *(set_password(auth, token, f"{NEW_PASSWORD}-{i}") for i in range(5)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, pb.SetPasswordWithLinkResponse)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1 and len(losses) == 4
    assert all(e.code() == grpc.StatusCode.FAILED_PRECONDITION for e in losses)
    [(sessions,)] = await auth.execute("SELECT count(*) FROM sessions WHERE user_id = %s", (client.user_id,))
    assert sessions == 1


async def test_password_rules_apply_and_a_refused_password_keeps_the_link(auth):
    _, _, client = await client_without_password(auth, "Alexandra Chen")
    token = await invite(auth, client.user_id)
    for bad, message in (
        ("short-one", "The password must be at least 12 characters long."),
        ("password1234", "This password is too common or too easy to guess. Choose another."),
        ("alexandra-on-the-hill", "The password must not contain your name or email address."),
        ("lakeside-counseling-rules", "The password must not contain the practice's name."),
    ):
        err = await rpc_error(set_password(auth, token, bad))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message), bad
    assert (await inspect(auth, token)).outcome == pb.CREDENTIAL_LINK_OUTCOME_VALID
    await set_password(auth, token)


async def test_a_reset_ends_every_session_and_replaces_the_password(auth):
    practice, owner = await auth.practice()
    first = await sign_in(auth, owner.email, PASSWORD)
    second = await sign_in(auth, owner.email, PASSWORD, "198.51.100.10")
    await reset(auth, owner.email)
    token = await latest_token(auth, owner.user_id, "password_reset")
    reply = await set_password(auth, token)
    for old in (first, second):
        err = await rpc_error(authenticate(auth, old.session_token))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await authenticate(auth, reply.session_token)).user.user_id == owner.user_id
    err = await rpc_error(sign_in(auth, owner.email, PASSWORD))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    await sign_in(auth, owner.email, NEW_PASSWORD)
    [(_, outcome, _, _, detail)] = await auth.audit_rows("credential_link.use")
    assert outcome == "success" and detail["sessions_revoked"] == 2 and detail["purpose"] == "password_reset"


async def test_reset_requests_answer_alike_for_unknown_emails(auth):
    practice, owner = await auth.practice()
    known = await reset(auth, owner.email)
    unknown = await reset(auth, "nobody-at-all@example.test")
    assert known == unknown == pb.RequestPasswordResetResponse()
    assert known.SerializeToString() == unknown.SerializeToString() == b""
    rows = await auth.execute("SELECT user_id::text, kind FROM account_notices")
    assert rows == [(owner.user_id, "password_reset")]
    outcomes = [(row[0], row[1]) for row in await auth.audit_rows("password_reset.request")]
    assert outcomes == [("unknown", "no_account")]
    [(_, outcome, target, _, _)] = await auth.audit_rows("password_reset.create")
    assert (outcome, target) == ("success", owner.user_id)
    err = await rpc_error(reset(auth, "not-an-email"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    # One reset email a minute per account, whatever the address: the same answer, no new link.
    assert await reset(auth, owner.email, "198.51.100.200") == known
    assert len(await auth.execute("SELECT 1 FROM credential_links WHERE user_id = %s", (owner.user_id,))) == 1
    assert [row[1] for row in await auth.audit_rows("password_reset.request")][-1] == "suppressed"
    await auth.execute("UPDATE credential_links SET created_at = created_at - interval '61 seconds'")
    await reset(auth, owner.email)
    assert len(await auth.execute("SELECT 1 FROM credential_links WHERE user_id = %s", (owner.user_id,))) == 2


async def test_credential_endpoints_are_throttled_per_address(fresh_database, keys_dir, tokens):
    async with auth_with(fresh_database, keys_dir, tokens, sign_in_address_limit="3") as auth:
        practice, owner = await auth.practice()
        for email in (owner.email, "nobody@example.test", owner.email):
            await reset(auth, email)
        for email in (owner.email, "nobody@example.test"):
            err = await rpc_error(reset(auth, email))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details().startswith("Too many attempts from your network. Try again in ")
        token = await latest_token(auth, owner.user_id, "password_reset")
        err = await rpc_error(set_password(auth, token))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another address is not affected.
        await set_password(auth, token, address="198.51.100.77")
        assert [row[1] for row in await auth.audit_rows("password_reset.request")][-2:] == ["throttled", "throttled"]


async def test_change_password_keeps_this_session_and_ends_the_others(auth):
    practice, owner = await auth.practice()
    here = await sign_in(auth, owner.email, PASSWORD)
    elsewhere = await sign_in(auth, owner.email, PASSWORD, "198.51.100.11")

    def change(current: str, new: str, session_token: str = here.session_token):
        return auth.stub.ChangePassword(
            pb.ChangePasswordRequest(session_token=session_token, current_password=current, new_password=new,
                                     client_address=ADDRESS),
            metadata=auth.web, timeout=20,
        )

    err = await rpc_error(change("not-the-password-at-all", NEW_PASSWORD))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "The current password is incorrect.")
    err = await rpc_error(change(PASSWORD, "short"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(change(PASSWORD, NEW_PASSWORD, "no-such-session"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    await change(PASSWORD, NEW_PASSWORD)
    assert (await authenticate(auth, here.session_token)).user.user_id == owner.user_id
    err = await rpc_error(authenticate(auth, elsewhere.session_token))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(sign_in(auth, owner.email, PASSWORD))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    await sign_in(auth, owner.email, NEW_PASSWORD)
    outcomes = [(row[1], row[4].get("sessions_revoked")) for row in await auth.audit_rows("password.change")]
    assert outcomes == [("wrong_password", None), ("success", 1)]


async def test_who_may_invite(auth):
    practice, owner = await auth.practice()
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Alex Chen")
    member = await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor")
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Riley Park")
    _, stranger_owner = await auth.practice("Hillside Therapy", "Morgan Blake")

    async def code(user_id: str, metadata) -> grpc.StatusCode:
        try:
            await auth.stub.InviteUser(pb.InviteUserRequest(user_id=user_id), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    assert await code(client.user_id, auth.as_user(member)) == grpc.StatusCode.OK
    assert await code(member.user_id, auth.as_user(owner)) == grpc.StatusCode.OK
    assert await code(clinician.user_id, auth.as_user(member)) == grpc.StatusCode.PERMISSION_DENIED
    assert await code(client.user_id, auth.as_user(client)) == grpc.StatusCode.PERMISSION_DENIED
    assert await code(client.user_id, auth.as_user(stranger_owner)) == grpc.StatusCode.NOT_FOUND
    assert await code(client.user_id, auth.as_service("messaging")) == grpc.StatusCode.OK
    assert await code(member.user_id, auth.as_service("messaging")) == grpc.StatusCode.PERMISSION_DENIED
    assert await code(client.user_id, auth.as_service("notify")) == grpc.StatusCode.PERMISSION_DENIED
    assert await code(client.user_id, ()) == grpc.StatusCode.UNAUTHENTICATED
    assert await code("not-an-id", auth.web) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code(owner.user_id, auth.as_user(owner)) == grpc.StatusCode.FAILED_PRECONDITION

    # The web-only RPCs refuse everyone else.
    for metadata in (auth.as_service("messaging"), auth.as_user(owner)):
        for call in (
            auth.stub.InspectCredentialLink(pb.InspectCredentialLinkRequest(token="x"), metadata=metadata, timeout=5),
            auth.stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=owner.email), metadata=metadata,
                                           timeout=5),
            auth.stub.SetPasswordWithLink(pb.SetPasswordWithLinkRequest(token="x", new_password=NEW_PASSWORD),
                                          metadata=metadata, timeout=5),
            auth.stub.ChangePassword(pb.ChangePasswordRequest(session_token="x"), metadata=metadata, timeout=5),
        ):
            err = await rpc_error(call)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_link_lifetimes_are_configuration(keys_dir):
    config = AuthConfig.load(service_env(keys_dir, auth_database_url="postgresql://unused"))
    assert (config.invitation_ttl_seconds, config.password_reset_ttl_seconds) == (86400, 3600)
    assert config.password_reset_min_interval_seconds == 60
    config = AuthConfig.load(service_env(
        keys_dir, auth_database_url="postgresql://unused", invitation_ttl_seconds="7200",
        password_reset_ttl_seconds="900", password_reset_min_interval_seconds="0",
    ))
    assert (config.invitation_ttl_seconds, config.password_reset_ttl_seconds) == (7200, 900)
    assert config.password_reset_min_interval_seconds == 0


async def test_a_deactivated_persons_links_are_over(auth):
    _, _, client = await client_without_password(auth)
    token = await invite(auth, client.user_id)
    await auth.execute("UPDATE users SET deactivated_at = now() WHERE user_id = %s", (client.user_id,))
    assert (await inspect(auth, token)).outcome == pb.CREDENTIAL_LINK_OUTCOME_EXPIRED
    err = await rpc_error(set_password(auth, token))
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, LINK_ENDED)
    err = await rpc_error(auth.stub.InviteUser(pb.InviteUserRequest(user_id=client.user_id), metadata=auth.web,
                                               timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_link_is_one_factor_staff_with_two_step_verification_must_still_sign_in(auth):
    """A password link never opens a session past a practice's two-step requirement."""
    practice, owner = await auth.practice()
    staff = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Morgan Vale")
    await auth.stub.UpdatePracticeSecurity(
        pb.UpdatePracticeSecurityRequest(security=pb.PracticeSecurity(require_mfa_for_staff=True)),
        metadata=auth.as_user(owner), timeout=10,
    )
    token = await invite(auth, staff.user_id, auth.as_user(owner))
    reply = await set_password(auth, token)
    assert reply.sign_in_required and not reply.session_token
    [(live,)] = await auth.execute(
        "SELECT count(*) FROM sessions WHERE user_id = %s AND revoked_at IS NULL", (staff.user_id,)
    )
    assert live == 0
    # The new password works, and sign-in asks for the second factor.
    signed_in = await sign_in(auth, staff.email, NEW_PASSWORD)
    assert signed_in.enrollment_required and not signed_in.session_token
    # A client's link still signs in at once: clients are never asked for a second factor.
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Riley Park")
    reply = await set_password(auth, await invite(auth, client.user_id))
    assert reply.session_token and not reply.sign_in_required

"""TOTP second factor for staff: enrolment, sign-in with a code or a recovery code,
replay and lockout, and the practice setting that requires it.

Codes are computed with pyotp from the secret the RPC returned. Time is never
slept through: a code for the next 30-second step (inside the ±1 window) stands
in for "a fresh code", and the remembered step is moved back in the database.
"""

from __future__ import annotations

import hashlib
import time

import grpc
import pyotp
import pytest
from confidant.auth.v1 import auth_service_pb2 as pb

from services.auth.config import AuthConfig
from services.common.config import ConfigError
from tests.auth.harness import PASSWORD, rpc_error
from tests.runtime.production import production_env

WRONG_CODE = "The authentication code is not correct."
EXPIRED = "This sign-in has expired. Please sign in again."
ADDRESS = "203.0.113.9"


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


async def sign_in(auth, email: str, password: str = PASSWORD) -> pb.SignInResponse:
    return await auth.stub.SignIn(
        pb.SignInRequest(email=email, password=password, client_address=ADDRESS), metadata=auth.web, timeout=10
    )


async def complete(auth, pending_token: str, code: str) -> pb.CompleteSignInResponse:
    return await auth.stub.CompleteSignIn(
        pb.CompleteSignInRequest(pending_token=pending_token, code=code, client_address=ADDRESS),
        metadata=auth.web, timeout=10,
    )


async def enrol(auth, user: pb.User) -> tuple[str, list[str]]:
    """Turn TOTP on for a signed-in staff member; return the secret and the recovery codes."""
    begun = await auth.stub.BeginTotpEnrollment(pb.BeginTotpEnrollmentRequest(), metadata=auth.as_user(user), timeout=10)
    confirmed = await auth.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(code=code_at(begun.secret)), metadata=auth.as_user(user), timeout=10
    )
    return begun.secret, list(confirmed.recovery_codes)


async def forget_used_step(auth, user: pb.User) -> None:
    """As if the last accepted code's step were long past."""
    await auth.execute("UPDATE totp_credentials SET last_used_step = 0 WHERE user_id = %s", (user.user_id,))


async def failures(auth, user: pb.User) -> int:
    rows = await auth.execute("SELECT failures FROM sign_in_throttle WHERE account_key = %s", (user.user_id,))
    return rows[0][0] if rows else 0


@pytest.fixture
async def clinician(auth):
    practice, owner = await auth.practice()
    user = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Morgan Hale", password=PASSWORD)
    return practice, owner, user


async def test_enrolment_is_inactive_until_confirmed_and_gives_recovery_codes_once(auth, clinician):
    _, _, user = clinician
    me = auth.as_user(user)
    begun = await auth.stub.BeginTotpEnrollment(pb.BeginTotpEnrollmentRequest(), metadata=me, timeout=10)
    assert len(begun.secret) >= 32
    assert begun.otpauth_uri.startswith("otpauth://totp/") and "issuer=Confidant" in begun.otpauth_uri
    # Nothing is active yet: status is off and sign-in still opens a session at once.
    status = await auth.stub.GetTotpStatus(pb.GetTotpStatusRequest(), metadata=me, timeout=10)
    assert not status.enabled
    assert (await sign_in(auth, user.email)).session_token

    err = await rpc_error(auth.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(code="000000" if code_at(begun.secret) != "000000" else "111111"),
        metadata=me, timeout=10))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, WRONG_CODE)

    confirmed = await auth.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(code=code_at(begun.secret)), metadata=me, timeout=10
    )
    codes = list(confirmed.recovery_codes)
    assert len(codes) == 10 and len(set(codes)) == 10
    status = await auth.stub.GetTotpStatus(pb.GetTotpStatusRequest(), metadata=me, timeout=10)
    assert (status.enabled, status.recovery_codes_left) == (True, 10)

    # Already on: a second enrolment is refused rather than silently replacing the secret.
    err = await rpc_error(auth.stub.BeginTotpEnrollment(pb.BeginTotpEnrollmentRequest(), metadata=me, timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Neither the secret nor any recovery code is stored in clear.
    dump = str(await auth.execute("SELECT * FROM totp_credentials")) + str(
        await auth.execute("SELECT * FROM recovery_codes")
    ) + str(await auth.execute("SELECT detail FROM audit_events"))
    assert begun.secret not in dump
    [(sealed,)] = await auth.execute("SELECT secret_sealed FROM totp_credentials WHERE user_id = %s", (user.user_id,))
    assert begun.secret.encode() not in bytes(sealed)
    assert not any(code.replace("-", "") in dump or code in dump for code in codes)
    assert [r[1] for r in await auth.audit_rows("mfa.totp.enable")] == ["failure", "success"]


async def test_sign_in_with_totp_needs_a_code_and_the_pending_token_is_single_use(auth, clinician):
    _, _, user = clinician
    secret, _ = await enrol(auth, user)
    reply = await sign_in(auth, user.email)
    assert reply.second_factor_required and not reply.enrollment_required
    assert reply.session_token == "" and reply.pending_token
    # Only the pending token's hash is stored.
    [(purpose,)] = await auth.execute(
        "SELECT purpose FROM second_factor_pending WHERE token_hash = %s",
        (hashlib.sha256(reply.pending_token.encode()).digest(),),
    )
    assert purpose == "verify"

    done = await complete(auth, reply.pending_token, code_at(secret, 1))
    assert done.session_token and done.user.user_id == user.user_id
    authed = await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=done.session_token), metadata=auth.web, timeout=10
    )
    assert authed.user.user_id == user.user_id

    await forget_used_step(auth, user)
    err = await rpc_error(complete(auth, reply.pending_token, code_at(secret)))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, EXPIRED)
    outcomes = [r[1] for r in await auth.audit_rows("sign_in")]
    assert outcomes[-2:] == ["second_factor_required", "success"]


async def test_a_wrong_code_is_refused_and_counts_toward_the_lock(auth, clinician):
    _, _, user = clinician
    secret, _ = await enrol(auth, user)
    reply = await sign_in(auth, user.email)
    wrong = "123456" if code_at(secret) != "123456" else "654321"
    err = await rpc_error(complete(auth, reply.pending_token, wrong))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG_CODE)
    err = await rpc_error(complete(auth, reply.pending_token, "not-a-recovery-code"))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG_CODE)
    assert await failures(auth, user) == 2
    failed = [r for r in await auth.audit_rows("sign_in") if r[1] == "failure"]
    assert [r[4]["factor"] for r in failed] == ["totp", "recovery_code"]

    # One short of the lock (10 by default), then one more wrong code locks the account, and
    # answers as a wrong password would: with the throttled sentence, not "not correct".
    await auth.execute("UPDATE sign_in_throttle SET failures = 9, blocked_until = NULL WHERE account_key = %s",
                       (user.user_id,))
    err = await rpc_error(complete(auth, reply.pending_token, wrong))
    locked = (grpc.StatusCode.RESOURCE_EXHAUSTED, err.details())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "Try again in 15 minutes" in err.details()
    assert [r[1] for r in await auth.audit_rows("sign_in.lock")] == ["locked"]
    # ... and even the right code is refused now, with the same answer.
    err = await rpc_error(complete(auth, reply.pending_token, code_at(secret)))
    assert (err.code(), err.details()) == locked


async def test_a_code_is_never_accepted_twice(auth, clinician):
    _, _, user = clinician
    secret, _ = await enrol(auth, user)
    code = code_at(secret, 1)
    first = await sign_in(auth, user.email)
    assert (await complete(auth, first.pending_token, code)).session_token
    second = await sign_in(auth, user.email)
    err = await rpc_error(complete(auth, second.pending_token, code))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG_CODE)
    # The confirming code's step is used too.
    assert await failures(auth, user) == 1
    # Once the step is past, a code of a later step works.
    await forget_used_step(auth, user)
    assert (await complete(auth, second.pending_token, code_at(secret))).session_token
    assert await failures(auth, user) == 0


async def test_a_recovery_code_works_once(auth, clinician):
    _, _, user = clinician
    _, codes = await enrol(auth, user)
    first = await sign_in(auth, user.email)
    # Typed in capitals with spaces: the same code.
    typed = "  " + codes[3].upper().replace("-", " ") + " "
    assert (await complete(auth, first.pending_token, typed)).session_token
    second = await sign_in(auth, user.email)
    err = await rpc_error(complete(auth, second.pending_token, codes[3]))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG_CODE)
    assert (await complete(auth, second.pending_token, codes[4])).session_token
    status = await auth.stub.GetTotpStatus(pb.GetTotpStatusRequest(), metadata=auth.as_user(user), timeout=10)
    assert status.recovery_codes_left == 8


async def test_a_pending_sign_in_expires(auth, clinician):
    _, _, user = clinician
    secret, _ = await enrol(auth, user)
    reply = await sign_in(auth, user.email)
    [(seconds,)] = await auth.execute(
        "SELECT extract(epoch FROM expires_at - created_at)::int FROM second_factor_pending"
    )
    assert seconds == 300
    await auth.execute("UPDATE second_factor_pending SET expires_at = now() - interval '1 second'")
    err = await rpc_error(complete(auth, reply.pending_token, code_at(secret, 1)))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, EXPIRED)
    err = await rpc_error(complete(auth, "made-up-token", code_at(secret, 1)))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, EXPIRED)


async def test_the_practice_requirement_leads_staff_to_enrol_at_sign_in(auth, clinician):
    practice, owner, user = clinician
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Riley Park", password="maple-window-77")
    # Only the owner changes the setting; staff can read it.
    err = await rpc_error(auth.stub.UpdatePracticeSecurity(
        pb.UpdatePracticeSecurityRequest(security=pb.PracticeSecurity(require_mfa_for_staff=True)),
        metadata=auth.as_user(user), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    updated = await auth.stub.UpdatePracticeSecurity(
        pb.UpdatePracticeSecurityRequest(security=pb.PracticeSecurity(require_mfa_for_staff=True)),
        metadata=auth.as_user(owner), timeout=10)
    assert updated.security.require_mfa_for_staff
    got = await auth.stub.GetPracticeSecurity(pb.GetPracticeSecurityRequest(), metadata=auth.as_user(user), timeout=10)
    assert got.security.require_mfa_for_staff
    assert [r[1] for r in await auth.audit_rows("practice.security.update")] == ["success"]

    reply = await sign_in(auth, user.email)
    assert reply.second_factor_required and reply.enrollment_required and not reply.session_token
    # An enrolment token is not a verification token.
    err = await rpc_error(complete(auth, reply.pending_token, "123456"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # Only web may enrol with a pending token.
    err = await rpc_error(auth.stub.BeginTotpEnrollment(
        pb.BeginTotpEnrollmentRequest(pending_token=reply.pending_token), metadata=auth.notify, timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    begun = await auth.stub.BeginTotpEnrollment(
        pb.BeginTotpEnrollmentRequest(pending_token=reply.pending_token), metadata=auth.web, timeout=10)
    err = await rpc_error(auth.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(pending_token=reply.pending_token, code="abc", client_address=ADDRESS),
        metadata=auth.web, timeout=10))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG_CODE)
    assert await failures(auth, user) == 1
    confirmed = await auth.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(pending_token=reply.pending_token, code=code_at(begun.secret),
                                        client_address=ADDRESS),
        metadata=auth.web, timeout=10)
    assert len(confirmed.recovery_codes) == 10 and confirmed.session_token
    assert confirmed.user.user_id == user.user_id
    await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=confirmed.session_token), metadata=auth.web, timeout=10)
    assert await failures(auth, user) == 0
    # The pending token is spent.
    err = await rpc_error(auth.stub.BeginTotpEnrollment(
        pb.BeginTotpEnrollmentRequest(pending_token=reply.pending_token), metadata=auth.web, timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    # Next time a code is asked for; the owner (staff, not enrolled) must enrol too; clients are not asked.
    again = await sign_in(auth, user.email)
    assert again.second_factor_required and not again.enrollment_required
    assert (await sign_in(auth, owner.email)).enrollment_required
    assert (await sign_in(auth, client.email, "maple-window-77")).session_token

    # While required, TOTP cannot be turned off.
    err = await rpc_error(auth.stub.DisableTotp(
        pb.DisableTotpRequest(code=code_at(begun.secret, 1)), metadata=auth.as_user(user), timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_turning_totp_off_needs_a_current_code(auth, clinician):
    _, _, user = clinician
    secret, _ = await enrol(auth, user)
    me = auth.as_user(user)
    wrong = "999999" if code_at(secret) != "999999" else "888888"
    err = await rpc_error(auth.stub.DisableTotp(pb.DisableTotpRequest(code=wrong), metadata=me, timeout=10))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, WRONG_CODE)
    assert await failures(auth, user) == 1
    await auth.stub.DisableTotp(pb.DisableTotpRequest(code=code_at(secret, 1)), metadata=me, timeout=10)
    assert (await sign_in(auth, user.email)).session_token
    assert not await auth.execute("SELECT 1 FROM recovery_codes WHERE user_id = %s", (user.user_id,))
    assert [r[1] for r in await auth.audit_rows("mfa.totp.disable")] == ["success"]


async def test_who_may_call_the_mfa_rpcs(auth, clinician):
    practice, _, user = clinician
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Riley Park")
    for metadata in (auth.as_user(client), auth.as_user(user, session_kind="magic_link", conversation_id="c1")):
        err = await rpc_error(auth.stub.BeginTotpEnrollment(pb.BeginTotpEnrollmentRequest(), metadata=metadata,
                                                            timeout=10))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.CompleteSignIn(
        pb.CompleteSignInRequest(pending_token="x", code="123456"), metadata=auth.as_user(user), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.GetTotpStatus(pb.GetTotpStatusRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(auth.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(code="123456"), metadata=auth.as_user(user), timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_production_needs_the_mfa_key(tmp_path):
    env = production_env(tmp_path, auth_database_url="postgresql://x/y",
                         auth_mfa_key_file=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="MFA data key"):
        AuthConfig.load(env)

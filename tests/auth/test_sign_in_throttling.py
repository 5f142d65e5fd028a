"""Sign-in throttling and lockout: per account (delay, then lock) and per client address.

One answer at a time: "Email or password is incorrect." until the failure that throttles the
account, then the throttled sentence (when to try again, and "Forgot password?") for every
attempt until the delay or lock ends — the failure that starts or renews a block included, so
a person never sees the two alternate (issue 11, defect 19).

Time is moved by editing the stored timestamps, never by sleeping. notify is
unreachable here (the lock email is tested with a real notify in
tests/notify/test_account_notices.py): a lock must stand without it.
"""

from __future__ import annotations

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
from services.common.config import ConfigError, Env
from tests.auth.harness import PASSWORD, AuthHarness, rpc_error
from tests.support import channel, running, service_env

WRONG = "Email or password is incorrect."


def too_many(minutes: int) -> str:
    return (
        f"Too many sign-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}, "
        "or choose a new password now with “Forgot password?”."
    )


TOO_MANY = too_many(1)  # the short delays
LOCKED = too_many(15)  # the lock
FROM_ADDRESS = "Too many attempts from your network. Try again in 1 minute."
ADDRESS = "203.0.113.7"
# Nothing listens on port 1: notify is down for this whole file.
NOTIFY_DOWN = "127.0.0.1:1"


@contextlib.asynccontextmanager
async def auth_with(fresh_database, keys_dir, tokens, **settings):
    url = await fresh_database("auth")
    env = service_env(keys_dir, auth_database_url=url, notify_addr=NOTIFY_DOWN, **settings)
    service = await create_service(AuthConfig.load(env))
    async with running(service) as address, channel(address) as ch:
        yield AuthHarness(pb_grpc.AuthServiceStub(ch), url, tokens, keys_dir)


@pytest.fixture
async def auth(fresh_database, keys_dir, tokens):
    """Delay after 3 consecutive failures, lock after 5; a generous address limit."""
    async with auth_with(
        fresh_database, keys_dir, tokens,
        sign_in_delay_after_failures="3", sign_in_lock_after_failures="5", sign_in_address_limit="1000",
    ) as harness:
        yield harness


async def sign_in(auth, email: str, password: str = PASSWORD, address: str = ADDRESS):
    return await auth.stub.SignIn(
        pb.SignInRequest(email=email, password=password, client_address=address), metadata=auth.web, timeout=10
    )


async def fails(auth, email: str, password: str = "not-the-password-at-all", address: str = ADDRESS):
    """Sign in and return the error's (code, details)."""
    err = await rpc_error(sign_in(auth, email, password, address))
    return err.code(), err.details()


async def unblock(auth):
    """Let every delay and lock run out."""
    await auth.execute("UPDATE sign_in_throttle SET blocked_until = now() - interval '1 second'")


async def throttle_row(auth, key: str):
    rows = await auth.execute(
        "SELECT failures, extract(epoch FROM blocked_until - updated_at)::int, locked,"
        " blocked_until > now() FROM sign_in_throttle WHERE account_key = %s",
        (key,),
    )
    return rows[0] if rows else None


def email_key(email: str) -> str:
    return "email:" + hashlib.sha256(email.encode()).hexdigest()


# -- configuration -----------------------------------------------------------------------------


def test_throttling_defaults_and_settings(keys_dir):
    config = AuthConfig.load(Env({"CONFIDANT_MODE": "development", "CONFIDANT_KEYS_DIR": str(keys_dir),
                                  "CONFIDANT_AUTH_DATABASE_URL": "postgresql://x/auth"}))
    assert (config.sign_in_delay_after_failures, config.sign_in_lock_after_failures) == (5, 10)
    assert (config.sign_in_lock_seconds, config.sign_in_max_delay_seconds) == (900, 300)
    assert (config.sign_in_address_limit, config.sign_in_address_window_seconds) == (30, 60)
    # Without a setting, peers are on the default ports.
    assert (config.notify_target, config.messaging_target) == ("127.0.0.1:50054", "127.0.0.1:50052")
    env = service_env(
        keys_dir, auth_database_url="postgresql://x/auth", sign_in_lock_after_failures="20",
        sign_in_address_limit="7", notify_addr="notify.internal:50054",
    )
    config = AuthConfig.load(env)
    assert (config.sign_in_lock_after_failures, config.sign_in_address_limit) == (20, 7)
    assert config.notify_target == "notify.internal:50054"
    for settings in (
        {"sign_in_lock_after_failures": "0"},
        {"sign_in_address_limit": "-1"},
        {"sign_in_lock_seconds": "soon"},
        {"sign_in_delay_after_failures": "8", "sign_in_lock_after_failures": "6"},
        {"sign_in_lock_after_failures": "100"},  # NIST: well before 100
    ):
        with pytest.raises(ConfigError) as err:
            AuthConfig.load(service_env(keys_dir, auth_database_url="postgresql://x/auth", **settings))
        assert "CONFIDANT_SIGN_IN_" in str(err.value)


# -- per account ----------------------------------------------------------------------------------


async def test_a_growing_delay_after_the_configured_failures(auth):
    _, owner = await auth.practice()
    for _ in range(2):
        assert await fails(auth, owner.email) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)
    assert (await throttle_row(auth, owner.user_id))[:3] == (2, None, False)
    # The third consecutive failure starts the delay, 2^0 = 1 second, and says so ...
    assert await fails(auth, owner.email) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)
    assert await throttle_row(auth, owner.user_id) == (3, 1, False, True)
    # ... during which even the right password is refused, without being checked.
    assert await fails(auth, owner.email, PASSWORD) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)
    # Once it ran out, a wrong password is counted and delays again: the same answer, not "incorrect".
    await unblock(auth)
    assert await fails(auth, owner.email) == (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)
    assert await throttle_row(auth, owner.user_id) == (4, 2, False, True)  # 2^1 seconds

    failures = await auth.audit_rows("sign_in")
    delays = [row[4].get("delay_seconds") for row in failures if row[1] == "failure"]
    assert delays == [None, None, 1, 2]
    throttled = [row for row in failures if row[1] == "throttled"]
    assert len(throttled) == 1
    actor, _, target, practice_id, detail = throttled[0]
    assert (actor, target, practice_id) == (owner.user_id, owner.user_id, owner.practice_id)
    assert detail == {"client_address": ADDRESS, "via": "web", "reason": "delayed"}
    assert owner.email not in str(await auth.execute("SELECT detail FROM audit_events"))


async def test_the_delay_is_capped(fresh_database, keys_dir, tokens):
    async with auth_with(
        fresh_database, keys_dir, tokens, sign_in_delay_after_failures="1", sign_in_lock_after_failures="20",
        sign_in_max_delay_seconds="3",
    ) as auth:
        _, owner = await auth.practice()
        seen = []
        for _ in range(4):
            await unblock(auth)
            await fails(auth, owner.email)
            seen.append((await throttle_row(auth, owner.user_id))[1])
        assert seen == [1, 2, 3, 3]


async def test_lockout_after_the_configured_failures_and_its_end(auth):
    _, owner = await auth.practice()
    answers = []
    for _ in range(4):
        await unblock(auth)
        answers.append(await fails(auth, owner.email))
    assert answers == [(grpc.StatusCode.UNAUTHENTICATED, WRONG)] * 2 + [(grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)] * 2
    await unblock(auth)
    # The fifth failure locks the account for 15 minutes, and its answer says so.
    assert await fails(auth, owner.email) == (grpc.StatusCode.RESOURCE_EXHAUSTED, LOCKED)
    assert await throttle_row(auth, owner.user_id) == (5, 900, True, True)
    [(actor, outcome, target, practice_id, detail)] = await auth.audit_rows("sign_in.lock")
    assert (actor, outcome, target, practice_id) == (owner.user_id, "locked", owner.user_id, owner.practice_id)
    assert detail == {"client_address": ADDRESS, "via": "web", "failures": 5, "lock_seconds": 900}
    # Locked: the right and a wrong password get the same answer, which says nothing about either.
    assert await fails(auth, owner.email, PASSWORD) == (grpc.StatusCode.RESOURCE_EXHAUSTED, LOCKED)
    assert await fails(auth, owner.email) == (grpc.StatusCode.RESOURCE_EXHAUSTED, LOCKED)
    # Ten minutes on, it says when again.
    await auth.execute("UPDATE sign_in_throttle SET blocked_until = blocked_until - interval '10 minutes'")
    assert await fails(auth, owner.email) == (grpc.StatusCode.RESOURCE_EXHAUSTED, too_many(5))
    # Refused attempts neither count nor extend the lock.
    assert (await throttle_row(auth, owner.user_id))[0] == 5
    reasons = [row[4]["reason"] for row in await auth.audit_rows("sign_in") if row[1] == "throttled"]
    assert reasons == ["locked", "locked", "locked"]
    # The lock email waits in the outbox (notify is down); the lock stands regardless.
    [(user_id, kind, minutes, sent)] = await auth.execute(
        "SELECT user_id::text, kind, lock_minutes, sent_at IS NOT NULL FROM account_notices"
    )
    assert (user_id, kind, minutes, sent) == (owner.user_id, "locked", 15, False)

    # 15 minutes later (the stored end moved into the past) the right password works and resets the count.
    await auth.execute(
        "UPDATE sign_in_throttle SET blocked_until = now() - interval '1 second' WHERE account_key = %s",
        (owner.user_id,),
    )
    reply = await sign_in(auth, owner.email)
    assert reply.user.user_id == owner.user_id
    assert await throttle_row(auth, owner.user_id) is None
    async with await psycopg.AsyncConnection.connect(auth.database_url, autocommit=True) as conn:
        assert await verify_chain(conn)


async def test_a_success_resets_the_count(auth):
    _, owner = await auth.practice()
    for _ in range(2):
        await fails(auth, owner.email)
    await sign_in(auth, owner.email)
    assert await throttle_row(auth, owner.user_id) is None
    # Two more failures are the first two again: no delay yet.
    for _ in range(2):
        assert await fails(auth, owner.email) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)
    assert await throttle_row(auth, owner.user_id) == (2, None, False, None)
    await sign_in(auth, owner.email)


async def test_unknown_and_known_accounts_answer_alike_while_throttled(auth):
    _, owner = await auth.practice()
    nobody = auth.email("nobody")
    known, unknown = [], []
    for _ in range(5):
        await unblock(auth)
        known.append(await fails(auth, owner.email))
        unknown.append(await fails(auth, nobody))
    assert known == unknown == [(grpc.StatusCode.UNAUTHENTICATED, WRONG)] * 2 + [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY)
    ] * 2 + [(grpc.StatusCode.RESOURCE_EXHAUSTED, LOCKED)]
    # Both are locked now, and answer identically, whatever the password.
    for password in (PASSWORD, "another-wrong-password"):
        assert await fails(auth, owner.email, password) == await fails(auth, nobody, password) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, LOCKED
        )
    # The unknown email is counted under its hash; it is never stored or audited in clear.
    assert await throttle_row(auth, email_key(nobody)) == (5, 900, True, True)
    dump = str(await auth.execute("SELECT * FROM sign_in_throttle")) + str(
        await auth.execute("SELECT detail FROM audit_events")
    )
    assert nobody not in dump
    locks = await auth.audit_rows("sign_in.lock")
    assert [(row[0], row[2]) for row in locks] == [(owner.user_id, owner.user_id), ("unknown", "")]
    assert locks[1][4]["email_sha256"] == hashlib.sha256(nobody.encode()).hexdigest()
    throttled = [row for row in await auth.audit_rows("sign_in") if row[1] == "throttled"]
    assert {row[0] for row in throttled} == {owner.user_id, "unknown"}
    assert all(row[4]["reason"] == "locked" for row in throttled)
    # Only a real account gets a lock email.
    assert await auth.execute("SELECT user_id::text FROM account_notices") == [(owner.user_id,)]


async def test_successive_wrong_tries_never_go_back_from_throttled_to_incorrect(fresh_database, keys_dir, tokens):
    """Defect 19: a person retrying every few seconds used to see "incorrect" again each time a
    short delay had run out, then "Too many" again, and so on. With the default delays (from the
    5th failure) and lock (the 10th), 20 tries five seconds apart, for an account and for an
    email nobody has, now answer "incorrect" until the account is throttled, then only the
    throttled sentence, identically for both."""
    async with auth_with(fresh_database, keys_dir, tokens, sign_in_address_limit="1000") as auth:
        _, owner = await auth.practice()
        nobody = auth.email("nobody")
        known, unknown = [], []
        for _ in range(20):
            known.append(await fails(auth, owner.email))
            unknown.append(await fails(auth, nobody))
            # Five seconds pass before the next try.
            await auth.execute("UPDATE sign_in_throttle SET blocked_until = blocked_until - interval '5 seconds'")
        assert known == unknown
        codes = [code for code, _ in known]
        first_throttled = codes.index(grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Once throttled, never "incorrect" again while throttled (the old answers alternated).
        assert grpc.StatusCode.UNAUTHENTICATED not in codes[first_throttled:], [c.name for c in codes]
        assert first_throttled == 4  # the 5th failure starts the delays
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 4 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 16
        assert {details for code, details in known if code == grpc.StatusCode.UNAUTHENTICATED} == {WRONG}
        throttled = [details for code, details in known if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        # Delays first (said as 1 minute, their shortest honest rounding), then the 15-minute lock.
        assert set(throttled) == {TOO_MANY, LOCKED} and throttled[-1] == LOCKED
        assert TOO_MANY not in throttled[throttled.index(LOCKED):]
        # The right password gets the same answer while locked, for the account and the unknown email alike.
        assert await fails(auth, owner.email, PASSWORD) == await fails(auth, nobody, PASSWORD) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, LOCKED
        )
        assert (await throttle_row(auth, owner.user_id))[2] and (await throttle_row(auth, email_key(nobody)))[2]


# -- per client address -------------------------------------------------------------------------


async def test_the_per_address_limit_spans_accounts_and_magic_links(fresh_database, keys_dir, tokens):
    async with auth_with(fresh_database, keys_dir, tokens, sign_in_address_limit="3") as auth:
        _, owner = await auth.practice()
        other = auth.email("other")
        assert await fails(auth, owner.email) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)
        assert await fails(auth, other) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)
        assert (await sign_in(auth, owner.email)).user.user_id == owner.user_id
        # The fourth attempt in the minute from this address is refused, whoever it is for.
        assert await fails(auth, owner.email, PASSWORD) == (grpc.StatusCode.RESOURCE_EXHAUSTED, FROM_ADDRESS)
        assert await fails(auth, auth.email("third")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, FROM_ADDRESS)
        err = await rpc_error(
            auth.stub.RedeemMagicLink(
                pb.RedeemMagicLinkRequest(token="x" * 43, client_address=ADDRESS), metadata=auth.web, timeout=5
            )
        )
        assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, FROM_ADDRESS)
        # Another address is unaffected, and refused attempts did not count against the account.
        assert (await sign_in(auth, owner.email, address="198.51.100.9")).user.user_id == owner.user_id
        # The next window (the stored one moved into the past) allows attempts again.
        await auth.execute("UPDATE address_attempts SET window_start = window_start - interval '1 hour'")
        reply = await auth.stub.RedeemMagicLink(
            pb.RedeemMagicLinkRequest(token="x" * 43, client_address=ADDRESS), metadata=auth.web, timeout=5
        )
        assert reply.outcome == pb.MAGIC_LINK_OUTCOME_UNKNOWN
        assert (await sign_in(auth, owner.email)).user.user_id == owner.user_id

        throttled = [row for row in await auth.audit_rows("sign_in") if row[1] == "throttled"]
        assert [(row[0], row[4]["reason"]) for row in throttled] == [(owner.user_id, "address"), ("unknown", "address")]
        assert throttled[1][4]["email_sha256"]
        redeems = [row for row in await auth.audit_rows("magic_link.redeem") if row[1] == "throttled"]
        assert len(redeems) == 1 and redeems[0][4] == {"client_address": ADDRESS, "via": "web", "reason": "address"}

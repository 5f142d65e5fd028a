"""Rotating auth's signing key without downtime: real auth and messaging in-process.

Time is moved in auth's database (activation and retirement stamps) and in the
verifier's cache clock, never slept through.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.common.identity import Principal
from services.common.server import GrpcService
from services.common.tokens import TokenSigner
from services.messaging.app import create_service as create_messaging
from services.messaging.config import MessagingConfig
from tests.messaging.harness import eventually, rpc_error
from tests.support import channel, running, service_env, unique

PASSWORD = "quiet-harbor-2026"
NOWHERE = "127.0.0.1:9"


@contextlib.asynccontextmanager
async def messaging_at(fresh_database, keys_dir, auth_address: str) -> AsyncIterator[tuple[GrpcService, str]]:
    url = await fresh_database("messaging")
    env = service_env(keys_dir, messaging_database_url=url, auth_addr=auth_address, notify_addr=NOWHERE)
    service = await create_messaging(MessagingConfig.load(env))
    async with running(service) as address:
        yield service, address


def _kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


async def _sql(url: str, query: str, params=()) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query, params)


def _let_time_pass(service: GrpcService, seconds: float) -> None:
    """As if ``seconds`` passed for the service's cache of auth's published keys."""
    published = service.verifier.published
    assert published is not None
    published._tried_at -= seconds
    published._fetched_at -= seconds


async def test_rotation_keeps_old_tokens_working_until_they_expire(fresh_database, keys_dir, tokens):
    auth_url = await fresh_database("auth")
    auth_service = await create_auth(
        AuthConfig.load(service_env(keys_dir, auth_database_url=auth_url, signing_key_refresh_seconds="1"))
    )
    async with contextlib.AsyncExitStack() as stack:
        auth_address = await stack.enter_async_context(running(auth_service))
        auth = auth_grpc.AuthServiceStub(await stack.enter_async_context(channel(auth_address)))
        messaging_service, messaging_address = await stack.enter_async_context(
            messaging_at(fresh_database, keys_dir, auth_address)
        )
        messaging = msg_grpc.MessagingServiceStub(await stack.enter_async_context(channel(messaging_address)))
        web = tokens.metadata(tokens.service("web"))

        created = await auth.CreatePractice(
            auth_pb.CreatePracticeRequest(
                name="Lakeside Counseling",
                owner_email=f"{unique('owner')}@lakeside.test",
                owner_display_name="Dana Rivera",
                owner_password=PASSWORD,
            ),
            metadata=web,
            timeout=10,
        )
        signed_in = await auth.SignIn(
            auth_pb.SignInRequest(email=created.owner.email, password=PASSWORD, client_address="10.0.0.1"),
            metadata=web,
            timeout=10,
        )

        async def access_token() -> str:
            reply = await auth.AuthenticateSession(
                auth_pb.AuthenticateSessionRequest(session_token=signed_in.session_token),
                metadata=web,
                timeout=5,
            )
            return reply.access_token

        async def works_in_messaging(token: str) -> None:
            await messaging.GetPracticeSettings(
                msg_pb.GetPracticeSettingsRequest(), metadata=tokens.metadata(token), timeout=5
            )

        # Before: the imported key file is the one key, and it signs.
        keys = await auth.ListSigningKeys(auth_pb.ListSigningKeysRequest(), metadata=web, timeout=5)
        assert [k.kid for k in keys.keys] == ["auth"] and not keys.keys[0].HasField("not_after")
        old_token = await access_token()
        assert _kid(old_token) == "auth"
        await works_in_messaging(old_token)

        # Only web may rotate; people may not even list the keys.
        for metadata in (tokens.metadata(tokens.service("messaging")), tokens.metadata(old_token)):
            err = await rpc_error(
                auth.RotateSigningKey(auth_pb.RotateSigningKeyRequest(), metadata=metadata, timeout=5)
            )
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(
            auth.ListSigningKeys(
                auth_pb.ListSigningKeysRequest(), metadata=tokens.metadata(old_token), timeout=5
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED

        # Rotate: the new key is published at once but signs only after the activation delay.
        rotated = await auth.RotateSigningKey(auth_pb.RotateSigningKeyRequest(), metadata=web, timeout=5)
        new_kid = rotated.key.kid
        assert new_kid.startswith("auth-") and rotated.key.activated_at.seconds > time.time() + 20
        keys = await auth.ListSigningKeys(auth_pb.ListSigningKeysRequest(), metadata=web, timeout=5)
        published = {k.kid: k for k in keys.keys}
        assert set(published) == {"auth", new_kid}
        # The old key stays published for a token lifetime (plus leeway) after the new one takes over.
        assert published["auth"].not_after.seconds - rotated.key.activated_at.seconds == 305
        assert not published[new_kid].HasField("not_after")
        assert _kid(await access_token()) == "auth"

        # The activation time arrives (moved in the database, not waited for).
        await _sql(
            auth_url,
            "UPDATE signing_keys SET activated_at = now() - interval '1 second' WHERE kid = %s",
            (new_kid,),
        )
        await _sql(
            auth_url, "UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = 'auth'"
        )

        async def new_kid_token() -> str | None:
            token = await access_token()
            return token if _kid(token) == new_kid else None

        new_token = await eventually(new_kid_token, within=10)
        # Messaging has never seen the new kid; it fetches it (the activation delay is
        # what makes its rate limit safe: here that time passed in an instant).
        _let_time_pass(messaging_service, 10)
        await works_in_messaging(new_token)
        # A token signed by the old key keeps working until it expires ...
        await works_in_messaging(old_token)
        # ... and a service token signed with the same key file keeps working for ever
        # (verified: refused for its role, not for its signature).
        err = await rpc_error(
            messaging.GetPracticeSettings(
                msg_pb.GetPracticeSettingsRequest(),
                metadata=tokens.metadata(tokens.service("auth")),
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED

        # Every token of the old key has expired: it is no longer published, and verifiers drop it.
        await _sql(
            auth_url, "UPDATE signing_keys SET retired_at = now() - interval '400 seconds' WHERE kid = 'auth'"
        )
        keys = await auth.ListSigningKeys(auth_pb.ListSigningKeysRequest(), metadata=web, timeout=5)
        assert [k.kid for k in keys.keys] == [new_kid]
        _let_time_pass(messaging_service, 301)
        err = await rpc_error(works_in_messaging(old_token))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        await works_in_messaging(new_token)
        # Auth itself verifies against its own keys the same way.
        _let_time_pass(auth_service, 301)
        get_users = auth_pb.GetUsersRequest(user_ids=[created.owner.user_id])
        await auth.GetUsers(get_users, metadata=tokens.metadata(new_token), timeout=5)
        err = await rpc_error(auth.GetUsers(get_users, metadata=tokens.metadata(old_token), timeout=5))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_kids_are_refused_without_hammering_auth(fresh_database, keys_dir, tokens):
    auth_url = await fresh_database("auth")
    auth_service = await create_auth(AuthConfig.load(service_env(keys_dir, auth_database_url=auth_url)))
    async with contextlib.AsyncExitStack() as stack:
        auth_address = await stack.enter_async_context(running(auth_service))
        messaging_service, messaging_address = await stack.enter_async_context(
            messaging_at(fresh_database, keys_dir, auth_address)
        )
        messaging = msg_grpc.MessagingServiceStub(await stack.enter_async_context(channel(messaging_address)))
        published = messaging_service.verifier.published
        assert published is not None
        fetches = 0
        fetch = published._fetch

        async def counting_fetch():
            nonlocal fetches
            fetches += 1
            return await fetch()

        published._fetch = counting_fetch
        person = Principal(subject="5d0f6c1e-0000-4000-8000-000000000001", role="owner", practice_id="p1")
        stranger = TokenSigner("auth", Ed25519PrivateKey.generate(), kid="auth-19700101-deadbeef")
        for _ in range(5):
            token, _ = stranger.user_token(person)
            err = await rpc_error(
                messaging.GetPracticeSettings(
                    msg_pb.GetPracticeSettingsRequest(), metadata=tokens.metadata(token), timeout=5
                )
            )
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "unknown key" in err.details()
        assert fetches == 1
        # A key file of ours under a kid auth never published is refused too.
        forged = TokenSigner.from_keys_dir(keys_dir, "auth")
        forged.kid = "auth-19700101-cafebabe"
        err = await rpc_error(
            messaging.GetPracticeSettings(
                msg_pb.GetPracticeSettingsRequest(),
                metadata=tokens.metadata(forged.user_token(person)[0]),
                timeout=5,
            )
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_services_start_before_auth_and_fetch_on_first_need(fresh_database, keys_dir, tokens):
    async with messaging_at(fresh_database, keys_dir, NOWHERE) as (service, address), channel(address) as ch:
        messaging = msg_grpc.MessagingServiceStub(ch)
        assert service.verifier.published is not None and not service.verifier.published.loaded
        # Auth is unreachable: the key file auth imports as its first key is trusted meanwhile.
        token = tokens.user("5d0f6c1e-0000-4000-8000-000000000002", "p1", "owner")
        await messaging.GetPracticeSettings(
            msg_pb.GetPracticeSettingsRequest(), metadata=tokens.metadata(token), timeout=5
        )
        assert not service.verifier.published.loaded


@pytest.mark.parametrize("activation", ["-1"])
def test_activation_delay_is_not_negative(keys_dir, activation):
    from services.common.config import ConfigError

    with pytest.raises(ConfigError):
        AuthConfig.load(
            service_env(
                keys_dir, auth_database_url="postgresql://x", signing_key_activation_seconds=activation
            )
        )

"""The client-created outbox: every new client reaches messaging's HandleClientCreated,
at once when messaging is up and once it comes back when it was down.

With the real messaging service: a practice that enables new clients automatically
gets them enabled and invited; one that does not leaves them off. With a stand-in
messaging: the relay's retry rules (UNIMPLEMENTED and UNAVAILABLE wait, NOT_FOUND
and INVALID_ARGUMENT are final) and the token it calls with.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2 as messaging_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as messaging_grpc

from services.auth.app import create_service as create_auth
from services.auth.config import AuthConfig
from services.common.tokens import TokenVerifier
from services.messaging.app import create_service as create_messaging
from services.messaging.config import MessagingConfig
from tests.auth.harness import PASSWORD, AuthHarness
from tests.messaging.harness import eventually
from tests.support import channel, running, service_env

NOWHERE = "127.0.0.1:9"


def _free_port() -> int:
    """A port nothing listens on yet, so auth can be told messaging's address before messaging starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def _auth(fresh_database, keys_dir, tokens, messaging_address: str) -> AsyncIterator[tuple[AuthHarness, str]]:
    url = await fresh_database("auth")
    env = service_env(
        keys_dir,
        auth_database_url=url,
        messaging_addr=messaging_address,
        notify_addr=NOWHERE,
        client_event_retry_seconds="1",
    )
    service = await create_auth(AuthConfig.load(env))
    async with running(service) as address, channel(address) as ch:
        yield AuthHarness(auth_grpc.AuthServiceStub(ch), url, tokens, keys_dir), address


@contextlib.asynccontextmanager
async def _messaging(keys_dir, auth_address: str, port: int, database_url: str) -> AsyncIterator[None]:
    env = service_env(keys_dir, messaging_database_url=database_url, auth_addr=auth_address, notify_addr=NOWHERE)
    service = await create_messaging(MessagingConfig.load(env))
    service.grace_seconds = 1.0
    await service.start(f"127.0.0.1:{port}")
    try:
        yield
    finally:
        await service.stop()


class _Stack:
    def __init__(self, auth: AuthHarness, messaging: messaging_grpc.MessagingServiceStub) -> None:
        self.auth = auth
        self.messaging = messaging

    async def practice(self, auto_enable: bool) -> auth_pb.User:
        _, owner = await self.auth.practice()
        await self.messaging.UpdatePracticeSettings(
            messaging_pb.UpdatePracticeSettingsRequest(
                settings=messaging_pb.PracticeSettings(
                    secure_messaging_enabled=True, auto_enable_new_clients=auto_enable, team_messaging_enabled=True
                )
            ),
            metadata=self.auth.as_user(owner),
            timeout=5,
        )
        return owner

    async def create_client(self, owner: auth_pb.User) -> auth_pb.User:
        reply = await self.auth.stub.CreateClient(
            auth_pb.CreateClientRequest(email=self.auth.email("client"), display_name="Jordan Lee"),
            metadata=self.auth.as_user(owner),
            timeout=5,
        )
        return reply.client

    async def enabled(self, owner: auth_pb.User, client: auth_pb.User) -> bool:
        reply = await self.messaging.GetClientMessaging(
            messaging_pb.GetClientMessagingRequest(client_id=client.user_id),
            metadata=self.auth.as_user(owner),
            timeout=5,
        )
        return reply.enabled

    async def relayed(self, client: auth_pb.User) -> bool:
        rows = await self.auth.execute(
            "SELECT done_at IS NOT NULL FROM client_events WHERE client_id = %s", (client.user_id,)
        )
        return rows == [(True,)]

    async def invitations(self, client: auth_pb.User) -> int:
        rows = await self.auth.execute(
            "SELECT count(*) FROM account_notices WHERE user_id = %s AND kind = 'invitation'", (client.user_id,)
        )
        return rows[0][0]


@pytest.fixture
async def stack(fresh_database, keys_dir, tokens):
    port = _free_port()
    async with _auth(fresh_database, keys_dir, tokens, f"127.0.0.1:{port}") as (auth, auth_address):
        messaging_url = await fresh_database("messaging")
        async with (
            _messaging(keys_dir, auth_address, port, messaging_url),
            channel(f"127.0.0.1:{port}") as ch,
        ):
            yield _Stack(auth, messaging_grpc.MessagingServiceStub(ch))


async def test_a_new_client_of_an_auto_enabling_practice_is_enabled_and_invited(stack: _Stack):
    owner = await stack.practice(auto_enable=True)
    client = await stack.create_client(owner)
    await eventually(lambda: stack.enabled(owner, client))
    await eventually(lambda: stack.relayed(client))
    assert await stack.invitations(client) == 1

    # CreateUser with the client role (the seed, the web edge) goes through the same outbox.
    made = await stack.auth.user(owner.practice_id, auth_pb.ROLE_CLIENT, "Alex Chen")
    await eventually(lambda: stack.enabled(owner, made))
    # A client who already has a password is enabled but not invited.
    with_password = await stack.auth.user(owner.practice_id, auth_pb.ROLE_CLIENT, "Casey Wong", password=PASSWORD)
    await eventually(lambda: stack.enabled(owner, with_password))
    await eventually(lambda: stack.relayed(with_password))
    assert await stack.invitations(with_password) == 0
    # Staff are never handed to messaging as clients.
    await stack.auth.user(owner.practice_id, auth_pb.ROLE_CLINICIAN, "Riley Park", password=PASSWORD)
    assert await stack.auth.execute("SELECT count(*) FROM client_events") == [(3,)]


async def test_a_new_client_of_a_practice_without_auto_enable_stays_off(stack: _Stack):
    owner = await stack.practice(auto_enable=False)
    client = await stack.create_client(owner)
    await eventually(lambda: stack.relayed(client))
    assert not await stack.enabled(owner, client)
    assert await stack.invitations(client) == 0


async def test_a_client_created_while_messaging_is_down_is_enabled_once_it_is_back(
    fresh_database, keys_dir, tokens
):
    port = _free_port()
    messaging_url = await fresh_database("messaging")
    async with (
        _auth(fresh_database, keys_dir, tokens, f"127.0.0.1:{port}") as (auth, auth_address),
        channel(f"127.0.0.1:{port}") as ch,
    ):
        stack = _Stack(auth, messaging_grpc.MessagingServiceStub(ch))
        async with _messaging(keys_dir, auth_address, port, messaging_url):
            owner = await stack.practice(auto_enable=True)

        client = await stack.create_client(owner)

        async def tried_and_waiting() -> bool:
            rows = await auth.execute(
                "SELECT attempts, done_at FROM client_events WHERE client_id = %s", (client.user_id,)
            )
            return rows[0][0] >= 2 and rows[0][1] is None

        await eventually(tried_and_waiting, within=20)

        async with _messaging(keys_dir, auth_address, port, messaging_url):
            await eventually(lambda: stack.enabled(owner, client), within=20)
            await eventually(lambda: stack.relayed(client))
            assert await stack.invitations(client) == 1


# -- the relay's rules, against a stand-in messaging ------------------------------------------


class _FakeMessaging(messaging_grpc.MessagingServiceServicer):
    """Answers HandleClientCreated with the next queued status code (OK once the queue is empty)."""

    def __init__(self, keys_dir) -> None:
        self.answers: list[grpc.StatusCode] = []
        self.calls: list[tuple[str, str, str]] = []
        self._verifier = TokenVerifier.from_keys_dir(keys_dir)

    async def HandleClientCreated(self, request, context):
        token = dict(context.invocation_metadata())["authorization"].removeprefix("Bearer ")
        self.calls.append((request.practice_id, request.client_id, self._verifier.verify(token).service_name))
        code = self.answers.pop(0) if self.answers else grpc.StatusCode.OK
        if code != grpc.StatusCode.OK:
            await context.abort(code, "not now")
        return messaging_pb.HandleClientCreatedResponse(enabled=True)


async def test_the_relay_retries_until_messaging_answers_and_drops_what_it_refuses(
    fresh_database, keys_dir, tokens
):
    fake = _FakeMessaging(keys_dir)
    server = grpc.aio.server()
    messaging_grpc.add_MessagingServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with _auth(fresh_database, keys_dir, tokens, f"127.0.0.1:{port}") as (auth, _):
            practice, owner = await auth.practice()
            staff = auth.as_user(owner)

            async def create(name: str) -> str:
                reply = await auth.stub.CreateClient(
                    auth_pb.CreateClientRequest(email=auth.email("client"), display_name=name),
                    metadata=staff,
                    timeout=5,
                )
                return reply.client.user_id

            async def state(client_id: str) -> tuple[int, bool]:
                rows = await auth.execute(
                    "SELECT attempts, done_at IS NOT NULL FROM client_events WHERE client_id = %s", (client_id,)
                )
                return rows[0]

            # Not implemented yet (an older messaging), then unavailable, then OK: retried until OK
            # (the channel itself retries UNAVAILABLE at once; UNIMPLEMENTED waits for the lease).
            fake.answers = [grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE]
            first = await create("Jordan Lee")
            await eventually(lambda: _done(state, first), within=20)
            assert (await state(first))[0] >= 2
            assert [c for c in fake.calls if c[1] == first][-1] == (practice.practice_id, first, "auth")
            assert len([c for c in fake.calls if c[1] == first]) >= 3

            # NOT_FOUND and INVALID_ARGUMENT are final: the row is settled after one call.
            for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                fake.answers = [code]
                client_id = await create("Alex Chen")
                await eventually(lambda client_id=client_id: _done(state, client_id))
                assert await state(client_id) == (1, True)
                assert len([c for c in fake.calls if c[1] == client_id]) == 1
    finally:
        await server.stop(None)


async def _done(state, client_id: str) -> bool:
    return (await state(client_id))[1]


async def test_the_relay_is_woken_at_once_not_at_its_next_poll(fresh_database, keys_dir, tokens):
    fake = _FakeMessaging(keys_dir)
    server = grpc.aio.server()
    messaging_grpc.add_MessagingServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    url = await fresh_database("auth")
    env = service_env(
        keys_dir, auth_database_url=url, messaging_addr=f"127.0.0.1:{port}", notify_addr=NOWHERE,
        client_event_retry_seconds="600",
    )
    service = await create_auth(AuthConfig.load(env))
    try:
        async with running(service) as address, channel(address) as ch:
            auth = AuthHarness(auth_grpc.AuthServiceStub(ch), url, tokens, keys_dir)
            _, owner = await auth.practice()
            # The relay polled once at start-up, long before (the owner's password was hashed
            # meanwhile), and would poll again only after 600 s: only the wake-up delivers this.
            reply = await auth.stub.CreateClient(
                auth_pb.CreateClientRequest(email=auth.email(), display_name="Jordan Lee"),
                metadata=auth.as_user(owner),
                timeout=5,
            )

            async def delivered() -> bool:
                return any(c[1] == reply.client.user_id for c in fake.calls)

            await eventually(delivered, within=5)
    finally:
        await server.stop(None)

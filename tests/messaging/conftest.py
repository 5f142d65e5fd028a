"""A real auth service per test module, and a fresh messaging service per test."""

from __future__ import annotations

import pytest
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from tests.messaging.harness import MessagingHarness, auth_service, messaging_service
from tests.support import channel


@pytest.fixture(scope="module")
async def auth_address(fresh_database, keys_dir):
    async with auth_service(fresh_database, keys_dir) as address:
        yield address


@pytest.fixture(scope="module")
async def auth_stub(auth_address):
    async with channel(auth_address) as ch:
        yield auth_grpc.AuthServiceStub(ch)


@pytest.fixture
async def messaging(fresh_database, keys_dir, tokens, auth_address, auth_stub):
    async with (
        messaging_service(fresh_database, keys_dir, auth_address) as (address, url),
        channel(address) as ch,
    ):
        yield MessagingHarness(
            pb_grpc.MessagingServiceStub(ch), auth_stub, tokens, url, audit=audit_grpc.AuditServiceStub(ch)
        )


@pytest.fixture
async def team(messaging):
    return await messaging.team()

"""Real auth and messaging, once per module: the matrices make hundreds of calls against one world."""

from __future__ import annotations

import pytest
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from tests.messaging.harness import MessagingHarness, auth_service, messaging_service
from tests.support import channel


@pytest.fixture(scope="module")
async def messaging(fresh_database, keys_dir, tokens) -> MessagingHarness:
    async with (
        auth_service(fresh_database, keys_dir) as auth_address,
        channel(auth_address) as auth_channel,
        messaging_service(fresh_database, keys_dir, auth_address) as (address, url),
        channel(address) as ch,
    ):
        yield MessagingHarness(pb_grpc.MessagingServiceStub(ch), auth_grpc.AuthServiceStub(auth_channel), tokens, url)

"""An auth service on an ephemeral port with its own fresh database."""

from __future__ import annotations

import pytest
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.app import create_service
from services.auth.config import AuthConfig
from tests.auth.harness import AuthHarness
from tests.support import channel, running, service_env


@pytest.fixture
async def auth(fresh_database, keys_dir, tokens):
    url = await fresh_database("auth")
    service = await create_service(AuthConfig.load(service_env(keys_dir, auth_database_url=url)))
    async with running(service) as address, channel(address) as ch:
        yield AuthHarness(pb_grpc.AuthServiceStub(ch), url, tokens, keys_dir, audit_grpc.AuditServiceStub(ch))

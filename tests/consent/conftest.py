"""One real auth and one consent service for this folder's integration tests.

Each test makes its own practice, clients and phone numbers, so they share the
services (started once per module, which keeps the suite fast) without sharing data.
A test that needs a consent service of its own (another SMS provider, another
database role) starts one against the same auth (``auth_address``).
"""

from __future__ import annotations

import pytest
from confidant.audit.v1 import audit_service_pb2_grpc as audit_grpc
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2_grpc as pb_grpc

from tests.consent.harness import ConsentStack, People, auth_service, consent_service
from tests.support import channel


@pytest.fixture(scope="module")
async def auth_address(fresh_database, keys_dir):
    async with auth_service(fresh_database, keys_dir) as address:
        yield address


@pytest.fixture(scope="module")
async def stack(fresh_database, keys_dir, tokens, auth_address):
    async with channel(auth_address) as auth_ch:
        async with consent_service(fresh_database, keys_dir, auth_address) as (address, url), channel(address) as ch:
            yield ConsentStack(People(auth_grpc.AuthServiceStub(auth_ch), tokens), pb_grpc.ConsentServiceStub(ch), url,
                               audit=audit_grpc.AuditServiceStub(ch))

"""The five services as real processes with mutual TLS between them (certificates from files, as
mounted in production): a message goes web -> messaging -> notify and the client's email arrives;
a plaintext client and a TLS client without a certificate are refused; the plaintext health port
answers health and nothing else."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bin.stack import GRPC_SERVICES
from services.common.clients import open_channel
from tests.runtime.conftest import send_one_message, start
from tests.tls import make_ca


@pytest.fixture(scope="module")
async def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("grpc-tls"))


@pytest.fixture(scope="module")
async def tls_stack(pg, keys_dir, ca):
    running = await start(pg, keys_dir, tls=ca.tls("test-client"), health_ports=True, **ca.env("pod"))
    yield running
    codes = await asyncio.to_thread(running.stack.stop)
    assert set(codes.values()) == {0}, codes


async def check(ch: grpc.aio.Channel) -> str:
    try:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


async def test_a_message_travels_over_mutual_tls(tls_stack):
    sent = await send_one_message(tls_stack, "Jordan Lee", "jordan@client.test", "See you Tuesday.")
    assert "/m/" in sent.email["text"]
    # Every process said it serves TLS; none fell back to plain text.
    for service in GRPC_SERVICES:
        serving = [line for line in tls_stack.logs(service) if line["msg"] == "serving"]
        assert serving and serving[-1]["tls"] is True, service
    # The web edge's readiness asks each service's health over TLS.
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(tls_stack.stack.web_url + "/readyz") as resp:
        assert resp.status == 200 and await resp.text() == "ready"


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_only_clients_with_our_certificate_get_in(tls_stack, ca, service):
    address = tls_stack.stack.address(service)
    verify_only = grpc.ssl_channel_credentials(root_certificates=ca.ca_file.read_bytes())
    channels = {
        "mutual TLS": open_channel(address, tls=tls_stack.tls),
        "plaintext": grpc.aio.insecure_channel(address),
        "TLS without a client certificate": grpc.aio.secure_channel(address, verify_only),
    }
    try:
        answers = {name: await check(ch) for name, ch in channels.items()}
    finally:
        for ch in channels.values():
            await ch.close()
    assert answers == {"mutual TLS": "SERVING", "plaintext": "UNAVAILABLE",
                       "TLS without a client certificate": "UNAVAILABLE"}


# One call of each service's own API: the health port must not answer it.
API_CALLS = {
    "auth": "/confidant.auth.v1.AuthService/GetPractice",
    "messaging": "/confidant.messaging.v1.MessagingService/GetPracticeSettings",
    "consent": "/confidant.consent.v1.ConsentService/GetClientPhone",
    "notify": "/confidant.notify.v1.NotifyService/SendSmsReply",
}


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_the_health_port_answers_plaintext_health_only(tls_stack, service):
    async with grpc.aio.insecure_channel(tls_stack.stack.health_address(service)) as ch:
        assert await check(ch) == "SERVING"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(API_CALLS[service])(b"", timeout=3)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

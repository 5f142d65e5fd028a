"""gRPC TLS in-process: mutual TLS admits only certificates our CA signed; the plaintext
health port answers health and nothing else; settings are checked at start-up."""

from __future__ import annotations

import grpc
import pytest
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.clients import open_channel
from services.common.config import ConfigError, Env, GrpcTls
from services.common.server import GrpcService
from services.common.tokens import TokenVerifier
from tests.tls import make_ca

SERVICE = "confidant.notify.v1.NotifyService"
OPEN = f"/{SERVICE}/ListMailbox"


class Mailbox(pb_grpc.NotifyServiceServicer):
    async def ListMailbox(self, request, context):
        return pb.ListMailboxResponse(items=[pb.MailboxItem(to_address="ok")])


def service(**settings) -> GrpcService:
    return GrpcService(name="tls", verifier=TokenVerifier({}), open_methods=[OPEN],
                       servicers=[(pb_grpc.add_NotifyServiceServicer_to_server, Mailbox(), SERVICE)], **settings)


async def answer(ch: grpc.aio.Channel) -> str:
    try:
        reply = await pb_grpc.NotifyServiceStub(ch).ListMailbox(pb.ListMailboxRequest(), timeout=3)
        return reply.items[0].to_address
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


@pytest.fixture
def ca(tmp_path):
    return make_ca(tmp_path / "ca")


async def test_mutual_tls_admits_only_clients_with_a_certificate_from_our_ca(ca, tmp_path):
    server = service(tls=ca.tls("server"), health_listen="127.0.0.1:0")
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    rogue = make_ca(tmp_path / "rogue", "Someone else's CA").tls("intruder")
    clients = {
        "our certificate": open_channel(address, tls=ca.tls("client")),
        "plaintext": open_channel(address, tls=None),
        "TLS without a client certificate": grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=ca.ca_file.read_bytes())),
        "a certificate another CA signed": open_channel(
            address, tls=GrpcTls(rogue.cert_file, rogue.key_file, ca.ca_file, client_auth=True)),
    }
    try:
        answers = {name: await answer(ch) for name, ch in clients.items()}
        assert answers == {"our certificate": "ok", "plaintext": "UNAVAILABLE",
                           "TLS without a client certificate": "UNAVAILABLE",
                           "a certificate another CA signed": "UNAVAILABLE"}
        # The health port speaks plain text, and only health.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE),
                                                               timeout=3)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert await answer(ch) == "UNIMPLEMENTED"
    finally:
        for ch in clients.values():
            await ch.close()
        await server.stop()


async def test_tls_without_client_auth_admits_a_client_without_a_certificate(ca):
    server = service(tls=ca.tls("server", client_auth=False))
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.secure_channel(
                address, grpc.ssl_channel_credentials(root_certificates=ca.ca_file.read_bytes())) as ch:
            assert await answer(ch) == "ok"
        async with grpc.aio.insecure_channel(address) as ch:
            assert await answer(ch) == "UNAVAILABLE"
    finally:
        await server.stop()


async def test_the_process_default_applies_to_channels_opened_without_tls(ca):
    from services.common import clients

    server = service(tls=ca.tls("server"))
    port = await server.start("127.0.0.1:0")
    clients.use_tls_by_default(ca.tls("client"))
    try:
        ch = open_channel(f"127.0.0.1:{port}")
        assert await answer(ch) == "ok"
        await ch.close()
    finally:
        clients.use_tls_by_default(None)
        await server.stop()


def test_tls_settings_are_checked(ca):
    cert, key = ca.leaf("svc")
    full = {"CONFIDANT_GRPC_TLS_CERT_FILE": str(cert), "CONFIDANT_GRPC_TLS_KEY_FILE": str(key),
            "CONFIDANT_GRPC_TLS_CA_FILE": str(ca.ca_file)}
    assert GrpcTls.load(Env({})) is None
    loaded = GrpcTls.load(Env({**full, "CONFIDANT_GRPC_TLS_CLIENT_AUTH": "required"}))
    assert loaded == GrpcTls(cert, key, ca.ca_file, client_auth=True)
    assert not GrpcTls.load(Env(full)).client_auth
    without_key = {k: v for k, v in full.items() if "KEY" not in k}
    with pytest.raises(ConfigError, match="go together, and CONFIDANT_GRPC_TLS_KEY_FILE is not set"):
        GrpcTls.load(Env(without_key))
    with pytest.raises(ConfigError, match="CONFIDANT_GRPC_TLS_CA_FILE points at /nowhere/ca.crt, which does not exist"):
        GrpcTls.load(Env({**full, "CONFIDANT_GRPC_TLS_CA_FILE": "/nowhere/ca.crt"}))
    with pytest.raises(ConfigError, match="none or required"):
        GrpcTls.load(Env({**full, "CONFIDANT_GRPC_TLS_CLIENT_AUTH": "optional"}))
    with pytest.raises(ConfigError, match="CLIENT_AUTH=required needs"):
        GrpcTls.load(Env({"CONFIDANT_GRPC_TLS_CLIENT_AUTH": "required"}))

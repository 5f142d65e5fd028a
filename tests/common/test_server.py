"""The shared gRPC bootstrap: deadlines, tokens, error mapping, health, reflection."""

from __future__ import annotations

import grpc
import pytest
from confidant.notify.v1 import notify_service_pb2 as pb
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.errors import NotFound
from services.common.identity import caller
from services.common.server import GrpcService
from services.common.tokens import TokenVerifier
from tests.support import channel, running


class EchoCaller(pb_grpc.NotifyServiceServicer):
    """Answers ListMailbox with the caller's subject; SendSmsReply raises a domain error."""

    async def ListMailbox(self, request, context):
        return pb.ListMailboxResponse(items=[pb.MailboxItem(to_address=caller().subject)])

    async def SendSmsReply(self, request, context):
        raise NotFound("No such number.")

    async def EnqueueMessageNotifications(self, request, context):
        raise RuntimeError("boom")


@pytest.fixture
async def address(keys_dir):
    service = GrpcService(
        name="test",
        verifier=TokenVerifier.from_keys_dir(keys_dir),
        servicers=[(pb_grpc.add_NotifyServiceServicer_to_server, EchoCaller(), "confidant.notify.v1.NotifyService")],
    )
    async with running(service) as addr:
        yield addr


async def test_caller_identity_reaches_the_handler(address, tokens):
    async with channel(address) as ch:
        stub = pb_grpc.NotifyServiceStub(ch)
        reply = await stub.ListMailbox(pb.ListMailboxRequest(), metadata=tokens.metadata(tokens.service("web")), timeout=5)
        assert reply.items[0].to_address == "service:web"


async def test_call_without_deadline_is_refused(address, tokens):
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.NotifyServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListMailbox(pb.ListMailboxRequest(), metadata=tokens.metadata(tokens.service("web")))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "deadline" in err.value.details()


async def test_missing_and_forged_tokens_are_unauthenticated(address, tokens, tmp_path):
    from services.common.tokens import TokenSigner, generate_key_pair

    generate_key_pair(tmp_path, "auth")
    forged = TokenSigner.from_keys_dir(tmp_path, "auth").service_token()[0]
    async with channel(address) as ch:
        stub = pb_grpc.NotifyServiceStub(ch)
        for metadata in ((), tokens.metadata(forged), tokens.metadata("not-a-jwt")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListMailbox(pb.ListMailboxRequest(), metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_domain_errors_map_to_status_codes(address, tokens):
    async with channel(address) as ch:
        stub = pb_grpc.NotifyServiceStub(ch)
        md = tokens.metadata(tokens.service("web"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendSmsReply(pb.SendSmsReplyRequest(), metadata=md, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "No such number."
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EnqueueMessageNotifications(pb.EnqueueMessageNotificationsRequest(), metadata=md, timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "boom" not in err.value.details()


async def test_health_and_reflection_answer_without_a_token(address):
    async with grpc.aio.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="confidant.notify.v1.NotifyService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        names = []
        async for resp in refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5):
            names = [s.name for s in resp.list_services_response.service]
        assert "confidant.notify.v1.NotifyService" in names


async def test_a_caller_rides_over_a_peer_that_starts_after_it(keys_dir, tokens):
    """A service that called a peer before it was up must not keep failing once it is up."""
    from services.common.clients import open_channel
    from services.common.pgserver import free_port

    port = free_port()
    ch = open_channel(f"127.0.0.1:{port}", token=lambda: tokens.service("web"))
    try:
        stub = pb_grpc.NotifyServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListMailbox(pb.ListMailboxRequest(), timeout=3)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        # The channel is now between reconnection attempts; the peer comes up.
        service = GrpcService(
            name="late",
            verifier=TokenVerifier.from_keys_dir(keys_dir),
            servicers=[(pb_grpc.add_NotifyServiceServicer_to_server, EchoCaller(), "confidant.notify.v1.NotifyService")],
        )
        await service.start(f"127.0.0.1:{port}")
        try:
            reply = await stub.ListMailbox(pb.ListMailboxRequest(), timeout=5)
            assert reply.items[0].to_address == "service:web"
        finally:
            await service.stop()
    finally:
        await ch.close()

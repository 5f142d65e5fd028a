"""Every service as a real process: health, reflection, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bin.stack import GRPC_SERVICES

FULL_NAMES = {
    "auth": "confidant.auth.v1.AuthService",
    "messaging": "confidant.messaging.v1.MessagingService",
    "consent": "confidant.consent.v1.ConsentService",
    "notify": "confidant.notify.v1.NotifyService",
}
GRACE_SECONDS = 10.0


async def test_health_and_reflection_answer_on_every_service(stack):
    for service in GRPC_SERVICES:
        async with grpc.aio.insecure_channel(stack.address(service)) as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=FULL_NAMES[service]), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
            names: list[str] = []
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for resp in reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([request]), timeout=5):
                names = [s.name for s in resp.list_services_response.service]
            assert FULL_NAMES[service] in names, (service, names)


async def test_sigterm_stops_every_service_within_its_grace_period(stack):
    started = time.monotonic()
    for proc in stack.processes.values():
        proc.send_signal(signal.SIGTERM)
    for service, proc in list(stack.processes.items()):
        try:
            code = await asyncio.to_thread(proc.wait, GRACE_SECONDS + 2)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{service} did not stop within its grace period") from None
        assert code == 0, f"{service} exited with {code}"
    assert time.monotonic() - started < GRACE_SECONDS + 2

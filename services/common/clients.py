"""Outgoing gRPC channels: every call gets a deadline and an access token.

A client interceptor adds a default deadline to calls made without one and the
caller's service token unless the call already carries ``authorization``
metadata (the web edge forwards the signed-in person's token that way).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc

DEFAULT_DEADLINE_SECONDS = 5.0

# A channel whose peer was down (a service starting after its callers, a restart)
# waits between reconnection attempts, and calls made meanwhile fail at once with
# UNAVAILABLE. Short reconnect backoff plus retries of UNAVAILABLE (the call never
# reached the peer, or the peer said "try again"; every mutating RPC is idempotent
# by key or dedupe) ride over that window within the call's deadline.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _with_defaults(details: grpc.aio.ClientCallDetails, token: Callable[[], str] | None, deadline: float):
    metadata = list(details.metadata or [])
    if token is not None and not any(key == "authorization" for key, _ in metadata):
        metadata.append(("authorization", f"Bearer {token()}"))
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout if details.timeout is not None else deadline,
        metadata=grpc.aio.Metadata(*metadata),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token, deadline):
        self._token, self._deadline = token, deadline

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_defaults(client_call_details, self._token, self._deadline), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token):
        self._token = token

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        # Streams are long-lived: the caller sets their deadline; only the token is added.
        details = client_call_details
        metadata = list(details.metadata or [])
        if self._token is not None and not any(key == "authorization" for key, _ in metadata):
            metadata.append(("authorization", f"Bearer {self._token()}"))
        details = grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )
        return await continuation(details, request)


def open_channel(
    target: str,
    token: Callable[[], str] | None = None,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
) -> grpc.aio.Channel:
    """An insecure channel to one of our services (TLS arrives with the operators' issue)."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=[_UnaryUnary(token, deadline), _UnaryStream(token)],
        options=_CHANNEL_OPTIONS,
    )


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Metadata that makes a call on behalf of the holder of ``token``."""
    return (("authorization", f"Bearer {token}"),)

"""Outgoing gRPC channels: every call gets a deadline, an access token and the request id.

A client interceptor adds a default deadline to calls made without one and the
caller's service token unless the call already carries ``authorization``
metadata (the web edge forwards the signed-in person's token that way). The
current request id (services/common/logs.py) travels as ``x-request-id``.

Channels speak TLS when the process was configured for it: ``run_service`` calls
``use_tls_by_default`` with the service's ``CONFIDANT_GRPC_TLS_*`` settings before
the service opens any channel, so every ``open_channel`` in the apps picks it up;
a caller (the web edge, a test) may pass ``tls`` explicitly instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc

from services.common.config import GrpcTls
from services.common.logs import REQUEST_ID_METADATA, current_request_id

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


# The process-wide TLS settings of outgoing channels (None: plaintext); see use_tls_by_default.
_default_tls: GrpcTls | None = None
# open_channel's default for ``tls``: whatever the process was configured with.
PROCESS_DEFAULT = object()


def use_tls_by_default(tls: GrpcTls | None) -> None:
    """Make every channel opened later without an explicit ``tls`` use these settings."""
    global _default_tls
    _default_tls = tls


def channel_credentials(tls: GrpcTls) -> grpc.ChannelCredentials:
    """Verify the server against the CA; present our certificate (mutual TLS needs it)."""
    cert, key, ca = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _metadata(details: grpc.aio.ClientCallDetails, token: Callable[[], str] | None) -> grpc.aio.Metadata:
    metadata = list(details.metadata or [])
    keys = {key for key, _ in metadata}
    if token is not None and "authorization" not in keys:
        metadata.append(("authorization", f"Bearer {token()}"))
    request_id = current_request_id()
    if request_id is not None and REQUEST_ID_METADATA not in keys:
        metadata.append((REQUEST_ID_METADATA, request_id))
    return grpc.aio.Metadata(*metadata)


def _with_defaults(details: grpc.aio.ClientCallDetails, token: Callable[[], str] | None, deadline: float | None):
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout if details.timeout is not None else deadline,
        metadata=_metadata(details, token),
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
        # Streams are long-lived: the caller sets their deadline; only the token and request id are added.
        return await continuation(_with_defaults(client_call_details, self._token, None), request)


def open_channel(
    target: str,
    token: Callable[[], str] | None = None,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
    tls: GrpcTls | None | object = PROCESS_DEFAULT,
) -> grpc.aio.Channel:
    """A channel to one of our services: TLS per ``tls`` (by default the process's settings)."""
    settings = _default_tls if tls is PROCESS_DEFAULT else tls
    interceptors = [_UnaryUnary(token, deadline), _UnaryStream(token)]
    if settings is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors, options=_CHANNEL_OPTIONS)
    assert isinstance(settings, GrpcTls)
    return grpc.aio.secure_channel(target, channel_credentials(settings), interceptors=interceptors,
                                   options=_CHANNEL_OPTIONS)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Metadata that makes a call on behalf of the holder of ``token``."""
    return (("authorization", f"Bearer {token}"),)

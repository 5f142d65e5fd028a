"""Errors the edge raises itself, and how gRPC status codes become HTTP statuses."""

from __future__ import annotations

import grpc

GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}

# The services' messages for these codes are written for people (services.common.errors); others are not.
_READABLE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

FALLBACK_MESSAGES = {
    400: "The request is not valid.",
    401: "Please sign in.",
    403: "You are not allowed to do this.",
    404: "This was not found.",
    409: "This cannot be done right now.",
    429: "Too many attempts. Please wait a little and try again.",
    503: "The service is temporarily unavailable. Please try again in a moment.",
    500: "Something went wrong on our side. Please try again.",
}


# The error page's heading for each status.
ERROR_HEADINGS = {
    400: "Something in the request is not right",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "That cannot be done right now",
    429: "Too many attempts",
    503: "Temporarily unavailable",
}
DEFAULT_HEADING = "Something went wrong"


class HttpError(Exception):
    """An HTTP error with a message for people; the error middleware renders it (JSON or page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def http_status(code: grpc.StatusCode) -> int:
    return GRPC_TO_HTTP.get(code, 500)


def readable_message(code: grpc.StatusCode, details: str | None) -> str:
    status = http_status(code)
    if code in _READABLE and details:
        return details
    return FALLBACK_MESSAGES.get(status, FALLBACK_MESSAGES[500])


def from_rpc_error(exc: grpc.aio.AioRpcError) -> HttpError:
    return HttpError(http_status(exc.code()), readable_message(exc.code(), exc.details()))

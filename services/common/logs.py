"""JSON logs, one object per line, without PHI.

Log calls pass identifiers (ids, counts, codes) in ``extra={"fields": {...}}``;
never message text, names, emails or phone numbers.

Every line written while a request is being handled carries its ``request_id``:
the web edge makes one per HTTP request (or accepts a trusted proxy's), the gRPC
interceptor takes it from the ``x-request-id`` metadata (or makes one), and
outgoing channels forward it, so one request can be followed across services.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid

REQUEST_ID_METADATA = "x-request-id"
# Ids we accept from outside (a proxy, a caller): short and harmless in a log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("confidant_request_id", default=None)


def valid_request_id(value: str | None) -> bool:
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str) -> contextvars.Token:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party request logs may carry URLs with tokens; keep them quiet.
    for noisy in ("aiohttp.access", "botocore", "urllib3", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""One request's id in every log line it caused: the web edge's and those of the services it
called (forwarded as x-request-id metadata); and, with PHI canaries in that traffic, none in
any process's log."""

from __future__ import annotations

import pytest

from bin.stack import ALL_SERVICES
from tests.runtime.conftest import CANARIES


def test_the_send_request_id_is_in_the_web_and_messaging_logs(observed):
    request_id = observed.sent.request_id
    assert len(request_id) == 32
    running = observed.running
    web = [line for line in running.logs("web") if line.get("request_id") == request_id]
    assert [line["route"] for line in web if line["msg"] == "http"] == ["/api/conversations/{conversation_id}/messages"]
    messaging = [line for line in running.logs("messaging") if line.get("request_id") == request_id]
    assert any(line["msg"] == "rpc" and line["method"].endswith("/SendMessage") for line in messaging)
    # The id belongs to that request alone: no other request's lines carry it.
    for service in ("auth", "consent", "notify"):
        lines = [line for line in running.logs(service) if line.get("request_id") == request_id]
        assert all(line["msg"] == "rpc" for line in lines), (service, lines)
    others = {line.get("request_id") for line in running.logs("web") if line["msg"] == "http"}
    assert len(others) == len([line for line in running.logs("web") if line["msg"] == "http"])


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_no_canary_in_any_log_line(observed, service):
    text = "\n".join(observed.running.lines[service]).lower()
    assert text, f"{service} logged nothing"
    for canary in CANARIES:
        assert canary.lower() not in text, (service, canary)

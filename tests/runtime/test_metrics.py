"""Each process's metrics endpoint, scraped after real traffic that carried PHI canaries (a client's
name and email, a message body): the expected series are there with non-zero counts, labelled by
method and route pattern only, and no canary (nor an id) appears anywhere in them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bin.stack import ALL_SERVICES, GRPC_SERVICES
from tests.runtime.conftest import CANARIES

REPO = Path(__file__).resolve().parents[2]
SEND = "/confidant.messaging.v1.MessagingService/SendMessage"


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


@pytest.mark.parametrize("service", ALL_SERVICES)
async def test_no_canary_and_no_id_in_any_metrics_endpoint(observed, service):
    text = await scrape(observed.metrics_ports[service])
    for canary in CANARIES:
        assert canary.lower() not in text.lower(), (service, canary)
    assert observed.sent.conversation_id not in text


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_each_grpc_service_counts_its_calls_and_its_pool(observed, service):
    found = samples(await scrape(observed.metrics_ports[service]))
    prefix = f"confidant_{service}_"
    assert total(found, prefix + "grpc_requests_total", code="OK") > 0
    assert total(found, prefix + "grpc_request_seconds_count") > 0
    assert (prefix + "grpc_errors_total", frozenset()) not in found  # labelled by method only
    assert total(found, prefix + "db_pool_max") > 0 and total(found, prefix + "db_pool_size") > 0
    assert (prefix + "db_pool_available", frozenset()) in found and (prefix + "db_pool_waiting", frozenset()) in found
    methods = {dict(ls).get("method") for (n, ls) in found if n == prefix + "grpc_requests_total"}
    assert methods and all(m.startswith("/confidant.") for m in methods), methods
    if service == "messaging":
        assert total(found, prefix + "grpc_requests_total", method=SEND, code="OK") == 1


async def test_notify_exports_its_queue_and_attempts(observed):
    found = samples(await scrape(observed.metrics_ports["notify"]))
    # The portal invitation and the first alert went as one email (notify's invitation hold).
    assert total(found, "confidant_notify_attempts_total", channel="email", outcome="sent") >= 1
    assert ("confidant_notify_queue_depth", frozenset()) in found


async def test_the_web_edge_counts_requests_by_route_pattern_and_status(observed):
    found = samples(await scrape(observed.metrics_ports["web"]))
    name = "confidant_web_http_requests_total"
    send = total(found, name, method="POST", route="/api/conversations/{conversation_id}/messages")
    assert send == 1
    assert total(found, name, method="POST", route="/sign-in", status="303") == 1
    assert total(found, "confidant_web_http_request_seconds_count", route="/dev/mailbox.json") >= 1
    routes = {dict(ls)["route"] for (n, ls) in found if n == name}
    assert all(r.startswith("/") or r == "(unmatched)" for r in routes), routes

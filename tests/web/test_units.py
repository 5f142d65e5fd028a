"""Pure pieces of the web edge: redirects, error mapping, escaping, CSRF, config, events."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb

from services.common.config import ConfigError, Env
from services.web import templates
from services.web.config import WebConfig
from services.web.errors import http_status, readable_message
from services.web.events import format_event, resume_point
from services.web.middlewares import error_middleware, same_origin
from services.web.resources import CONFIG
from services.web.session import BACKGROUND_HEADER, is_background, is_safe_next
from tests.runtime.production import production_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "value, safe",
    [
        ("/", True),
        ("/portal/conversations/3f1c", True),
        ("/?tab=messages", True),
        ("", False),
        (None, False),
        ("https://evil.example/", False),
        ("//evil.example/", False),
        ("/\\evil.example", False),
        ("\\\\evil.example", False),
        ("/\t/evil.example", False),
        ("javascript:alert(1)", False),
        ("portal", False),
    ],
)
def test_only_local_paths_are_safe_redirects(value, safe):
    assert is_safe_next(value) is safe


@pytest.mark.parametrize(
    "code, status",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.FAILED_PRECONDITION, 409),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
    ],
)
def test_grpc_status_maps_to_http(code, status):
    assert http_status(code) == status


def test_only_messages_written_for_people_are_shown():
    assert readable_message(grpc.StatusCode.NOT_FOUND, "No such conversation.") == "No such conversation."
    # Transport details and internal errors are replaced by a plain sentence.
    assert readable_message(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; ipv4:127.0.0.1:9") == (
        "The service is temporarily unavailable. Please try again in a moment."
    )
    assert "went wrong" in readable_message(grpc.StatusCode.INTERNAL, "Traceback ...")
    assert readable_message(grpc.StatusCode.INVALID_ARGUMENT, "") == "The request is not valid."


def test_templates_escape_every_value():
    out = templates.render("<p title=\"$t\">$b</p>", t='"><script>x</script>', b="<img src=x onerror=alert(1)>")
    assert "<script>" not in out and "<img" not in out
    assert "&quot;&gt;&lt;script&gt;" in out
    # Rendered fragments compose without being escaped twice.
    outer = templates.render("<div>$inner</div>", inner=templates.render("<b>$x</b>", x="a&b"))
    assert outer == "<div><b>a&amp;b</b></div>"
    page = templates.sign_in_page(portal=True, next_path='/x"><script>', error="<b>", email="a@b.c<")
    assert '/x&quot;&gt;&lt;script&gt;' in page and "&lt;b&gt;" in page and "a@b.c&lt;" in page
    message = templates.message_item(message_id="m", seq=1, sender="<Eve>", body="</li><script>", created_at=None,
                                     mine=False)
    assert "&lt;Eve&gt;" in message and "&lt;/li&gt;&lt;script&gt;" in message


def test_mailbox_links_are_clickable_and_nothing_else_is_html():
    out = templates.linkify('Read it: https://x.test/m/abc_D-9. <b>hi</b> javascript:alert(1)')
    assert '<a href="https://x.test/m/abc_D-9">https://x.test/m/abc_D-9</a>.' in out
    assert "&lt;b&gt;hi&lt;/b&gt;" in out and 'href="javascript' not in out


def test_staff_page_has_the_named_controls():
    page = templates.staff_home(practice="Lakeside <Counseling>", person_name="Dana", user_id="u1", unread=True,
                                max_length=5000)
    assert ">Secure Messages</button>" in page
    assert 'role="status" aria-label="New unread messages" >' in page  # shown: not hidden
    for words in ("New Message", 'aria-label="Search"', 'type="search"', "Enable Secure Messaging",
                  "0 / 5000", ">Send</button>", "No conversations yet. Start one with New Message.", "Recent"):
        assert words in page, words
    assert "Lakeside &lt;Counseling&gt;" in page
    hidden = templates.staff_home(practice="P", person_name="D", user_id="u1", unread=False, max_length=5000)
    assert 'aria-label="New unread messages" hidden' in hidden
    assert 'name="viewport"' in hidden and '<script src="/static/app.js" defer></script>' in hidden


def _request(headers: dict[str, str], host: str = "127.0.0.1:8080"):
    return make_mocked_request("POST", "/api/conversations", headers={"Host": host, **headers})


@pytest.mark.parametrize(
    "headers, allowed",
    [
        ({"Origin": "http://127.0.0.1:8080"}, True),
        ({"Origin": "http://127.0.0.1:9090"}, False),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({}, False),
        ({"Referer": "http://127.0.0.1:8080/sign-in?next=/"}, True),
        ({"Referer": "http://evil.example/127.0.0.1:8080"}, False),
        ({"Origin": "http://127.0.0.1:8080.evil.example"}, False),
        # Where a browser sends Origin: null, Sec-Fetch-Site vouches for same-origin posts.
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, True),
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, False),
        ({"Origin": "null", "Sec-Fetch-Site": "same-site"}, False),
        ({"Sec-Fetch-Site": "none"}, False),
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, False),
    ],
)
def test_same_origin(headers, allowed):
    assert same_origin(_request(headers), "http://127.0.0.1:8080") is allowed


def test_same_origin_behind_a_tls_proxy():
    # The proxy forwards Host without a port; the browser's Origin is the public https URL.
    request = _request({"Origin": "https://confidant.example"}, host="confidant.example")
    assert same_origin(request, "https://confidant.example")
    request = _request({"Origin": "https://confidant.example"}, host="internal:8080")
    assert same_origin(request, "https://confidant.example")
    assert not same_origin(_request({"Origin": "https://other.example"}, host="internal:8080"),
                           "https://confidant.example")


def test_config_defaults_and_validation(tmp_path):
    config = WebConfig.load(Env({}))
    assert config.listen == "127.0.0.1:8080" and config.host_port == ("127.0.0.1", 8080)
    assert config.session_cookie_name == "confidant_session" and not config.secure_cookies
    assert config.targets["auth"] == "127.0.0.1:50051"
    assert WebConfig.load(production_env(tmp_path)).secure_cookies
    with pytest.raises(ConfigError, match="WEB_LISTEN"):
        WebConfig.load(Env({"CONFIDANT_WEB_LISTEN": "8080"}))
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        WebConfig.load(Env({"CONFIDANT_PUBLIC_URL": "ftp://x"}))
    with pytest.raises(ConfigError, match="MODE"):
        WebConfig.load(Env({"CONFIDANT_MODE": "staging"}))


def test_events_are_formatted_with_ids():
    event = msg_pb.StreamEventsResponse(event_id=42, kind=msg_pb.EVENT_KIND_MESSAGE_CREATED, conversation_id="c1",
                                        seq=3, actor_id="u2")
    text = format_event(event).decode()
    assert text.startswith("id: 42\nevent: message_created\ndata: {")
    assert text.endswith("}\n\n") and '"seq": 3' in text
    assert resume_point(make_mocked_request("GET", "/api/events", headers={"Last-Event-ID": "17"})) == 17
    assert resume_point(make_mocked_request("GET", "/api/events", headers={"Last-Event-ID": "junk"})) == 0
    assert resume_point(make_mocked_request("GET", "/api/events")) == 0


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


async def test_error_middleware_answers_json_for_the_api_and_html_for_pages():
    app = web.Application()
    app[CONFIG] = WebConfig.load(Env({}))

    async def refuses(request):
        raise _rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "Secure messaging is not enabled for this client.")

    for path in ("/api/conversations", "/portal"):
        request = make_mocked_request("GET", path, app=app)
        response = await error_middleware(request, refuses)
        assert response.status == 409
        if path.startswith("/api"):
            assert response.content_type == "application/json"
            assert response.text == '{"error": "Secure messaging is not enabled for this client."}'
        else:
            assert response.content_type == "text/html"
            assert "Secure messaging is not enabled for this client." in response.text


def test_a_port_in_use_is_one_clear_sentence(keys_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDANT_")}
        env.update({"CONFIDANT_KEYS_DIR": str(keys_dir), "CONFIDANT_WEB_LISTEN": f"127.0.0.1:{port}"})
        done = subprocess.run([sys.executable, "-m", "services.web"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=30)
    assert done.returncode == 1
    assert f"web: cannot listen on 127.0.0.1:{port}: the address is already in use." in done.stderr
    assert "Traceback" not in done.stderr


def test_background_requests_are_not_activity():
    """The event stream and the page's automatic refreshes must not keep an idle session alive."""
    assert is_background(make_mocked_request("GET", "/api/events"))
    assert is_background(make_mocked_request("GET", "/api/unread", headers={BACKGROUND_HEADER: "1"}))
    assert not is_background(make_mocked_request("GET", "/api/unread"))
    assert not is_background(make_mocked_request("POST", "/api/conversations/x/messages"))

"""Pure pieces of the web edge: redirects, error mapping, templates and escaping, CSRF, config, events."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc
import jinja2
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from markupsafe import Markup

from services.common.config import ConfigError, Env
from services.web.config import WebConfig
from services.web.errors import http_status, readable_message
from services.web.events import format_event, resume_point
from services.web.middlewares import error_middleware, same_origin
from services.web.rendering import StaffChrome, escape_text, linkify, render, setup_templates
from services.web.resources import CONFIG, PracticeProfile
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


def _app() -> web.Application:
    app = web.Application()
    app[CONFIG] = WebConfig.load(Env({}))
    setup_templates(app)
    return app


def _page(template: str, **context) -> str:
    """A template rendered as the edge renders it (the app factory's environment)."""
    return render(make_mocked_request("GET", "/", app=_app()), template, context).text


def _chrome(**changes) -> StaffChrome:
    values = {"practice": "Lakeside Counseling", "person_name": "Dana Rivera", "user_id": "u1", "unread": False,
              "owner": False, "max_length": 5000,
              "profile": PracticeProfile("p1", "Lakeside Counseling", "America/New_York")}
    return StaffChrome(**{**values, **changes})


def test_every_template_compiles():
    env = setup_templates(web.Application())
    names = env.list_templates(extensions=["html"])
    assert "base.html" in names and "error.html" in names and len(names) > 20
    for name in names:
        env.get_template(name)


def test_values_are_escaped_and_markup_made_here_is_not():
    assert escape_text('"><script>x</script>') == "&quot;&gt;&lt;script&gt;x&lt;/script&gt;"
    assert escape_text("it's") == "it&#x27;s"
    assert escape_text(None) == "" and escape_text(3) == "3"
    assert escape_text(Markup("<b>made here</b>")) == "<b>made here</b>"
    env = setup_templates(web.Application())
    shown = env.from_string("{{ t|time_element }}|{{ t|time_element('table') }}")
    assert shown.render(t=None, time_zone="America/New_York") == "|"
    # In the practice's zone (the page's chrome, or a time_zone the view passes), never UTC's.
    assert shown.render(t=datetime(2025, 11, 27, 9, 5, tzinfo=UTC), time_zone="America/New_York") == (
        '<time datetime="2025-11-27T09:05:00+00:00" title="Thursday, November 27, 2025, 4:05 AM EST">'
        'Nov 27, 2025</time>|<time datetime="2025-11-27T09:05:00+00:00" title="Thursday, November 27, 2025, '
        '4:05 AM EST" data-style="table">Nov 27, 2025, 4:05 AM</time>')


def test_templates_escape_user_text_in_text_and_attributes():
    page = _page("account/sign_in.html", portal=True, next_path='/x"><script>', error="<b>", email='a@b.c<"',
                 notice="")
    assert 'value="/x&quot;&gt;&lt;script&gt;"' in page and "&lt;b&gt;" in page and 'value="a@b.c&lt;&quot;"' in page
    assert "<script>" not in page.replace('<script src="', "")
    thread = _page("portal/thread.html", chrome={"user_id": "u1", "unread": False, "practice": "Lakeside",
                                                      "time_zone": "America/New_York"}, title="Secure Messages",
                   conversation_id='c"1', thread_title="<Eve>", can_send=True, max_length=1000,
                   idempotency_key="k", messages=[{"message_id": "m", "seq": 1, "sender": "<Eve>",
                                                   "body": "</li><script>", "created_at": None, "mine": False}])
    assert "<h1>&lt;Eve&gt;</h1>" in thread and '<span class="sender">&lt;Eve&gt;</span>' in thread
    assert '<p class="body">&lt;/li&gt;&lt;script&gt;</p>' in thread
    assert 'data-conversation-id="c&quot;1"' in thread and 'action="/portal/conversations/c&quot;1/messages"' in thread
    clients = _page("staff/clients.html", chrome=_chrome(person_name='"><img src=x onerror=alert(1)>'),
                    title="Clients", error="", notice="", max_name=200, max_email=254, max_query=100,
                    form={"display_name": "Eve \"<script>", "email": ""}, query='"><script>alert(1)</script>',
                    found="No clients match “<script>”.", clients=[], next_token="")
    assert "<img" not in clients and "<script>alert" not in clients
    assert 'value="Eve &quot;&lt;script&gt;"' in clients
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in clients
    assert "No clients match “&lt;script&gt;”." in clients


def test_mailbox_links_are_clickable_and_nothing_else_is_html():
    out = linkify('Read it: https://x.test/m/abc_D-9. <b>hi</b> javascript:alert(1)')
    assert '<a href="https://x.test/m/abc_D-9">https://x.test/m/abc_D-9</a>.' in out
    assert "&lt;b&gt;hi&lt;/b&gt;" in out and 'href="javascript' not in out
    page = _page("dev/mailbox.html", notice="", texts=[], emails=[
        {"to": "a@b.test", "subject": "<i>s</i>", "created": None, "text": "Open https://x.test/m/t <b>"}])
    assert '<a href="https://x.test/m/t">https://x.test/m/t</a> &lt;b&gt;' in page and "&lt;i&gt;s&lt;/i&gt;" in page


def test_staff_page_has_the_named_controls():
    page = _page("staff/home.html", chrome=_chrome(practice="Lakeside <Counseling>", unread=True))
    assert ">Secure Messages</button>" in page
    assert 'role="status" aria-label="New unread messages" >' in page  # shown: not hidden
    for words in ("New Message", 'aria-label="Search"', 'type="search"', "Enable Secure Messaging",
                  "0 / 5000", ">Send</button>", "No conversations yet. Start one with New Message.", "Recent"):
        assert words in page, words
    assert "Lakeside &lt;Counseling&gt;" in page and "<title>Lakeside &lt;Counseling&gt; — Confidant</title>" in page
    hidden = _page("staff/home.html", chrome=_chrome())
    assert 'aria-label="New unread messages" hidden' in hidden
    assert '<body data-page="staff" data-user-id="u1" data-time-zone="America/New_York">' in hidden
    # Scripts load in order, deferred; only the owner's links name Team, Settings and the Audit trail.
    scripts = [f'<script src="/static/js/{name}.js" defer></script>' for name in ("core", "messages", "pages")]
    assert 'name="viewport"' in hidden and all(tag in hidden for tag in scripts)
    assert hidden.index(scripts[0]) < hidden.index(scripts[1]) < hidden.index(scripts[2])
    assert "/account/team" not in hidden and "/account/audit" not in hidden
    owner = _page("staff/home.html", chrome=_chrome(owner=True))
    assert 'href="/account/team">Team</a>' in owner and 'href="/account/audit">Audit trail</a>' in owner


def test_a_missing_template_value_is_an_error():
    with pytest.raises(jinja2.UndefinedError, match="chrome"):
        _page("staff/home.html")


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
    app = _app()

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
            # Nobody is signed in here: the plain layout, no top bar, the portal's start page.
            assert '<header class="topbar">' not in response.text and 'href="/portal"' in response.text


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

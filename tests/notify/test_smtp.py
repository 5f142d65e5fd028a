"""Email through a practice's own mail server: aiosmtpd over STARTTLS (and implicit TLS), with a
certificate from a test CA that notify is told to trust, and SMTP authentication."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from confidant.notify.v1 import notify_service_pb2_grpc as pb_grpc

from services.common.pgserver import free_port
from tests.notify.conftest import notify_config, notify_service
from tests.support import channel
from tests.tls import local_ca

PRACTICE = "Lakeside Counseling"
FROM = "alerts@lakeside.test"
USER, PASSWORD = "confidant", "relay-secret-2026"


@dataclass
class Inbox:
    """The mail server's side: what it accepted, and addresses it refuses with a 550."""

    messages: list = field(default_factory=list)
    refuse: set = field(default_factory=set)
    logins: list = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({"rcpt": list(envelope.rcpt_tos), "tls": session.ssl is not None,
                              "message": message_from_bytes(envelope.content, policy=policy.default)})
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            USER.encode(), PASSWORD.encode())
        self.logins.append((ok, session.ssl is not None))
        return AuthResult(success=ok)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return local_ca(tmp_path_factory.mktemp("ca"))


@contextlib.contextmanager
def mail_server(ca, implicit_tls: bool = False):
    inbox = Inbox()
    tls = {"ssl_context": ca.server_context()} if implicit_tls else {
        "tls_context": ca.server_context(), "require_starttls": True}
    # (aiosmtpd does not count implicit TLS as TLS for AUTH: the whole connection is TLS there.)
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), authenticator=inbox.authenticate,
                            auth_require_tls=not implicit_tls, auth_required=True, **tls)
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def smtp_notify(stack, fresh_database, keys_dir, port: int, **settings):
    url = await fresh_database("notify")
    config = notify_config(
        keys_dir, url, stack.auth_address, stack.consent_address,
        notify_email_transport="smtp", notify_sms_transport="none", notify_email_from=FROM,
        notify_smtp_host="127.0.0.1", notify_smtp_port=str(port), notify_smtp_username=USER,
        notify_smtp_password=PASSWORD, notify_poll_interval_seconds="0.05", notify_retry_base_seconds="0.05",
        notify_retry_max_seconds="0.2", notify_send_timeout_seconds="3", notify_claim_lease_seconds="10",
        **settings,
    )
    async with notify_service(config) as address, channel(address) as ch:
        yield stack.on(pb_grpc.NotifyServiceStub(ch), url)


async def alert_a_client(stack, notify):
    practice = await stack.people.practice(PRACTICE)
    client = await stack.people.user(practice, name="Jordan Lee")
    await notify.alert(practice.practice.practice_id, str(uuid.uuid4()), [(client.user_id, True)])
    return client


async def test_an_email_goes_to_the_mail_server_over_starttls(stack, fresh_database, keys_dir, ca):
    with mail_server(ca) as (inbox, port):
        async with smtp_notify(stack, fresh_database, keys_dir, port, notify_smtp_ca_file=str(ca.ca_file)) as notify:
            client = await alert_a_client(stack, notify)
            jobs = await notify.settled(client.user_id)
            assert ("message_email", "sent", "") in jobs
            # This deployment sends no texts: the text job says so.
            assert ("message_sms", "skipped", "texts are not sent by this deployment") in jobs
            job = await notify.job(client.user_id)
    (received,) = inbox.messages
    assert received["tls"] and received["rcpt"] == [client.email]
    assert inbox.logins == [(True, True)]  # authenticated, and only inside TLS
    message = received["message"]
    assert message["From"] == f"{PRACTICE} <{FROM}>"
    assert (message["To"], message["Subject"]) == (client.email, "You have a new secure message")
    assert (job["transport"], job["provider_message_id"]) == ("smtp", message["Message-ID"].strip("<>"))
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert text.startswith(f"{PRACTICE} sent you a secure message.") and "/m/" in text
    assert 'href="https://confidant.example.test/m/' in html
    assert "Jordan" not in text + html


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_implicit_tls_works_too(stack, fresh_database, keys_dir, ca):
    with mail_server(ca, implicit_tls=True) as (inbox, port):
        async with smtp_notify(stack, fresh_database, keys_dir, port, notify_smtp_ca_file=str(ca.ca_file),
                               notify_smtp_security="tls") as notify:
            client = await alert_a_client(stack, notify)
            assert ("message_email", "sent", "") in await notify.settled(client.user_id)
    assert [m["rcpt"] for m in inbox.messages] == [[client.email]]
    assert [ok for ok, _ in inbox.logins] == [True]


async def test_a_5xx_from_the_mail_server_fails_the_email_at_once(stack, fresh_database, keys_dir, ca):
    with mail_server(ca) as (inbox, port):
        async with smtp_notify(stack, fresh_database, keys_dir, port, notify_smtp_ca_file=str(ca.ca_file)) as notify:
            practice = await stack.people.practice(PRACTICE)
            client = await stack.people.user(practice)
            inbox.refuse.add(client.email)
            await notify.alert(practice.practice.practice_id, str(uuid.uuid4()), [(client.user_id, True)])
            assert ("message_email", "failed", "smtp 550") in await notify.settled(client.user_id)
            assert (await notify.job(client.user_id))["attempts"] == 1
    assert inbox.messages == []


async def test_a_server_whose_certificate_is_not_trusted_gets_nothing(stack, fresh_database, keys_dir, ca):
    """Without the test CA the certificate does not verify: nothing is sent in the clear, the job waits."""
    with mail_server(ca) as (inbox, port):
        async with smtp_notify(stack, fresh_database, keys_dir, port) as notify:
            client = await alert_a_client(stack, notify)
            deadline = time.monotonic() + 10
            while True:
                rows = await notify.notify_sql(
                    "SELECT status, last_error FROM notification_jobs WHERE recipient_id = %s"
                    " AND kind = 'message_email'", (client.user_id,))
                if rows and rows[0][1]:
                    break
                assert time.monotonic() < deadline, rows
                await asyncio.sleep(0.05)
    assert rows[0][0] == "pending" and rows[0][1].startswith("smtp ")
    assert inbox.messages == [] and inbox.logins == []

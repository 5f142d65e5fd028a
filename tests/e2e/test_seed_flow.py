"""The seed's flow, end to end: five real processes, real PostgreSQL, headless Chromium.

Dana messages Alex; Alex reads and replies from the email's quick sign-in link;
Dana sees the unread dot live, then the reply. The link works once and only
within its window; afterwards it leads to the Client Portal sign-in, which then
lands on the conversation.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest
from playwright.async_api import expect

from bin.seed import ALEX, DANA, JORDAN
from tests.e2e.conftest import start_stack

LINK = re.compile(r"https?://[^\s\"'<>]+/m/[A-Za-z0-9_\-]+")
CREDENTIAL_LINK = re.compile(r"https?://[^\s\"'<>]+/credentials/[A-Za-z0-9_\-]+")


async def mailbox(stack, to: str) -> list[dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.web_url}/dev/mailbox.json", params={"to": to}) as resp:
            assert resp.status == 200
            return (await resp.json())["items"]


async def wait_for_emails(stack, to: str, count: int, within: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + within
    while True:
        emails = [i for i in await mailbox(stack, to) if i["channel"] == "email"]
        if len(emails) >= count or time.monotonic() > deadline:
            return emails
        await asyncio.sleep(0.2)


async def sign_in(page, base: str, email: str, password: str, path: str = "/sign-in") -> None:
    await page.goto(base + path)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


@pytest.fixture
async def dana_page(browser, stack):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, stack.web_url, DANA[0], DANA[2])
    await expect(page.get_by_role("button", name="Secure Messages")).to_be_visible()
    yield page
    await context.close()


async def test_dana_messages_alex_who_replies_from_the_email_link(browser, stack, dana_page):
    page = dana_page
    canary = "CANARY-7f3e the session notes we discussed"

    await page.get_by_role("button", name="Secure Messages").click()
    await expect(page.get_by_text("No conversations yet")).to_be_visible()
    await page.get_by_role("button", name="New Message").click()
    await page.get_by_role("searchbox", name="Search").fill("Alex")
    await page.get_by_role("button", name=ALEX[1]).click()
    await page.get_by_role("button", name="Enable Secure Messaging").click()
    await page.get_by_role("textbox", name="Message").fill(canary)
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_text(canary)).to_be_visible()

    # Enabling Alex (no password yet) invited them just before the message: one email carries
    # both, the quick sign-in link and the Client Portal invitation (defect 9).
    [email] = await wait_for_emails(stack, ALEX[0], 1)
    assert email["subject"] == "You have a new secure message"
    assert canary not in (email["subject"] + email["text"] + email["html"])
    assert "Dana" not in email["subject"] + email["text"] and "Lakeside Counseling" in email["text"]
    assert "Choose a password for your Client Portal" in email["text"] and "988" in email["text"]
    link = LINK.search(email["text"]).group(0)
    invitation = CREDENTIAL_LINK.search(email["text"]).group(0)
    async with aiohttp.ClientSession() as http, http.get(invitation) as resp:
        assert resp.status == 200 and "Choose a password" in await resp.text()

    # Dana leaves the thread: the panel closes, so a reply must show the dot.
    await page.get_by_role("button", name="Secure Messages").click()
    dot = page.get_by_label(re.compile("unread", re.I))
    await expect(dot).to_be_hidden()

    client = await browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    phone = await client.new_page()
    await phone.goto(link)
    await phone.get_by_role("button", name="View message").click()
    await expect(phone).to_have_url(re.compile(r"/portal/conversations/"))
    await expect(phone.get_by_text(canary)).to_be_visible()
    no_sideways_scroll = await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert no_sideways_scroll
    reply = "Thanks, see you Thursday"
    await phone.get_by_role("textbox", name="Message").fill(reply)
    await phone.get_by_role("button", name="Send").click()
    await expect(phone.get_by_text(reply)).to_be_visible()

    # The dot appears on Dana's page without a reload, then she reads the reply.
    await expect(dot).to_be_visible(timeout=10_000)
    await page.get_by_role("button", name="Secure Messages").click()
    await page.get_by_role("button", name=re.compile(ALEX[1])).first.click()
    await expect(page.get_by_text(reply)).to_be_visible()
    await expect(dot).to_be_hidden(timeout=10_000)

    # The link works once: a second use lands on the Client Portal sign-in.
    second = await browser.new_context()
    again = await second.new_page()
    await again.goto(link)
    await expect(again).to_have_url(re.compile(r"/portal/sign-in"))
    await expect(again.get_by_role("button", name="Sign in")).to_be_visible()
    await second.close()
    await client.close()
    # Still the one email: the invitation went with the alert, not after it.
    assert len(await wait_for_emails(stack, ALEX[0], 2, within=0)) == 1


async def _staff_session(stack) -> aiohttp.ClientSession:
    # unsafe=True: the default jar ignores cookies from IP addresses such as 127.0.0.1.
    http = aiohttp.ClientSession(headers={"Origin": stack.web_url}, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(
        f"{stack.web_url}/sign-in", data={"email": DANA[0], "password": DANA[2]}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    return http


async def _message_jordan(stack, text: str) -> str:
    """Dana messages Jordan over the JSON API; returns the conversation id."""
    async with await _staff_session(stack) as http:
        async with http.get(f"{stack.web_url}/api/directory", params={"q": "Jordan"}) as resp:
            people = (await resp.json())["users"]
        jordan = next(p for p in people if p["display_name"] == JORDAN[1])
        async with http.post(f"{stack.web_url}/api/conversations", json={"participant_ids": [jordan["user_id"]]}) as resp:
            assert resp.status in (200, 201), await resp.text()
            conversation_id = (await resp.json())["conversation"]["conversation_id"]
        async with http.post(
            f"{stack.web_url}/api/conversations/{conversation_id}/messages",
            json={"body": text, "idempotency_key": f"e2e-{time.time_ns()}"},
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
    return conversation_id


async def test_used_link_leads_to_sign_in_then_to_the_conversation(browser, stack):
    before = len(await wait_for_emails(stack, JORDAN[0], 0, within=0))
    conversation_id = await _message_jordan(stack, "Checking in before our session")
    emails = await wait_for_emails(stack, JORDAN[0], before + 1)
    link = LINK.search(emails[0]["text"]).group(0)

    first = await browser.new_context()
    page = await first.new_page()
    await page.goto(link)
    await page.get_by_role("button", name="View message").click()
    await expect(page).to_have_url(re.compile(f"/portal/conversations/{conversation_id}"))
    await first.close()

    later = await browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = await later.new_page()
    await page.goto(link)
    await expect(page).to_have_url(re.compile(r"/portal/sign-in"))
    await page.get_by_label("Email").fill(JORDAN[0])
    await page.get_by_label("Password").fill(JORDAN[2])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(f"/portal/conversations/{conversation_id}$"))
    await expect(page.get_by_text("Checking in before our session")).to_be_visible()
    await later.close()


async def test_link_after_its_window_leads_to_sign_in(browser, pg, keys_dir, tmp_path_factory):
    short = await start_stack(pg, keys_dir, tmp_path_factory, magic_link_ttl_seconds=2)
    try:
        conversation_id = await _message_jordan(short, "A message whose link will expire")
        emails = await wait_for_emails(short, JORDAN[0], 1)
        link = LINK.search(emails[0]["text"]).group(0)
        context = await browser.new_context()
        page = await context.new_page()
        deadline = time.monotonic() + 15
        while True:
            await page.goto(link)
            if "/portal/sign-in" in page.url or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await expect(page).to_have_url(re.compile(r"/portal/sign-in"))
        await page.get_by_label("Email").fill(JORDAN[0])
        await page.get_by_label("Password").fill(JORDAN[2])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(re.compile(f"/portal/conversations/{conversation_id}$"))
        await context.close()
    finally:
        await asyncio.to_thread(short.stop)

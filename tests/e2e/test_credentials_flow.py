"""Client Portal credentials in headless Chromium, against the five real processes.

- Dana enables Alex (who has no password) and sends nothing: the invitation email arrives
  by itself once its short wait for a message alert ends; Alex opens its link, chooses a
  password, lands in the portal, signs out and signs in with it.
- Jordan forgot their password: the reset email's link sets a new one and signs
  them in; the old password no longer works.
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

CREDENTIAL_LINK = re.compile(r"https?://[^\s\"'<>]+/credentials/[A-Za-z0-9_\-]+")
SENT = "If an account exists for that address, we sent a link to reset its password."
PHONE = {"viewport": {"width": 375, "height": 740}, "is_mobile": True}
# An invitation waits this long for a message alert to share its email (60 s by default).
INVITATION_HOLD_SECONDS = 3


@pytest.fixture(scope="module")
async def stack(pg, keys_dir, tmp_path_factory):
    stack = await start_stack(pg, keys_dir, tmp_path_factory, notify_invitation_hold_seconds=INVITATION_HOLD_SECONDS)
    yield stack
    await asyncio.to_thread(stack.stop)


async def emails_with_subject(stack, to: str, subject: str, within: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{stack.web_url}/dev/mailbox.json", params={"to": to}) as resp:
                assert resp.status == 200
                items = (await resp.json())["items"]
            found = [i for i in items if i["channel"] == "email" and i["subject"] == subject]
            if found or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)


async def sign_in(page, base: str, email: str, password: str, path: str = "/sign-in") -> None:
    await page.goto(base + path)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def choose_password(page, link: str, password: str) -> None:
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Choose a password")).to_be_visible()
    await page.get_by_label("New password").fill(password)
    await page.get_by_label("Confirm password").fill(password)
    await page.get_by_role("button", name="Save password").click()


async def no_sideways_scroll(page) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def test_an_invited_client_chooses_a_password_and_signs_in(browser, stack):
    dana = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await dana.new_page()
    await sign_in(page, stack.web_url, DANA[0], DANA[2])
    await page.get_by_role("button", name="Secure Messages").click()
    await page.get_by_role("button", name="New Message").click()
    await page.get_by_role("searchbox", name="Search").fill("Alex")
    await page.get_by_role("button", name=ALEX[1]).click()
    await page.get_by_role("button", name="Enable Secure Messaging").click()
    await expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    await dana.close()

    [email] = await emails_with_subject(stack, ALEX[0], "Set up your Client Portal")
    assert "Alex" not in email["subject"] + email["text"]
    link = CREDENTIAL_LINK.search(email["text"]).group(0)

    alex = await browser.new_context(**PHONE)
    page = await alex.new_page()
    password = "harbor-lights-in-autumn"
    await page.goto(link)
    await no_sideways_scroll(page)
    # A mismatched confirmation is refused with a readable message, and the link still works.
    await page.get_by_label("New password").fill(password)
    await page.get_by_label("Confirm password").fill(password + "!")
    await page.get_by_role("button", name="Save password").click()
    await expect(page.get_by_role("alert")).to_contain_text("do not match")
    await choose_password(page, link, password)
    await expect(page).to_have_url(re.compile(r"/portal(/conversations/[0-9a-f-]+)?$"))
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/portal/sign-in"))
    await sign_in(page, stack.web_url, ALEX[0], password, "/portal/sign-in")
    await expect(page).to_have_url(re.compile(r"/portal(/conversations/[0-9a-f-]+)?$"))

    # The link was used: it now says so and offers "Forgot password?".
    await page.goto(link)
    await expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
    await expect(page.get_by_role("link", name="Forgot password?")).to_be_visible()
    await alex.close()


async def test_forgot_password_sets_a_new_one_and_the_old_one_stops_working(browser, stack):
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    await page.goto(stack.web_url + "/portal/sign-in")
    await page.get_by_role("link", name="Forgot password?").click()
    await page.get_by_label("Email").fill(JORDAN[0])
    await page.get_by_role("button", name="Send reset link").click()
    await expect(page.get_by_text(SENT)).to_be_visible()
    await no_sideways_scroll(page)

    [email] = await emails_with_subject(stack, JORDAN[0], "Reset your password")
    assert "Lakeside Counseling" in email["text"] and "Confidant" not in email["subject"] + email["text"]
    link = CREDENTIAL_LINK.search(email["text"]).group(0)
    new_password = "copper-kettle-morning-5"
    await choose_password(page, link, new_password)
    await expect(page).to_have_url(re.compile(r"/portal"))
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/portal/sign-in"))

    await sign_in(page, stack.web_url, JORDAN[0], JORDAN[2], "/portal/sign-in")
    await expect(page.get_by_role("alert")).to_contain_text("Email or password is incorrect.")
    await sign_in(page, stack.web_url, JORDAN[0], new_password, "/portal/sign-in")
    await expect(page).to_have_url(re.compile(r"/portal"))
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await context.close()

"""Delivery status and discreet alerts in headless Chromium, against the five real processes
and the seeded demo.

Dana writes to Jordan: a few seconds later the line under her message says the email (and,
Jordan having agreed to texts, the text) went out, and it says so again when she opens the
thread later. Her reply from Jordan has no such line. On Client Info she ticks "Discreet
notifications" and saves; on Settings she sends failed alerts again (there are none).
"""

from __future__ import annotations

import re

from playwright.async_api import expect

from bin.seed import DANA, JORDAN
from tests.e2e.test_credentials_flow import sign_in

WIDE = {"viewport": {"width": 1280, "height": 900}}


async def test_the_thread_says_where_alerts_are_and_client_info_sets_discreet_alerts(browser, stack):
    base = stack.web_url
    context = await browser.new_context(**WIDE)
    try:
        dana = await context.new_page()
        await sign_in(dana, base, DANA[0], DANA[2])
        await dana.get_by_role("button", name="Secure Messages").click()
        await dana.get_by_role("button", name="New Message").click()
        await dana.get_by_role("searchbox", name="Search").press_sequentially("jord", delay=40)
        await dana.get_by_role("button", name=JORDAN[1], exact=True).click()
        await dana.get_by_role("textbox", name="Message").fill("Your Thursday session is confirmed")
        await dana.get_by_role("button", name="Send").click()

        messages = dana.get_by_role("list", name="Messages")
        mine = messages.get_by_role("listitem").filter(has_text="Your Thursday session is confirmed")
        await expect(mine).to_be_visible()
        # Asked once, a few seconds after the send.
        await expect(mine.locator("[data-role=delivery]")).to_have_text("Email sent · Text sent", timeout=15_000)

        # Opening the thread again asks again.
        await dana.get_by_role("button", name="Back").click()
        await dana.get_by_role("list", name="Conversations").get_by_role("listitem").filter(
            has_text=JORDAN[1]).get_by_role("button").first.click()
        await expect(mine.locator("[data-role=delivery]")).to_have_text(re.compile("^Email sent"))

        # Client Info: "Discreet notifications", saved with the page's Save.
        await dana.get_by_role("button", name="Close").click()
        await dana.get_by_role("link", name="Clients").click()
        await dana.get_by_role("searchbox", name="Search").press_sequentially("jordan l", delay=40)
        await dana.get_by_role("link", name=re.compile(JORDAN[1])).click()
        discreet = dana.get_by_label("Discreet notifications")
        await expect(discreet).not_to_be_checked()
        await expect(dana.get_by_text("for clients with safety concerns")).to_be_visible()
        await discreet.check()
        await dana.get_by_role("button", name="Save", exact=True).click()
        await expect(dana.get_by_text("Saved.")).to_be_visible()
        await expect(dana.get_by_label("Discreet notifications")).to_be_checked()

        # Settings: the owner's "Send failed alerts again".
        await dana.goto(base + "/settings")
        await dana.get_by_role("button", name="Send failed alerts again").click()
        await expect(dana.get_by_text("There were no failed alerts to send again.")).to_be_visible()
    finally:
        await context.close()

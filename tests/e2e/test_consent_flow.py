"""Text message consent in headless Chromium, against the five real processes and the seeded demo.

Jordan's phone (+1 212 555 0101) replies STOP from the development mailbox: Dana's Client
Info tab for Jordan says texting is off, with today's date; START turns it on again. Then
Dana's re-add flow (the seed's "deleted the text thread" case): delete the number, Save,
re-add it, tick "Text message ok", Save: texting is on, and the consent history lists
every step.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from playwright.async_api import expect

from bin.seed import DANA, JORDAN
from tests.e2e.test_credentials_flow import sign_in

WIDE = {"viewport": {"width": 1280, "height": 900}}
JORDAN_NUMBER = "+12125550101"


def today() -> str:
    """As Client Info writes dates: Nov 27, 2026 (UTC)."""
    now = datetime.now(UTC)
    return f"{now:%b} {now.day}, {now.year}"


async def reply_as_jordans_phone(page, base: str, body: str) -> None:
    await page.goto(base + "/dev/mailbox")
    form = page.get_by_role("form", name="Reply as a client's phone")
    await form.get_by_label("From").fill(JORDAN_NUMBER)
    await form.get_by_label("Reply").fill(body)
    await form.get_by_role("button", name="Send reply").click()
    await expect(page.get_by_role("status")).to_have_text("Reply sent.")


async def test_stop_and_start_from_the_phone_then_the_clinicians_re_add_flow(browser, stack):
    base = stack.web_url
    context = await browser.new_context(**WIDE)
    try:
        page = await context.new_page()
        await sign_in(page, base, DANA[0], DANA[2])
        await expect(page.get_by_role("button", name="Secure Messages")).to_be_visible()
        await page.get_by_role("link", name="Clients").click()
        await page.get_by_role("searchbox", name="Search").press_sequentially("jordan l", delay=30)
        await expect(page.get_by_role("link", name=re.compile(JORDAN[1]))).to_have_count(1)
        await page.get_by_role("link", name=re.compile(JORDAN[1])).click()
        await expect(page.get_by_role("heading", name="Client Info")).to_be_visible()
        client_info = page.url
        state = page.locator('[data-role="consent-state"]')
        await expect(state).to_have_text(f"Text messages are on since {today()}: alerts go to this number.")

        # STOP from Jordan's phone: off, since today.
        await reply_as_jordans_phone(page, base, "STOP")
        await page.goto(client_info)
        await expect(state).to_contain_text(f"Text messages are off since {today()}: the client replied STOP.")

        # START: on again.
        await reply_as_jordans_phone(page, base, "Start")
        await page.goto(client_info)
        await expect(state).to_have_text(f"Text messages are on since {today()}: alerts go to this number.")

        # The re-add flow: delete the number and save; re-add it, tick "Text message ok" and save.
        phone, text_ok = page.get_by_label("Phone number"), page.get_by_label("Text message ok")
        await phone.fill("")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("status")).to_have_text("Saved.")
        await expect(state).to_have_text("No phone number on file: no text messages are sent.")
        await expect(text_ok).not_to_be_checked()
        await phone.fill("+1 212 555 0101")
        await text_ok.check()
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("status")).to_have_text("Saved.")
        await expect(phone).to_have_value(JORDAN_NUMBER)
        await expect(state).to_have_text(f"Text messages are on since {today()}: alerts go to this number.")

        # The history, newest first: every step, with how and by whom.
        history = page.get_by_role("table", name="Text message consent history")
        rows = history.get_by_role("row")
        events = [(await rows.nth(i).get_by_role("cell").nth(1).inner_text()).strip() for i in range(1, 8)]
        assert events == [
            "“Text message ok” ticked",
            "Phone number added",
            "Phone number deleted",
            "Confirmation text sent",
            "The client replied START: texts on",
            "Confirmation text sent",
            "The client replied STOP: texts off",
        ], events
        await expect(rows.nth(1)).to_contain_text("Client Info")
        await expect(rows.nth(1)).to_contain_text(DANA[1])
        await expect(rows.nth(5)).to_contain_text("Text message (development mailbox)")
        await expect(rows.nth(5)).to_contain_text("The client")
        # Phone width: the page itself never scrolls sideways (the table scrolls in its box).
        await page.set_viewport_size({"width": 375, "height": 740})
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        await context.close()

"""The messaging experience in headless Chromium, against the five real processes and
the seeded demo: one stack, one story.

Dana (desktop) finds a client by a partial, accent-free search while typing, writes
to Jordan (phone) with the length counter refusing an over-long message; Jordan's
dot and list update live, Jordan replies and Dana's dot appears live. Dana archives
the conversation and sees it return when Jordan writes again. Dana turns Jordan's
secure messaging off on Client Info, then enables it again from the thread itself, and
turns it off there too.
"""

from __future__ import annotations

import re

from playwright.async_api import expect

from bin.seed import DANA, JORDAN
from tests.e2e.test_credentials_flow import PHONE, sign_in

WIDE = {"viewport": {"width": 1280, "height": 900}}
UNREAD = re.compile("unread", re.I)

# Posts a message straight to the JSON API from the page (as a tampered page would).
POST_FROM_PAGE = """async ([body]) => {
  const list = await (await fetch('/api/conversations')).json();
  const cid = list.conversations[0].conversation_id;
  const r = await fetch(`/api/conversations/${cid}/messages`, {
    method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({body, idempotency_key: crypto.randomUUID()}),
  });
  return [r.status, (await r.json()).error || ''];
}"""


async def no_sideways_scroll(page) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url


def row(page, name: str, list_name: str = "Conversations"):
    return page.get_by_role("list", name=list_name).get_by_role("listitem").filter(has_text=name)


async def test_search_limit_live_dots_archive_and_enable_from_the_thread(browser, stack):
    base = stack.web_url
    dana_context = await browser.new_context(**WIDE)
    jordan_context = await browser.new_context(**PHONE)
    try:
        dana, jordan = await dana_context.new_page(), await jordan_context.new_page()
        await sign_in(dana, base, DANA[0], DANA[2])
        await sign_in(jordan, base, JORDAN[0], JORDAN[2])
        await expect(jordan.get_by_text("No messages yet")).to_be_visible()
        jordan_dot = jordan.get_by_label(UNREAD)
        await expect(jordan_dot).to_be_hidden()

        # New Message: the search answers while Dana types a partial, accent-free query.
        await dana.get_by_role("button", name="Secure Messages").click()
        await dana.get_by_role("button", name="New Message").click()
        search = dana.get_by_role("searchbox", name="Search")
        await search.press_sequentially("lucia iban", delay=40)
        await expect(dana.get_by_role("button", name="Lucía Ibáñez", exact=True)).to_be_visible()
        await search.fill("")
        await search.press_sequentially("jord", delay=40)
        await dana.get_by_role("button", name=JORDAN[1], exact=True).click()

        # The length counter: at the limit a clear message, over it Send is refused (and the server refuses too).
        box = dana.get_by_role("textbox", name="Message")
        send = dana.get_by_role("button", name="Send")
        await box.fill("x" * 5000)
        await expect(dana.get_by_text("You have reached the limit of 5,000 characters.")).to_be_visible()
        await expect(send).to_be_enabled()
        await box.fill("x" * 5001)
        await expect(dana.get_by_text("This message is 1 character over the limit of 5,000 characters.")).to_be_visible()
        await expect(send).to_be_disabled()
        await box.fill("Hello Jordan, see you Thursday")
        await expect(dana.get_by_text("You have reached the limit")).to_be_hidden()
        await send.click()
        await expect(dana.get_by_role("list", name="Messages").get_by_text("Hello Jordan, see you Thursday")).to_be_visible()
        # The server refuses the over-long message too (the conversation is listed from its first message on).
        status, error = await dana.evaluate(POST_FROM_PAGE, ["x" * 5001])
        assert status == 400 and "5,000" in error

        # Jordan's dot and list, live, without a reload.
        await expect(jordan_dot).to_be_visible(timeout=10_000)
        jordan_row = row(jordan, DANA[1])
        await expect(jordan_row).to_contain_text("1 unread")
        await expect(jordan_row).to_contain_text("Hello Jordan, see you Thursday")
        await no_sideways_scroll(jordan)

        # Dana leaves the thread; Jordan reads and replies; Dana's dot appears live.
        await dana.get_by_role("button", name="Secure Messages").click()
        dana_dot = dana.get_by_label(UNREAD)
        await expect(dana_dot).to_be_hidden()
        await jordan_row.get_by_role("link").click()
        await expect(jordan.get_by_text("Hello Jordan, see you Thursday")).to_be_visible()
        await expect(jordan_dot).to_be_hidden(timeout=10_000)
        jordan_box = jordan.get_by_role("textbox", name="Message")
        await jordan_box.fill("y" * 1001)  # the client's limit is 1,000
        await expect(jordan.get_by_text("over the limit of 1,000 characters")).to_be_visible()
        await expect(jordan.get_by_role("button", name="Send")).to_be_disabled()
        await jordan_box.fill("Thanks Dana")
        await jordan.get_by_role("button", name="Send").click()
        await expect(jordan.get_by_text("Thanks Dana")).to_be_visible()
        await no_sideways_scroll(jordan)
        await expect(dana_dot).to_be_visible(timeout=10_000)

        # Dana's list: preview and unread count; she archives the conversation ...
        await dana.get_by_role("button", name="Secure Messages").click()
        dana_row = row(dana, JORDAN[1])
        await expect(dana_row.get_by_text("Thanks Dana", exact=True)).to_be_visible()  # the preview
        await expect(dana_row).to_contain_text("1 unread")
        await dana_row.get_by_role("button", name=f"Archive conversation with {JORDAN[1]}").click()
        await expect(dana_row).to_have_count(0)
        await dana.get_by_role("button", name="Archived").click()
        await expect(row(dana, JORDAN[1], "Archived")).to_be_visible()
        await expect(row(dana, JORDAN[1], "Archived").get_by_role("button", name=re.compile("^Unarchive"))).to_be_visible()
        await dana.get_by_role("button", name="Back").click()
        await expect(dana_row).to_have_count(0)

        # ... and it comes back, live, when Jordan writes again.
        await jordan_box.fill("One more question")
        await jordan.get_by_role("button", name="Send").click()
        await expect(dana_row).to_contain_text("One more question", timeout=10_000)
        await dana_row.get_by_role("button").first.click()
        await expect(dana.get_by_role("list", name="Messages").get_by_text("One more question", exact=True)).to_be_visible()
        await expect(dana_dot).to_be_hidden(timeout=10_000)

        # Client Info (also at phone width): Dana turns Jordan's secure messaging off.
        await dana.get_by_role("button", name="Close").click()
        await dana.get_by_role("link", name="Clients").click()
        await dana.set_viewport_size(PHONE["viewport"])
        await dana.get_by_role("searchbox", name="Search").press_sequentially("jordan l", delay=40)
        await expect(dana.get_by_role("link", name=re.compile(JORDAN[1]))).to_have_count(1)
        await no_sideways_scroll(dana)
        await dana.get_by_role("link", name=re.compile(JORDAN[1])).click()
        await expect(dana.get_by_role("heading", name="Client Info")).to_be_visible()
        await expect(dana.get_by_label("Phone number")).to_have_value("+12125550101")
        await expect(dana.get_by_label("Text message ok")).to_be_checked()
        await no_sideways_scroll(dana)
        await dana.get_by_role("button", name="Disable Secure Messaging").click()
        await expect(dana.get_by_text(f"Secure messaging is off for {JORDAN[1]}.").first).to_be_visible()
        await dana.set_viewport_size(WIDE["viewport"])

        # Enable from the thread: the conversation says why nobody can write, and offers the switch.
        await dana.get_by_role("button", name="Secure Messages").click()
        await row(dana, JORDAN[1]).get_by_role("button").first.click()
        await expect(dana.get_by_text(f"Secure messaging is not enabled for {JORDAN[1]}.")).to_be_visible()
        await expect(dana.get_by_role("textbox", name="Message")).to_be_hidden()
        panel = dana.get_by_role("complementary", name="Secure Messages")
        await panel.get_by_role("button", name="Enable Secure Messaging").click()
        await expect(box).to_be_visible()
        await box.fill("Welcome back")
        await send.click()
        await expect(dana.get_by_role("list", name="Messages").get_by_text("Welcome back", exact=True)).to_be_visible()
        await expect(jordan.get_by_text("Welcome back", exact=True)).to_be_visible(timeout=10_000)  # Jordan's open thread, live

        # ... and off again from the thread: the composer gives way to the switch.
        await panel.get_by_role("button", name="Disable Secure Messaging").click()
        await expect(dana.get_by_text(f"Secure messaging is not enabled for {JORDAN[1]}.")).to_be_visible()
        await expect(box).to_be_hidden()
        await expect(panel.get_by_role("button", name="Enable Secure Messaging")).to_be_visible()
        await expect(panel.get_by_role("link", name="Client Info")).to_have_attribute(
            "href", re.compile(r"^/clients/[0-9a-f-]{36}$"))
    finally:
        await dana_context.close()
        await jordan_context.close()

"""A staff member who has not read a message gets one email without PHI, and its link
opens the conversation after sign-in (real processes; the delay shortened to 2 s)."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
from playwright.async_api import expect

from bin.seed import DANA, SAM
from tests.e2e.conftest import start_stack
from tests.e2e.test_seed_flow import wait_for_emails

STAFF_LINK = re.compile(r"https?://[^\s\"'<>]+/\?conversation=[0-9a-f-]{36}")


async def test_an_unread_message_emails_the_staff_member_whose_link_opens_it(browser, pg, keys_dir, tmp_path_factory):
    stack = await start_stack(pg, keys_dir, tmp_path_factory, notify_staff_unread_delay_seconds=2)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        text = f"Can you cover my 3pm on Friday? {time.time_ns()}"
        async with aiohttp.ClientSession(
            headers={"Origin": stack.web_url}, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            async with http.post(f"{stack.web_url}/sign-in", data={"email": DANA[0], "password": DANA[2]},
                                 allow_redirects=False) as resp:
                assert resp.status == 303
            async with http.get(f"{stack.web_url}/api/directory", params={"q": "Sam"}) as resp:
                sam = next(u for u in (await resp.json())["users"] if u["display_name"] == SAM[1])
            async with http.post(f"{stack.web_url}/api/conversations", json={"participant_ids": [sam["user_id"]]}) as resp:
                assert resp.status == 201, await resp.text()
                conversation_id = (await resp.json())["conversation"]["conversation_id"]
            async with http.post(f"{stack.web_url}/api/conversations/{conversation_id}/messages",
                                 json={"body": text, "idempotency_key": "staff-email-1"}) as resp:
                assert resp.status == 201, await resp.text()

        [email] = await wait_for_emails(stack, SAM[0], 1)
        everything = " ".join(str(email.get(k, "")) for k in ("subject", "text", "html"))
        assert "unread secure message" in email["subject"].lower()
        for phi in (text, "cover my 3pm", DANA[1], "Dana"):
            assert phi not in everything, phi
        link = STAFF_LINK.search(email["text"]).group(0)
        assert link.endswith(conversation_id)

        # The link, signed out: sign-in first, then the conversation opens by itself.
        page = await context.new_page()
        await page.goto(link)
        await page.get_by_label("Email").fill(SAM[0])
        await page.get_by_label("Password").fill(SAM[2])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("list", name="Messages").get_by_text(text, exact=True)).to_be_visible()
        # Opening it read it: the dot is off; one email in all.
        await expect(page.get_by_label(re.compile("unread", re.I))).to_be_hidden(timeout=10_000)
        assert len(await wait_for_emails(stack, SAM[0], 0, within=0)) == 1
    finally:
        await context.close()
        await asyncio.to_thread(stack.stop)

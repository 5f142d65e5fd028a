"""Accessibility, measured: axe-core (the npm package, from bin/axe-core) finds no serious or
critical violation on any page of the web edge, at desktop width (1366 px) and on a phone
(375 px), and no page scrolls sideways on the phone. Against the five real processes and the
seeded demo, in headless Chromium.

The pages to visit come from the app's router: every GET route is a page unless a rule says it
is not (the JSON API with its event stream, webhooks, static files, health probes, JSON
documents); the test fails when a page route was not visited, so a new page cannot escape it.
Pages that are only a form's answer (forgot password sent, two-step set-up) and the states a
page's script shows (each view of the Secure Messages drawer, the phone's menu) are checked too.
One browser, a context per width (the two at once), each width's pages in sequence; axe-core is
an init script of the context, so the pages' Content-Security-Policy stays as it is.

The drawer keeps keyboard focus while it is open: Tab and Shift+Tab cycle inside it, Escape
closes it and gives focus back to the "Secure Messages" button.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from playwright.async_api import expect

from bin.seed import ALEX, DANA, JORDAN, SAM
from services.common.config import Env
from services.web.config import WebConfig
from services.web.routes import setup_routes

REPO = Path(__file__).resolve().parents[2]
WIDTHS = {
    "1366px": {"viewport": {"width": 1366, "height": 900}},
    "375px": {"viewport": {"width": 375, "height": 740}, "is_mobile": True},
}
REPORTED = ("serious", "critical")
# Not pages: the JSON API (and its event stream under it), the providers' webhooks, static
# files, the health probes, and JSON documents (the development mailbox's).
NOT_PAGES = re.compile(r"^/(api|webhooks|static)(/|$)|^/(healthz|readyz)$|\.json$")
MAGIC_LINK = re.compile(r"https?://[^\s\"'<>]+(/m/[A-Za-z0-9_\-]+)")
CREDENTIAL_LINK = re.compile(r"https?://[^\s\"'<>]+(/credentials/[A-Za-z0-9_\-]+)")
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map(n => n.target.join(' '))}));
}"""


def web_routes() -> web.Application:
    """An application with the web edge's routes (development mode: the mailbox's too)."""
    app = web.Application()
    setup_routes(app, WebConfig.load(Env({})))
    return app


def page_routes(app: web.Application) -> set[str]:
    """The patterns of the GET routes that are pages."""
    return {route.resource.canonical for route in app.router.routes()
            if route.method == "GET" and not NOT_PAGES.search(route.resource.canonical)}


@pytest.fixture(scope="module")
def axe_script() -> str:
    done = subprocess.run([str(REPO / "bin" / "axe-core")], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(done.stderr.strip() or "bin/axe-core failed")
    return done.stdout.strip()


@dataclass
class Demo:
    """What the pages need beyond the seed: conversations, a quick link, a password link, ids."""

    jordan_id: str = ""
    sam_id: str = ""
    dana_conversation: str = ""
    magic_link: str = ""
    credential_link: str = ""


async def _session(base: str, email: str, password: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(base, headers={"Origin": base}, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post("/sign-in", data={"email": email, "password": password}, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
    return http


async def _message(http: aiohttp.ClientSession, user_id: str, *texts: str) -> str:
    async with http.post("/api/conversations", json={"participant_ids": [user_id]}) as resp:
        assert resp.status in (200, 201), await resp.text()
        conversation_id = (await resp.json())["conversation"]["conversation_id"]
    for text in texts:
        async with http.post(f"/api/conversations/{conversation_id}/messages",
                             json={"body": text, "idempotency_key": str(uuid.uuid4())}) as resp:
            assert resp.status == 201, await resp.text()
    return conversation_id


async def _link_in_mailbox(base: str, to: str, pattern: re.Pattern, within: float = 20.0) -> str:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(base) as http:
        while True:
            async with http.get("/dev/mailbox.json", params={"to": to}) as resp:
                items = (await resp.json())["items"]
            for item in items:
                found = pattern.search(item["text"])
                if found:
                    return found.group(1)
            assert time.monotonic() < deadline, f"no link for {to} in the mailbox"
            await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def demo(stack) -> Demo:
    base = stack.web_url
    result = Demo()
    async with await _session(base, DANA[0], DANA[2]) as dana:
        for name, attribute in ((JORDAN[1], "jordan_id"), (SAM[1], "sam_id")):
            async with dana.get("/api/directory", params={"q": name}) as resp:
                people = (await resp.json())["users"]
            setattr(result, attribute, next(p["user_id"] for p in people if p["display_name"] == name))
        # Long enough to scroll inside the drawer, with a link in one message.
        notes = [f"Note {n}: how the week went, and what we will look at next time." for n in range(1, 25)]
        result.dana_conversation = await _message(dana, result.jordan_id, "Hello Jordan, see you Thursday",
                                                  *notes, "The worksheet: https://lakeside.test/worksheet")
    # A second conversation, so that Jordan's portal shows its list (one alone opens directly).
    async with await _session(base, SAM[0], SAM[2]) as sam:
        await _message(sam, result.jordan_id, "Your forms are ready to sign")
    result.magic_link = await _link_in_mailbox(base, JORDAN[0], MAGIC_LINK)
    async with aiohttp.ClientSession(base, headers={"Origin": base}) as http:
        async with http.post("/forgot-password", data={"email": JORDAN[0], "portal": "1"}) as resp:
            assert resp.status == 200
    result.credential_link = await _link_in_mailbox(base, JORDAN[0], CREDENTIAL_LINK)
    return result


@dataclass
class Audit:
    """What the visits found, reported together at the end."""

    app: web.Application
    visited: set[str] = field(default_factory=set)
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def route_of(self, url: str) -> str:
        """The pattern of the route that answered ``url`` (an error page may have none)."""
        match = await self.app.router.resolve(make_mocked_request("GET", urlsplit(url).path))
        if match.http_exception is not None or match.route.resource is None:
            return "(no route)"
        return match.route.resource.canonical

    async def check(self, page, width: str, what: str) -> None:
        """axe-core on the page as it is now; at phone width, no sideways scrolling either."""
        route = await self.route_of(page.url)
        self.visited.add(route)
        label = f"{what} ({route}) at {width}"
        self.checked.append(label)
        for violation in await page.evaluate(AXE_RUN):
            if violation["impact"] in REPORTED:
                self.problems.append(f"{label}: {violation['impact']} {violation['id']} ({violation['help']}) "
                                     f"at {', '.join(violation['targets'])}")
        if width == "375px" and not await page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth"):
            self.problems.append(f"{label}: scrolls sideways")


async def _sign_in(page, base: str, path: str, email: str, password: str) -> None:
    await page.goto(base + path)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def _visit_anonymous(audit: Audit, page, width: str, base: str, demo: Demo) -> None:
    for path, what in (("/sign-in", "sign-in"), ("/portal/sign-in", "Client Portal sign-in"),
                       ("/forgot-password?portal=1", "forgot password"), (demo.magic_link, "quick link landing"),
                       (demo.credential_link, "choose a password"), ("/credentials/" + "x" * 43, "expired link"),
                       ("/no-such-page", "error page"), ("/dev/mailbox", "development mailbox")):
        await page.goto(base + path)
        await audit.check(page, width, what)
    await page.goto(base + "/forgot-password")
    await page.get_by_label("Email").fill("nobody@lakeside.test")
    await page.get_by_role("button", name="Send reset link").click()
    await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    await audit.check(page, width, "forgot password sent")
    await _sign_in(page, base, "/sign-in", DANA[0], "not-her-password-1")
    await expect(page.get_by_role("alert")).to_be_visible()
    await audit.check(page, width, "sign-in refused")


async def _visit_staff(audit: Audit, page, width: str, base: str, demo: Demo) -> None:
    await _sign_in(page, base, "/sign-in", DANA[0], DANA[2])
    toggle = page.get_by_role("button", name="Secure Messages")
    await expect(toggle).to_be_visible()
    await audit.check(page, width, "staff home")
    if width == "375px":
        await page.get_by_text("Menu", exact=True).click()
        await expect(page.get_by_role("link", name="Audit trail")).to_be_visible()
        await audit.check(page, width, "staff menu open")
        await page.get_by_text("Menu", exact=True).click()

    # The Secure Messages drawer, each of its views.
    panel = page.get_by_role("complementary", name="Secure Messages")
    await toggle.click()
    conversations = panel.get_by_role("list", name="Conversations").get_by_role("listitem")
    await expect(conversations.first).to_be_visible()
    await audit.check(page, width, "drawer: conversations")
    await panel.get_by_role("button", name="Archived").click()
    await expect(panel.get_by_text("No archived conversations.")).to_be_visible()
    await audit.check(page, width, "drawer: archived")
    await panel.get_by_role("button", name="New Message").click()
    await expect(panel.get_by_role("heading", name="Recent")).to_be_visible()
    await panel.get_by_role("searchbox", name="Search").fill("Jor")
    await expect(panel.get_by_role("button", name=JORDAN[1], exact=True)).to_be_visible()
    await audit.check(page, width, "drawer: new message")
    await panel.get_by_role("searchbox", name="Search").fill("Alex")
    await panel.get_by_role("button", name=ALEX[1], exact=True).click()
    await expect(panel.get_by_role("button", name="Enable Secure Messaging")).to_be_visible()
    await audit.check(page, width, "drawer: enable secure messaging")
    await page.goto(f"{base}/?conversation={demo.dana_conversation}")
    await expect(panel.get_by_role("list", name="Messages").get_by_text("Hello Jordan")).to_be_visible()
    await audit.check(page, width, "drawer: thread")
    await panel.get_by_role("button", name="Close").click()

    for path, what in (("/clients", "Clients"), (f"/clients/{demo.jordan_id}", "Client Info"),
                       ("/settings", "Settings"), ("/account/team", "Team"),
                       (f"/account/team/{demo.sam_id}/deactivate", "deactivate, confirm"),
                       ("/account/audit", "Audit trail"), ("/account/password", "change password"),
                       ("/account/security", "Security")):
        await page.goto(base + path)
        await audit.check(page, width, what)
    await page.get_by_role("button", name="Set up two-step verification").click()
    await expect(page.get_by_role("heading", name="Set up two-step verification")).to_be_visible()
    await audit.check(page, width, "two-step set-up")

    # An error page keeps the top bar (issue 11, defect 19).
    await page.goto(f"{base}/clients/{uuid.uuid4()}")
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await expect(toggle).to_be_visible()
    await audit.check(page, width, "staff error page")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile("/sign-in"))


async def _visit_portal(audit: Audit, page, width: str, base: str, demo: Demo) -> None:
    await _sign_in(page, base, "/portal/sign-in", JORDAN[0], JORDAN[2])
    conversations = page.get_by_role("list", name="Conversations").get_by_role("listitem")
    await expect(conversations).to_have_count(2)
    await audit.check(page, width, "portal: conversations")
    await page.goto(f"{base}/portal/conversations/{demo.dana_conversation}")
    await expect(page.get_by_text("Hello Jordan, see you Thursday")).to_be_visible()
    await audit.check(page, width, "portal: thread")
    await page.goto(f"{base}/portal/conversations/{uuid.uuid4()}")
    await expect(page.get_by_role("link", name="Secure Messages")).to_be_visible()
    await audit.check(page, width, "portal error page")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile("/portal/sign-in"))


async def test_no_serious_or_critical_violation_on_any_page(browser, stack, demo, axe_script):
    audit = Audit(app=web_routes())

    async def visit_all(width: str) -> None:
        # One context per width, its pages in sequence; the two widths at once.
        context = await browser.new_context(**WIDTHS[width])
        try:
            # axe-core in every page before the page's own scripts: an init script is not the
            # page's, so the Content-Security-Policy stays as it is.
            await context.add_init_script(path=axe_script)
            page = await context.new_page()
            await _visit_anonymous(audit, page, width, stack.web_url, demo)
            await _visit_staff(audit, page, width, stack.web_url, demo)
            await _visit_portal(audit, page, width, stack.web_url, demo)
        finally:
            await context.close()

    await asyncio.gather(*(visit_all(width) for width in WIDTHS))
    print("pages checked:", *audit.checked, sep="\n  ")
    pages = page_routes(audit.app)
    missing = sorted(pages - audit.visited)
    assert not missing, f"page routes this test did not visit: {missing}"
    assert not audit.problems, "\n".join([f"{len(audit.problems)} problems:", *audit.problems])
    assert {"/", "/portal/conversations/{conversation_id}", "/dev/mailbox"} <= pages  # the rule keeps pages


async def _focus_in_drawer(page) -> bool:
    return await page.evaluate("document.getElementById('sm-panel').contains(document.activeElement)")


async def _cycle(page, key: str, presses: int) -> set[str]:
    """Press ``key`` again and again; every focused control must be inside the drawer."""
    seen = set()
    for n in range(presses):
        await page.keyboard.press(key)
        assert await _focus_in_drawer(page), f"{key} #{n + 1} left the drawer"
        seen.add(await page.evaluate("document.activeElement.outerHTML.slice(0, 120)"))
    return seen


@pytest.mark.parametrize("width", list(WIDTHS))
async def test_the_drawer_keeps_keyboard_focus_and_escape_gives_it_back(browser, stack, demo, width):
    context = await browser.new_context(**WIDTHS[width])
    try:
        page = await context.new_page()
        await _sign_in(page, stack.web_url, "/sign-in", DANA[0], DANA[2])
        toggle = page.locator("#sm-toggle")
        panel = page.get_by_role("complementary", name="Secure Messages")
        for view in ("conversations", "thread"):
            await toggle.focus()
            await page.keyboard.press("Enter")
            await expect(panel).to_be_visible()
            await expect(panel.get_by_role("list", name="Conversations").get_by_role("listitem").first).to_be_visible()
            if view == "thread":
                await panel.get_by_role("button", name=re.compile(JORDAN[1])).first.focus()
                await page.keyboard.press("Enter")
                await expect(panel.get_by_role("textbox", name="Message")).to_be_focused()
            controls = await page.evaluate("document.querySelectorAll('#sm-panel button:not([hidden])').length")
            presses = controls + 6  # round the drawer at least once
            forward = await _cycle(page, "Tab", presses)
            backward = await _cycle(page, "Shift+Tab", presses)
            assert len(forward) >= 3 and forward == backward, (forward, backward)
            await page.keyboard.press("Escape")
            await expect(panel).to_be_hidden()
            await expect(toggle).to_be_focused()
            await expect(toggle).to_have_attribute("aria-expanded", "false")
    finally:
        await context.close()

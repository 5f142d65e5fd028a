"""Two-step verification in headless Chromium against the five real processes.

Dana (the owner) requires two-step verification for all staff from the Security
page; Sam signs in, is asked to set it up, enrols with a code computed from the
key the page shows, saves the recovery codes and reaches the staff home; signs
out; and signs in again with a fresh code.
"""

from __future__ import annotations

import time

import pyotp
from playwright.async_api import expect

from bin.seed import DANA, SAM


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


async def password_step(page, base: str, email: str, password: str) -> None:
    await page.goto(base + "/sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_the_owner_requires_two_step_verification_and_sam_enrols_at_sign_in(browser, stack):
    base = stack.web_url
    owner = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await owner.new_page()
    await password_step(page, base, DANA[0], DANA[2])
    await expect(page.get_by_role("button", name="Secure Messages")).to_be_visible()
    await page.get_by_role("link", name="Security").click()
    await expect(page.get_by_role("heading", name="Security", exact=True)).to_be_visible()
    await page.get_by_label("Require two-step verification for all staff").check()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("security settings were saved")).to_be_visible()
    await expect(page.get_by_label("Require two-step verification for all staff")).to_be_checked()
    await owner.close()

    sam = await browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = await sam.new_page()
    await password_step(page, base, SAM[0], SAM[2])
    await expect(page.get_by_role("heading", name="Set up two-step verification")).to_be_visible()
    await expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    await page.get_by_label("Authentication code").fill(code_at(secret))
    await page.get_by_role("button", name="Turn on").click()
    await expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    assert await page.get_by_role("list", name="Recovery codes").locator("li").count() == 10
    # At phone width nothing scrolls sideways.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.get_by_role("link", name="Continue").click()
    await expect(page.get_by_role("button", name="Secure Messages")).to_be_visible()
    # On a phone the top bar's links (Clients, Security) are in its menu.
    await page.get_by_text("Menu", exact=True).click()
    await page.get_by_role("link", name="Security").click()
    await expect(page.get_by_text("Two-step verification is on. 10 recovery codes left.")).to_be_visible()
    await expect(page.get_by_text("Your practice requires two-step verification for all staff.")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path="/tmp/mfa-security.png")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await password_step(page, base, SAM[0], SAM[2])
    await expect(page.get_by_role("heading", name="Two-step verification")).to_be_visible()
    # The enrolment's code was used; the next step's code is fresh (and inside the accepted window).
    await page.get_by_label("Authentication code").fill(code_at(secret, 1))
    await page.get_by_role("button", name="Verify").click()
    await expect(page.get_by_role("button", name="Secure Messages")).to_be_visible()
    await sam.close()

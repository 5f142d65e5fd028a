"""The practice owner's Team page in headless Chromium, against the five real processes
and the seeded demo.

Dana (on a phone) invites Casey Nguyen as a team member; the invitation email
arrives; Casey opens its link in another browser, chooses a password and lands on
the staff home. Dana makes Casey a clinician, then deactivates Sam: Sam's open
page goes to sign-in on its next request. The audit trail page says the trail is
intact.
"""

from __future__ import annotations

import re

from playwright.async_api import expect

from bin.seed import DANA, SAM
from tests.e2e.test_credentials_flow import CREDENTIAL_LINK, choose_password, emails_with_subject, sign_in

CASEY = ("casey@lakeside.test", "Casey Nguyen")
PHONE = {"viewport": {"width": 375, "height": 740}, "is_mobile": True}
INVITATION_SUBJECT = "You're invited to secure messaging"
SESSION_ENDED = "You were signed out because your session ended."


async def no_sideways_scroll(page) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url


def member(page, name: str):
    return page.get_by_role("listitem").filter(has=page.get_by_text(name, exact=True))


async def test_the_owner_invites_changes_a_role_and_deactivates(browser, stack):
    base = stack.web_url
    dana = await browser.new_context(**PHONE)
    page = await dana.new_page()
    await sign_in(page, base, DANA[0], DANA[2])
    await expect(page.get_by_role("button", name="Secure Messages")).to_be_visible()
    await no_sideways_scroll(page)
    # On a phone the owner's links are in the top bar's menu.
    await page.get_by_text("Menu", exact=True).click()
    await page.get_by_role("link", name="Team").click()
    await expect(page.get_by_role("heading", name="Team", exact=True)).to_be_visible()
    await no_sideways_scroll(page)

    await page.get_by_label("Name").fill(CASEY[1])
    await page.get_by_label("Email").fill(CASEY[0])
    await page.get_by_label("Role", exact=True).first.select_option(label="Team member")
    await page.get_by_role("button", name="Send invitation").click()
    await expect(page.locator("main [role=status]")).to_have_text(f"Invitation sent to {CASEY[0]}.")
    await expect(member(page, CASEY[1])).to_contain_text("Team member")
    await no_sideways_scroll(page)
    await page.screenshot(path="/tmp/team-phone.png", full_page=True)

    [email] = await emails_with_subject(stack, CASEY[0], INVITATION_SUBJECT)
    link = CREDENTIAL_LINK.search(email["text"]).group(0)
    casey = await browser.new_context(viewport={"width": 1280, "height": 900})
    casey_page = await casey.new_page()
    await choose_password(casey_page, link, "lantern-over-still-water")
    await expect(casey_page).to_have_url(base + "/")
    await expect(casey_page.get_by_role("heading", name=f"Welcome, {CASEY[1]}")).to_be_visible()
    await expect(casey_page.get_by_role("link", name="Team")).to_have_count(0)  # not the owner
    await casey.close()

    # Dana makes Casey a clinician.
    casey_item = member(page, CASEY[1])
    await casey_item.get_by_label("Role").select_option(label="Clinician")
    await casey_item.get_by_role("button", name="Change role").click()
    await expect(page.locator("main [role=status]")).to_have_text(f"{CASEY[1]} is now a clinician.")
    await expect(member(page, CASEY[1])).to_contain_text("Role: Clinician")

    # Sam is signed in with a page open ...
    sam = await browser.new_context(viewport={"width": 1280, "height": 900})
    sam_page = await sam.new_page()
    await sign_in(sam_page, base, SAM[0], SAM[2])
    await expect(sam_page.get_by_role("button", name="Secure Messages")).to_be_visible()

    # ... when Dana deactivates Sam, after a confirmation.
    await member(page, SAM[1]).get_by_role("button", name="Deactivate").click()
    await expect(page.get_by_role("heading", name=f"Deactivate {SAM[1]}?")).to_be_visible()
    await no_sideways_scroll(page)
    await page.get_by_label(f"Yes, deactivate {SAM[1]}").check()
    await page.get_by_role("button", name="Deactivate").click()
    await expect(page.locator("main [role=status]")).to_have_text(f"{SAM[1]} was deactivated and signed out everywhere.")
    await expect(member(page, SAM[1])).to_contain_text("Deactivated")

    # Sam's open page: its next request finds the session over and goes to sign-in.
    if "/sign-in" not in sam_page.url:
        await sam_page.get_by_role("button", name="Secure Messages").click()
    await expect(sam_page).to_have_url(re.compile(r"/sign-in\?.*ended=1"))
    await expect(sam_page.get_by_text(SESSION_ENDED)).to_be_visible()
    await sam.close()

    # The audit trail, read-only.
    await page.get_by_role("link", name="Audit trail").click()
    await expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    await expect(page.get_by_text("The audit trail is intact.")).to_be_visible()
    await expect(page.get_by_role("cell", name="user.deactivate")).to_have_count(1)
    await no_sideways_scroll(page)
    await dana.close()

    # On a wide screen the owner's Team link sits in the top bar itself.
    wide = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await wide.new_page()
    await sign_in(page, base, DANA[0], DANA[2])
    await page.get_by_role("link", name="Team").click()
    await expect(page.get_by_role("heading", name="Team", exact=True)).to_be_visible()
    await expect(member(page, CASEY[1])).to_contain_text("Active")
    await page.screenshot(path="/tmp/team-wide.png", full_page=True)
    await wide.close()

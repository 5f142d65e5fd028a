"""Delivery status in the staff thread, Client Info's "Discreet notifications" and the owner's
"Send failed alerts again", over HTTP against the four real services.

The thread's status line comes from GET /api/conversations/{id}/deliveries: "Email sent" for
an alert that went out, "No email needed: ..." for a message inside a burst that one alert
covers, "Failed" for one that gave up; staff who may not see the conversation get 404,
clients 403, nobody 401. A discreet client's alert names no practice. The owner sends a
failed alert again and it arrives; other staff may not.
"""

from __future__ import annotations

import re
import uuid

from tests.web.test_clients_pages import get, post
from tests.web.test_ses_feedback import deliveries, open_thread, send, wait_for_status

PRACTICE_LINE = "Lakeside Counseling sent you a secure message."


def checkbox(page: str, name: str) -> str:
    match = re.search(rf'<input type="checkbox" name="{name}"[^>]*>', page)
    assert match, f"no {name} checkbox in the page"
    return match.group(0)


async def test_staff_see_where_their_alerts_are_and_nobody_else_does(stack):
    taylor = await stack.add_person("taylor", "client", "Taylor Reed")
    dana, sam = await stack.signed_in("dana"), await stack.signed_in("sam")
    try:
        thread = await open_thread(dana, taylor.user_id)
        first = await send(dana, thread, "First note for Taylor.")
        body = await wait_for_status(dana, thread, first, "Email sent")
        [email] = [d for d in body["deliveries"] if d["channel"] == "email"]
        assert email["state"] == "sent" and email["message_id"] == first and email["updated_at"]
        # Inside the burst one alert covers, the next message needs none.
        second = await send(dana, thread, "Second note for Taylor.")
        await wait_for_status(dana, thread, second, "No email needed: an earlier alert covers it")
        assert len(await stack.wait_for_emails(taylor.email, 1)) == 1

        status, everything = await deliveries(dana, thread)
        assert status == 200 and set(everything["status"]) == {first, second}
        status, only = await deliveries(dana, thread, f"?message_ids={first}")
        assert status == 200 and list(only["status"]) == [first]
        # Ids only: no message text, no address.
        text = str(everything)
        assert "note for Taylor" not in text and taylor.email not in text

        status, body = await deliveries(dana, thread, "?message_ids=" + ",".join(str(uuid.uuid4()) for _ in range(101)))
        assert status == 400 and "at most 100" in body["error"]
        # Sam (same practice, not in the conversation), a stranger, a made-up conversation.
        status, _ = await deliveries(sam, thread)
        assert status == 404
        status, _ = await deliveries(dana, str(uuid.uuid4()))
        assert status == 404
        async with stack.client_session() as anonymous:
            status, _ = await deliveries(anonymous, thread)
            assert status == 401

        # Between staff there is no client to report on.
        async with dana.post("/api/conversations", json={"participant_ids": [stack.people["sam"].user_id]}) as resp:
            assert resp.status in (200, 201), await resp.text()
            staff_thread = (await resp.json())["conversation"]["conversation_id"]
        await send(dana, staff_thread, "Team note.")
        status, body = await deliveries(dana, staff_thread)
        assert (status, body) == (200, {"deliveries": [], "status": {}})
    finally:
        await dana.close()
        await sam.close()


async def test_clients_cannot_ask_for_delivery_status(stack):
    jordan = stack.people["jordan"]
    async with await stack.signed_in("dana") as dana:
        thread = await open_thread(dana, jordan.user_id)
    portal = stack.client_session()
    try:
        async with portal.post("/sign-in", data={"email": jordan.email, "password": jordan.password, "portal": "1"},
                               allow_redirects=False) as resp:
            assert resp.status == 303
        status, body = await deliveries(portal, thread)
        assert status == 403 and body["error"]
    finally:
        await portal.close()


async def test_discreet_notifications_are_set_on_client_info_and_name_no_practice(stack):
    morgan = await stack.add_person("morgan", "client", "Morgan Vale")
    riley = await stack.add_person("riley", "client", "Riley Fox")
    form = {"display_name": "Morgan Vale", "email": morgan.email, "phone_number": "", "discreet": "1"}
    async with await stack.signed_in("dana") as dana:
        status, page, _ = await get(dana, f"/clients/{morgan.user_id}")
        assert status == 200 and "Discreet notifications" in page and "safety concerns" in page
        assert "checked" not in checkbox(page, "discreet")

        status, _, location = await post(dana, f"/clients/{morgan.user_id}", form)
        assert (status, location) == (303, f"/clients/{morgan.user_id}?saved=1")
        status, page, _ = await get(dana, location)
        assert status == 200 and "checked" in checkbox(page, "discreet") and "Saved." in page
        async with stack.database("notify") as conn:
            cur = await conn.execute("SELECT discreet FROM client_notification_settings WHERE client_id = %s",
                                     (morgan.user_id,))
            assert (await cur.fetchone())[0] is True

        # Morgan's alert names no practice; Riley's (not discreet) does.
        await send(dana, await open_thread(dana, morgan.user_id), "A note for Morgan.")
        await send(dana, await open_thread(dana, riley.user_id), "A note for Riley.")
        [discreet] = await stack.wait_for_emails(morgan.email, 1)
        [ordinary] = await stack.wait_for_emails(riley.email, 1)
        assert PRACTICE_LINE in ordinary["text"]
        assert "Lakeside" not in discreet["text"] + discreet["subject"] + discreet["html"]

        # Unticked and saved again: off.
        status, _, _ = await post(dana, f"/clients/{morgan.user_id}", {**form, "discreet": ""})
        assert status == 303
        status, page, _ = await get(dana, f"/clients/{morgan.user_id}")
        assert "checked" not in checkbox(page, "discreet")


async def test_the_owner_sends_failed_alerts_again(stack):
    casey = await stack.add_person("casey", "client", "Casey Dunn")
    dana, sam = await stack.signed_in("dana"), await stack.signed_in("sam")
    try:
        thread = await open_thread(dana, casey.user_id)
        message_id = await send(dana, thread, "Checking in.")
        await wait_for_status(dana, thread, message_id, "Email sent")
        assert len(await stack.wait_for_emails(casey.email, 1)) == 1
        # As if the provider had refused it after every retry.
        async with stack.database("notify") as conn:
            await conn.execute("UPDATE notification_jobs SET status = 'failed', last_error = 'provider error'"
                               " WHERE message_id = %s AND kind = 'message_email'", (message_id,))
        await wait_for_status(dana, thread, message_id, "Failed", within=2)

        status, page, _ = await get(sam, "/settings")
        assert status == 200 and "Send failed alerts again" not in page
        status, _, _ = await post(sam, "/settings/failed-alerts", {})
        assert status == 403

        status, page, _ = await get(dana, "/settings")
        assert status == 200 and "Send failed alerts again" in page
        status, _, location = await post(dana, "/settings/failed-alerts", {})
        assert (status, location) == (303, "/settings?requeued=1")
        status, page, _ = await get(dana, location)
        assert "1 failed alert is being sent again." in page
        await wait_for_status(dana, thread, message_id, "Email sent")
        assert len(await stack.wait_for_emails(casey.email, 2)) == 2

        status, _, location = await post(dana, "/settings/failed-alerts", {})
        assert location == "/settings?requeued=0"
        status, page, _ = await get(dana, location)
        assert "There were no failed alerts to send again." in page
    finally:
        await dana.close()
        await sam.close()

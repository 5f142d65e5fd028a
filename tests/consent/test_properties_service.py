"""The state machine property against the real service (gRPC, PostgreSQL), on fewer examples.

Random saves (numbers from a small pool, "Text message ok" on or off, deletes) and
replies (STOP, own words, START, HELP, chatter; from the client's number or another)
go through SetClientPhone and ReceiveInboundSms. After each one: what GetClientPhone
and CheckSmsAllowed say is the fold of what ListLedger returns, the stored current
number agrees with it, "Text message ok" shows ticked only while opted in, every
change by a reply got exactly one confirmation, chatter got one automatic answer per
number (and none after an opt-out), and no text is allowed to a number whose opt-out
stands: until START from it, or it is deleted and added again (A -> B -> A is still out).
"""

from __future__ import annotations

from datetime import UTC

import pytest
from confidant.consent.v1 import consent_service_pb2 as pb
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.consent.ledger import Entry, State, fold
from tests.consent.harness import new_phone
from tests.support import unique

_STATES = {
    State.NO_NUMBER: pb.CONSENT_STATE_NO_NUMBER,
    State.NOT_GIVEN: pb.CONSENT_STATE_NOT_GIVEN,
    State.OPTED_IN: pb.CONSENT_STATE_OPTED_IN,
    State.OPTED_OUT: pb.CONSENT_STATE_OPTED_OUT,
    State.CARRIER_BLOCKED: pb.CONSENT_STATE_CARRIER_BLOCKED,
}
CHATTER = "see you Tuesday"
BODIES = ("STOP", "please stop texting me", "start", "HELP", CHATTER)
OPT_OUTS = ("STOP", "please stop texting me")

# Indexes into the example's own pool of three numbers; None: delete / the current number.
saves = st.tuples(st.just("save"), st.sampled_from((None, 0, 1, 2)), st.booleans())
replies = st.tuples(st.just("reply"), st.sampled_from(BODIES), st.sampled_from((None, 0, 1, 2)))


@pytest.fixture(scope="module")
async def practice(stack):
    return await stack.people.practice()


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(st.one_of(saves, replies), min_size=1, max_size=8))
# A stopped number changed to another and back, ticked each time: still out.
@example(steps=[("save", 0, True), ("reply", "STOP", None), ("save", 1, True), ("save", 0, True)])
async def test_what_the_service_says_is_the_fold_of_its_ledger(stack, practice, steps):
    owner, client = practice.owner, await stack.people.user(practice)
    pool = [new_phone() for _ in range(3)]
    stopped: set[str] = set()  # the model: numbers whose opt-out stands
    answered: set[str] = set()  # numbers that got the automatic answer (all within the day)
    for kind, value, index in steps:
        shown_before = await stack.get_phone(owner, client)
        current = shown_before.phone_number
        if kind == "save":
            number = pool[value][0] if value is not None else ""
            if not number:
                stopped.discard(current)  # deleting a number lifts its opt-out
            await stack.set_phone(owner, client, number, index)
        else:
            sender = pool[index][1] if index is not None else current
            if not sender:
                continue
            message_id = unique("SM-prop")
            answer = await stack.inbound(sender, value, message_id, provider="sns")
            if sender == current:
                if value in OPT_OUTS:
                    stopped.add(sender)
                elif value == "start":
                    stopped.discard(sender)
            if value == CHATTER:
                # Only the client's number is known; no answer after an opt-out, one per day.
                due = sender == current and shown_before.state != pb.CONSENT_STATE_OPTED_OUT and sender not in answered
                assert answer.action == (pb.INBOUND_ACTION_AUTO_REPLY if due else pb.INBOUND_ACTION_NONE)
                assert bool(answer.reply_text) == due
                if due:
                    answered.add(sender)
            answers = [e for e in await stack.ledger(owner, client)
                       if e.event in ("confirmation_sent", "auto_reply_sent") and e.provider_message_id == message_id]
            expected = 1 if (sender == current and answer.action != pb.INBOUND_ACTION_NONE) else 0
            assert len(answers) == expected

        shown = await stack.get_phone(owner, client)
        entries = await stack.ledger(owner, client)
        folded = fold(Entry(e.event, e.phone_number or None, e.created_at.ToDatetime(tzinfo=UTC)) for e in entries)
        assert (shown.phone_number, shown.text_ok, shown.state) == (
            folded.phone or "", folded.sms_allowed, _STATES[folded.state])
        if folded.since is None:
            assert not shown.HasField("state_since")
        else:
            assert shown.state_since.ToDatetime(tzinfo=UTC) == folded.since
        assert await stack.sql(
            "SELECT phone_e164, text_ok FROM phone_numbers WHERE client_id = %s", (client.user_id,)
        ) in ([], [(folded.phone, folded.sms_allowed)])
        assert shown.text_ok == (shown.state == pb.CONSENT_STATE_OPTED_IN)
        allowed = await stack.sms_allowed(client)
        assert allowed.allowed == folded.sms_allowed
        if shown.phone_number in stopped:
            assert not allowed.allowed and shown.state == pb.CONSENT_STATE_OPTED_OUT

"""A client's date of birth: optional, checked, stored with the client and returned wherever
clients are; with the email it tells apart two clients of the same name."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime, timedelta

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as pb

from services.auth.profiles import parse_date_of_birth
from services.common.errors import InvalidArgument
from tests.auth.harness import PASSWORD, AuthHarness, rpc_error

FORMAT = "Enter the date of birth as YYYY-MM-DD, for example 1984-07-23."
NOT_A_DATE = "This date of birth does not exist: check the month and the day (YYYY-MM-DD)."
FUTURE = "The date of birth cannot be in the future."
TOO_EARLY = "The date of birth cannot be before 1900-01-01."


async def _create(auth: AuthHarness, caller, name: str, born: str = "", email: str = "") -> pb.User:
    reply = await auth.stub.CreateClient(
        pb.CreateClientRequest(email=email or auth.email("client"), display_name=name, date_of_birth=born),
        metadata=caller,
        timeout=5,
    )
    return reply.client


async def _update(auth: AuthHarness, caller, client: pb.User, born: str, name: str = "") -> pb.User:
    reply = await auth.stub.UpdateClient(
        pb.UpdateClientRequest(
            client_id=client.user_id, email=client.email, display_name=name or client.display_name, date_of_birth=born
        ),
        metadata=caller,
        timeout=5,
    )
    return reply.client


def test_the_rules_of_a_date_of_birth():
    today = date(2026, 3, 10)
    assert parse_date_of_birth("", today) is None
    assert parse_date_of_birth("  ", today) is None
    assert parse_date_of_birth(" 1984-07-23 ", today) == date(1984, 7, 23)
    assert parse_date_of_birth("1900-01-01", today) == date(1900, 1, 1)
    assert parse_date_of_birth("2026-03-10", today) == today  # born today
    assert parse_date_of_birth("2024-02-29", today) == date(2024, 2, 29)
    for value, message in (
        ("07/23/1984", FORMAT),
        ("1984-7-23", FORMAT),
        ("19840723", FORMAT),  # ISO, but not the form people are asked for
        ("1984-07-23T00:00", FORMAT),
        ("١٩٨٤-٠٧-٢٣", FORMAT),  # other digits
        ("1984-02-30", NOT_A_DATE),
        ("2025-02-29", NOT_A_DATE),
        ("1984-13-01", NOT_A_DATE),
        ("2026-03-11", FUTURE),
        ("1899-12-31", TOO_EARLY),
        ("0000-01-01", NOT_A_DATE),
    ):
        with pytest.raises(InvalidArgument) as err:
            parse_date_of_birth(value, today)
        assert err.value.message == message, value


async def test_a_date_of_birth_is_stored_and_returned_wherever_clients_are(auth: AuthHarness):
    practice, owner = await auth.practice()
    me = auth.as_user(owner)
    # Two clients of the same name: the date of birth tells them apart.
    first = await _create(auth, me, "Jordan Lee", " 1984-07-23 ", email="jordan.lee@client.test")
    second = await _create(auth, me, "Jordan Lee", email="jlee@client.test")
    assert (first.date_of_birth, second.date_of_birth) == ("1984-07-23", "")

    got = await auth.stub.GetUsers(pb.GetUsersRequest(user_ids=[first.user_id, second.user_id]), metadata=me,
                                   timeout=5)
    assert [u.date_of_birth for u in got.users] == ["1984-07-23", ""]
    found = await auth.stub.SearchDirectory(pb.SearchDirectoryRequest(query="jordan"), metadata=me, timeout=5)
    assert {(u.email, u.date_of_birth) for u in found.users} == {
        ("jordan.lee@client.test", "1984-07-23"), ("jlee@client.test", "")
    }
    listed = await auth.stub.ListClients(pb.ListClientsRequest(query="lee"), metadata=me, timeout=5)
    assert {(u.user_id, u.date_of_birth) for u in listed.clients} == {
        (first.user_id, "1984-07-23"), (second.user_id, "")
    }
    reader = await auth.service_account(owner, ["clients.read"])
    listed = await auth.stub.ListClients(pb.ListClientsRequest(), metadata=reader, timeout=5)
    assert {u.date_of_birth for u in listed.clients} == {"1984-07-23", ""}
    [(stored,)] = await auth.execute("SELECT date_of_birth FROM users WHERE user_id = %s", (first.user_id,))
    assert stored == date(1984, 7, 23)


async def test_update_client_sends_the_whole_profile_and_the_audit_names_fields_only(auth: AuthHarness):
    practice, owner = await auth.practice()
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Riley Park", password=PASSWORD)
    me = auth.as_user(clinician)
    client = await _create(auth, auth.as_user(owner), "Alex Chen")
    assert (await _update(auth, me, client, "1990-01-31")).date_of_birth == "1990-01-31"
    assert (await _update(auth, me, client, "1990-01-31")).date_of_birth == "1990-01-31"  # unchanged
    assert (await _update(auth, me, client, "1991-01-31", name="Alex Q. Chen")).date_of_birth == "1991-01-31"
    # Empty means not known: it clears the stored date.
    assert (await _update(auth, me, client, "")).date_of_birth == ""
    assert await auth.execute("SELECT date_of_birth FROM users WHERE user_id = %s", (client.user_id,)) == [(None,)]

    rows = await auth.audit_rows("client.update")
    assert [(r[0], r[2], r[4]["fields"]) for r in rows] == [
        (clinician.user_id, client.user_id, ["date_of_birth"]),
        (clinician.user_id, client.user_id, []),
        (clinician.user_id, client.user_id, ["display_name", "date_of_birth"]),
        (clinician.user_id, client.user_id, ["display_name", "date_of_birth"]),
    ]
    dump = str(await auth.execute("SELECT detail::text FROM audit_events"))
    assert "1990" not in dump and "1991" not in dump


async def test_a_bad_date_of_birth_is_refused_with_a_sentence_and_nothing_is_stored(auth: AuthHarness):
    practice, owner = await auth.practice()
    me = auth.as_user(owner)
    client = await _create(auth, me, "Alex Chen", "1990-01-31")
    # "Today" is the practice's: a date that is today somewhere east of it is still in its future.
    tomorrow = (datetime.now(zoneinfo.ZoneInfo("America/New_York")) + timedelta(days=1)).date().isoformat()
    today = datetime.now(zoneinfo.ZoneInfo("America/New_York")).date().isoformat()
    for value, message in (
        ("31/01/1990", FORMAT),
        ("1990-02-30", NOT_A_DATE),
        (tomorrow, FUTURE),
        ("2999-01-01", FUTURE),
        ("1899-12-31", TOO_EARLY),
    ):
        for call in (
            _create(auth, me, "Someone New", value),
            _update(auth, me, client, value),
        ):
            err = await rpc_error(call)
            assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message), value
    assert await auth.execute("SELECT count(*) FROM users WHERE display_name = 'Someone New'") == [(0,)]
    assert (await _update(auth, me, client, today)).date_of_birth == today
    assert len(await auth.audit_rows("client.create")) == 1


async def test_only_clients_have_a_date_of_birth(auth: AuthHarness):
    _, owner = await auth.practice()
    with pytest.raises(psycopg.errors.CheckViolation):
        await auth.execute("UPDATE users SET date_of_birth = '1980-01-01' WHERE user_id = %s", (owner.user_id,))

"""A practice's profile: its time zone and how clients reach it (GetPractice, UpdatePractice)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
from confidant.auth.v1 import auth_service_pb2 as pb
from confidant.auth.v1 import auth_service_pb2_grpc as pb_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from services.auth.app import MIGRATIONS, create_service
from services.auth.config import AuthConfig
from services.common.config import ConfigError
from services.common.db import apply_migrations
from tests.auth.harness import PASSWORD, AuthHarness, rpc_error
from tests.support import channel, running, service_env

INVALID_EMAIL = "Enter a valid email address, like name@example.com."


async def _update(auth: AuthHarness, caller, mask=(), **fields):
    return (
        await auth.stub.UpdatePractice(
            pb.UpdatePracticeRequest(practice=pb.Practice(**fields), update_mask=FieldMask(paths=list(mask))),
            metadata=caller,
            timeout=5,
        )
    ).practice


async def _get(auth: AuthHarness, caller, practice_id: str) -> pb.Practice:
    return (
        await auth.stub.GetPractice(pb.GetPracticeRequest(practice_id=practice_id), metadata=caller, timeout=5)
    ).practice


async def _create(auth: AuthHarness, time_zone: str = "") -> pb.Practice:
    reply = await auth.stub.CreatePractice(
        pb.CreatePracticeRequest(
            name="Lakeside Counseling", owner_email=auth.email("owner"), owner_display_name="Dana Rivera",
            owner_password=PASSWORD, time_zone=time_zone,
        ),
        metadata=auth.web,
        timeout=10,
    )
    return reply.practice


# -- the time zone ------------------------------------------------------------------------


async def test_a_new_practice_gets_the_time_zone_it_names_or_the_default(auth: AuthHarness):
    practice = await _create(auth)
    assert (practice.time_zone, practice.contact_phone, practice.contact_email) == ("America/New_York", "", "")
    # IANA names, in their canonical spelling whatever the case typed.
    assert (await _create(auth, " europe/london ")).time_zone == "Europe/London"
    assert (await _create(auth, "Pacific/Honolulu")).time_zone == "Pacific/Honolulu"
    for bad in ("Mars/Olympus_Mons", "EST-ish", "../../etc/passwd", "x" * 300):
        err = await rpc_error(_create(auth, bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "Choose a time zone from the IANA list, like America/New_York or Europe/London."
    stored = await auth.execute("SELECT time_zone FROM practices WHERE practice_id = %s", (practice.practice_id,))
    assert stored == [("America/New_York",)]


async def test_the_default_time_zone_is_a_setting(fresh_database, keys_dir, tokens):
    url = await fresh_database("auth")
    env = service_env(keys_dir, auth_database_url=url, auth_default_time_zone="america/chicago")
    config = AuthConfig.load(env)
    assert config.default_time_zone == "America/Chicago"
    async with running(await create_service(config)) as address, channel(address) as ch:
        auth = AuthHarness(pb_grpc.AuthServiceStub(ch), url, tokens, keys_dir)
        assert (await _create(auth)).time_zone == "America/Chicago"
        assert (await _create(auth, "Asia/Tokyo")).time_zone == "Asia/Tokyo"
    assert AuthConfig.load(service_env(keys_dir, auth_database_url=url)).default_time_zone == "America/New_York"
    with pytest.raises(ConfigError) as err:
        AuthConfig.load(service_env(keys_dir, auth_database_url=url, auth_default_time_zone="Eastern"))
    assert "CONFIDANT_AUTH_DEFAULT_TIME_ZONE" in str(err.value) and "America/New_York" in str(err.value)


async def test_practices_made_before_the_profile_existed_get_the_default_zone(pg, tmp_path: Path):
    """Migration 0009 on a database that already holds a practice and its people."""
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if int(path.name[:4]) < 9:
            shutil.copy(path, earlier / path.name)
    url = pg.create_database(f"auth_upgrade_{uuid.uuid4().hex[:8]}")
    await apply_migrations(url, earlier)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        practice_id = str(uuid.uuid4())
        await conn.execute("INSERT INTO practices (practice_id, name) VALUES (%s, 'Old')", (practice_id,))
        await conn.execute(
            "INSERT INTO users (practice_id, role, email, display_name)"
            " VALUES (%s, 'client', 'ana.alvarez@client.test', 'Ana Álvarez')",
            (practice_id,),
        )
    assert await apply_migrations(url, MIGRATIONS) == [9]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT time_zone, contact_phone, contact_email FROM practices")
        assert await cur.fetchall() == [("America/New_York", "", "")]
        cur = await conn.execute("SELECT date_of_birth, search_words FROM users")
        assert await cur.fetchall() == [(None, " ana alvarez ana alvarez client test")]


# -- who may read it ------------------------------------------------------------------------


async def test_get_practice_returns_the_profile_to_services_and_the_practices_own_people(auth: AuthHarness):
    practice, owner = await auth.practice()
    updated = await _update(
        auth, auth.as_user(owner), time_zone="America/Denver", contact_phone="(212) 555-0101",
        contact_email="Front.Desk@Lakeside.TEST", name="Lakeside Counseling",
    )
    assert (updated.time_zone, updated.contact_phone, updated.contact_email) == (
        "America/Denver", "+12125550101", "front.desk@lakeside.test"
    )
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Riley Park", password=PASSWORD)
    team_member = await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee")
    system = await auth.service_account(owner, ["messaging.read"])
    callers = [
        *(auth.as_service(name) for name in ("web", "messaging", "consent", "notify")),
        auth.as_user(owner), auth.as_user(clinician), auth.as_user(team_member),
        auth.as_user(client), auth.as_user(client, "magic_link", "c-1"), system,
    ]
    for caller in callers:
        assert await _get(auth, caller, practice.practice_id) == updated

    # Nobody else's practice: another practice's owner, client or service account.
    other, other_owner = await auth.practice("Hillside Therapy", "Riley Stone")
    other_client = await auth.user(other.practice_id, pb.ROLE_CLIENT, "Alex Chen")
    other_system = await auth.service_account(other_owner, ["messaging.read"])
    for caller in (auth.as_user(other_owner), auth.as_user(other_client, "magic_link", "c-2"), other_system):
        err = await rpc_error(_get(auth, caller, practice.practice_id))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # A practice that does not exist is refused before it is looked up for people, not found for services.
    err = await rpc_error(_get(auth, auth.as_user(owner), str(uuid.uuid4())))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(_get(auth, auth.notify, str(uuid.uuid4())))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- UpdatePractice ---------------------------------------------------------------------------


async def test_the_owner_changes_the_fields_in_the_mask_and_the_audit_names_them(auth: AuthHarness):
    practice, owner = await auth.practice()
    me = auth.as_user(owner)
    changed = await _update(auth, me, ["contact_phone"], contact_phone="212 555 0101", name="ignored")
    assert (changed.name, changed.time_zone, changed.contact_phone) == (
        "Lakeside Counseling", "America/New_York", "+12125550101"
    )
    changed = await _update(
        auth, me, ["time_zone", "contact_email"], time_zone="europe/dublin", contact_email=" Hello@Lakeside.test "
    )
    assert (changed.time_zone, changed.contact_email, changed.contact_phone) == (
        "Europe/Dublin", "hello@lakeside.test", "+12125550101"
    )
    # An empty mask changes every field: what is left empty is cleared (but the name and zone are required).
    changed = await _update(auth, me, name="  Lakeside   Family Counseling ", time_zone="America/New_York")
    assert changed == pb.Practice(
        practice_id=practice.practice_id, name="Lakeside Family Counseling", time_zone="America/New_York"
    )
    # The request's practice_id is ignored: the caller's own practice changes.
    other, _ = await auth.practice("Hillside Therapy", "Riley Stone")
    changed = await _update(auth, me, ["name"], practice_id=other.practice_id, name="Lakeside Counseling")
    assert changed.practice_id == practice.practice_id
    assert (await _get(auth, auth.web, other.practice_id)).name == "Hillside Therapy"
    # Saving the same values changes nothing, and says so.
    await _update(auth, me, ["name"], name="Lakeside Counseling")

    rows = await auth.audit_rows("practice.update")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(owner.user_id, "success", practice.practice_id,
                                                         practice.practice_id)] * 5
    assert [r[4]["fields"] for r in rows] == [
        ["contact_phone"],
        ["time_zone", "contact_email"],
        ["name", "time_zone", "contact_phone", "contact_email"],
        ["name"],
        [],
    ]
    dump = str(await auth.execute("SELECT detail::text FROM audit_events"))
    assert "555" not in dump and "hello" not in dump.lower() and "Dublin" not in dump


async def test_bad_updates_are_refused_whole(auth: AuthHarness):
    practice, owner = await auth.practice()
    me = auth.as_user(owner)
    await _update(auth, me, ["contact_phone"], contact_phone="+1 212 555 0101")
    for mask, fields, message in (
        (["nickname"], {}, "The update mask names 'nickname'; a practice's fields are name, time_zone,"
                           " contact_phone, contact_email."),
        (["practice.name"], {"name": "X"}, None),
        (["name"], {"name": "   "}, "The practice name is required."),
        ([], {"name": "Lakeside", "time_zone": ""}, "Choose a time zone from the IANA list, like America/New_York"
                                                   " or Europe/London."),
        (["contact_phone"], {"contact_phone": "555-0101"}, None),
        (["contact_phone"], {"contact_phone": "call us"}, None),
        (["name", "contact_email"], {"name": "Renamed", "contact_email": "not-an-email@x"}, INVALID_EMAIL),
    ):
        err = await rpc_error(_update(auth, me, mask, **fields))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (mask, fields)
        if message:
            assert err.details() == message
    assert "area code" in (await rpc_error(_update(auth, me, ["contact_phone"], contact_phone="555-0101"))).details()
    # Nothing was half-written: the name and number are as they were, and nothing was audited as changed.
    assert (await _get(auth, me, practice.practice_id)) == pb.Practice(
        practice_id=practice.practice_id, name="Lakeside Counseling", time_zone="America/New_York",
        contact_phone="+12125550101",
    )
    assert [r[4]["fields"] for r in await auth.audit_rows("practice.update")] == [["contact_phone"]]


async def test_only_the_owner_updates_the_practice(auth: AuthHarness):
    practice, owner = await auth.practice()
    clinician = await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Riley Park", password=PASSWORD)
    team_member = await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee")
    system = await auth.service_account(owner, ["clients.write"])
    for caller in (
        auth.as_user(clinician), auth.as_user(team_member), auth.as_user(client),
        auth.as_user(client, "magic_link", "c-1"), system, auth.web, auth.notify,
    ):
        err = await rpc_error(_update(auth, caller, ["name"], name="Taken Over"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(
        auth.stub.UpdatePractice(pb.UpdatePracticeRequest(practice=pb.Practice(name="X")), timeout=5)
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await _get(auth, auth.web, practice.practice_id)).name == "Lakeside Counseling"
    assert await auth.audit_rows("practice.update") == []

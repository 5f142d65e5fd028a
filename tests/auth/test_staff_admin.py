"""Practice administration: the staff list, role changes, deactivation, and the
owner's audit RPCs (confidant.audit.v1.AuditService) over auth's append-only, hash-chained audit trail."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import grpc
import psycopg
import pytest
from confidant.audit.v1 import audit_service_pb2 as audit_pb
from confidant.auth.v1 import auth_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.tokens import TokenVerifier
from tests.auth.harness import PASSWORD, rpc_error

WRONG = "Email or password is incorrect."
ENDED = "Your session has ended."


async def sign_in(auth, email: str, password: str = PASSWORD):
    return await auth.stub.SignIn(
        pb.SignInRequest(email=email, password=password, client_address="198.51.100.4"), metadata=auth.web,
        timeout=10,
    )


async def authenticate(auth, token: str):
    return await auth.stub.AuthenticateSession(
        pb.AuthenticateSessionRequest(session_token=token), metadata=auth.web, timeout=10
    )


@pytest.fixture
async def team(auth):
    practice, owner = await auth.practice()
    pid = practice.practice_id
    clinician = await auth.user(pid, pb.ROLE_CLINICIAN, "Morgan Hale", password=PASSWORD)
    member = await auth.user(pid, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    client = await auth.user(pid, pb.ROLE_CLIENT, "Riley Park", password="maple-window-77")
    return practice, owner, clinician, member, client


async def test_staff_are_listed_for_the_practices_staff_only(auth, team):
    practice, owner, clinician, member, client = team
    _, other_owner = await auth.practice("Elsewhere Therapy", "Quinn Ash")
    listing = await auth.stub.ListStaff(pb.ListStaffRequest(), metadata=auth.as_user(member), timeout=10)
    assert {s.user.user_id for s in listing.staff} == {owner.user_id, clinician.user_id, member.user_id}
    assert not any(s.deactivated or s.totp_enabled for s in listing.staff)
    err = await rpc_error(auth.stub.ListStaff(pb.ListStaffRequest(), metadata=auth.as_user(client), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.ListStaff(pb.ListStaffRequest(), metadata=auth.web, timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    other = await auth.stub.ListStaff(pb.ListStaffRequest(), metadata=auth.as_user(other_owner), timeout=10)
    assert [s.user.user_id for s in other.staff] == [other_owner.user_id]


async def test_the_owner_changes_roles_between_clinician_and_team_member(auth, team):
    practice, owner, clinician, member, client = team
    as_owner = auth.as_user(owner)
    changed = await auth.stub.ChangeRole(
        pb.ChangeRoleRequest(user_id=clinician.user_id, role=pb.ROLE_TEAM_MEMBER), metadata=as_owner, timeout=10
    )
    assert changed.user.role == pb.ROLE_TEAM_MEMBER
    # The next access token carries the new role.
    session = await sign_in(auth, clinician.email)
    principal = TokenVerifier.from_keys_dir(auth.keys_dir).verify(
        (await authenticate(auth, session.session_token)).access_token
    )
    assert principal.role == "team_member"
    back = await auth.stub.ChangeRole(
        pb.ChangeRoleRequest(user_id=clinician.user_id, role=pb.ROLE_CLINICIAN), metadata=as_owner, timeout=10
    )
    assert back.user.role == pb.ROLE_CLINICIAN
    rows = await auth.audit_rows("user.role_change")
    assert [(r[0], r[2], r[4]) for r in rows] == [
        (owner.user_id, clinician.user_id, {"from": "clinician", "to": "team_member"}),
        (owner.user_id, clinician.user_id, {"from": "team_member", "to": "clinician"}),
    ]

    async def refused(metadata, user_id, role):
        err = await rpc_error(auth.stub.ChangeRole(pb.ChangeRoleRequest(user_id=user_id, role=role),
                                                   metadata=metadata, timeout=10))
        return err.code()

    assert await refused(auth.as_user(clinician), member.user_id, pb.ROLE_CLINICIAN) == grpc.StatusCode.PERMISSION_DENIED
    assert await refused(as_owner, owner.user_id, pb.ROLE_TEAM_MEMBER) == grpc.StatusCode.FAILED_PRECONDITION
    assert await refused(as_owner, client.user_id, pb.ROLE_CLINICIAN) == grpc.StatusCode.FAILED_PRECONDITION
    assert await refused(as_owner, member.user_id, pb.ROLE_OWNER) == grpc.StatusCode.INVALID_ARGUMENT
    assert await refused(as_owner, member.user_id, pb.ROLE_CLIENT) == grpc.StatusCode.INVALID_ARGUMENT
    assert await refused(as_owner, "not-an-id", pb.ROLE_CLINICIAN) == grpc.StatusCode.INVALID_ARGUMENT
    _, stranger = await auth.practice("Elsewhere Therapy", "Quinn Ash")
    assert await refused(as_owner, stranger.user_id, pb.ROLE_CLINICIAN) == grpc.StatusCode.NOT_FOUND


async def test_deactivation_ends_sessions_at_once_and_refuses_sign_in_like_a_wrong_password(auth, team):
    practice, owner, clinician, member, client = team
    first, second = await sign_in(auth, member.email), await sign_in(auth, member.email)
    await authenticate(auth, first.session_token)

    err = await rpc_error(auth.stub.DeactivateUser(pb.DeactivateUserRequest(user_id=member.user_id),
                                                   metadata=auth.as_user(clinician), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await auth.stub.DeactivateUser(pb.DeactivateUserRequest(user_id=member.user_id),
                                           metadata=auth.as_user(owner), timeout=10)
    assert reply.sessions_ended == 2
    for token in (first.session_token, second.session_token):
        err = await rpc_error(authenticate(auth, token))
        assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, ENDED)
    # The same answer as a wrong password, right password or not.
    err = await rpc_error(sign_in(auth, member.email))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)
    wrong = await rpc_error(sign_in(auth, clinician.email, "not-the-password-at-all"))
    assert (wrong.code(), wrong.details()) == (err.code(), err.details())

    listing = await auth.stub.ListStaff(pb.ListStaffRequest(), metadata=auth.as_user(owner), timeout=10)
    assert {s.user.user_id: s.deactivated for s in listing.staff}[member.user_id] is True
    again = await auth.stub.DeactivateUser(pb.DeactivateUserRequest(user_id=member.user_id),
                                           metadata=auth.as_user(owner), timeout=10)
    assert again.sessions_ended == 0
    rows = await auth.audit_rows("user.deactivate")
    assert [(r[0], r[2], r[4]) for r in rows] == [(owner.user_id, member.user_id, {"sessions_ended": 2})]
    # A deactivated person's role cannot be changed either.
    err = await rpc_error(auth.stub.ChangeRole(pb.ChangeRoleRequest(user_id=member.user_id, role=pb.ROLE_CLINICIAN),
                                               metadata=auth.as_user(owner), timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    for user_id, code in ((owner.user_id, grpc.StatusCode.FAILED_PRECONDITION),
                          (client.user_id, grpc.StatusCode.FAILED_PRECONDITION),
                          ("00000000-0000-0000-0000-000000000000", grpc.StatusCode.NOT_FOUND)):
        err = await rpc_error(auth.stub.DeactivateUser(pb.DeactivateUserRequest(user_id=user_id),
                                                       metadata=auth.as_user(owner), timeout=10))
        assert err.code() == code


async def test_the_owner_lists_and_verifies_the_audit_trail_which_is_append_only(auth, team):
    practice, owner, clinician, member, client = team
    _, stranger = await auth.practice("Elsewhere Therapy", "Quinn Ash")
    await sign_in(auth, member.email)
    as_owner = auth.as_user(owner)

    page = await auth.audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(page_size=2), metadata=as_owner, timeout=10)
    assert len(page.events) == 2 and page.next_page_token
    assert page.events[0].event_id > page.events[1].event_id
    assert page.events[0].action == "sign_in" and page.events[0].actor == member.user_id
    assert json.loads(page.events[0].detail_json)["client_address"] == "198.51.100.4"
    everything, token = list(page.events), page.next_page_token
    while token:
        page = await auth.audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(page_size=2, page_token=token),
                                               metadata=as_owner, timeout=10)
        everything += page.events
        token = page.next_page_token
    ids = [e.event_id for e in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    # Only this practice's rows.
    [(ours,)] = await auth.execute("SELECT count(*) FROM audit_events WHERE practice_id = %s AND event_id <= %s",
                                   (practice.practice_id, ids[0]))
    assert len(ids) == ours
    assert stranger.user_id not in {e.actor for e in everything} | {e.target for e in everything}

    for metadata in (auth.as_user(clinician), auth.as_user(client), auth.web):
        for call in (auth.audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(), metadata=metadata, timeout=10),
                     auth.audit.VerifyAuditTrail(audit_pb.VerifyAuditTrailRequest(), metadata=metadata, timeout=10)):
            assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(page_token="x"), metadata=as_owner,
                                                    timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    verified = await auth.audit.VerifyAuditTrail(audit_pb.VerifyAuditTrailRequest(), metadata=as_owner, timeout=10)
    [(count,)] = await auth.execute("SELECT count(*) FROM audit_events")
    assert verified.intact and 0 < verified.rows <= count

    # The application cannot rewrite or remove history ...
    for statement in ("UPDATE audit_events SET outcome = 'success' WHERE event_id = 1",
                      "DELETE FROM audit_events WHERE event_id = 1",
                      "TRUNCATE audit_events"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            await auth.execute(statement)
    # ... and a row edited behind the trigger's back is detected.
    await auth.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
    await auth.execute(
        "UPDATE audit_events SET outcome = 'failure' WHERE action = 'practice.create' AND practice_id = %s",
        (practice.practice_id,),
    )
    await auth.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
    broken = await auth.audit.VerifyAuditTrail(audit_pb.VerifyAuditTrailRequest(), metadata=as_owner, timeout=10)
    assert not broken.intact
    assert [r[1] for r in await auth.audit_rows("audit.verify")] == ["intact", "broken"]


def _stamp(moment) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_the_audit_trail_filters_by_person_client_action_and_period(auth, team):
    practice, owner, clinician, member, client = team
    await sign_in(auth, member.email)
    await sign_in(auth, clinician.email)
    as_owner = auth.as_user(owner)

    async def listed(**filters) -> list[audit_pb.AuditEvent]:
        page = await auth.audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(page_size=500, **filters),
                                                metadata=as_owner, timeout=10)
        assert not page.next_page_token
        return list(page.events)

    everything = await listed()
    assert {e.service for e in everything} == {"auth"}
    by_member = await listed(actor=member.user_id)
    assert by_member and {e.actor for e in by_member} == {member.user_id}
    assert len(by_member) < len(everything)
    sign_ins = await listed(actions=["sign_in"])
    assert {e.action for e in sign_ins} == {"sign_in"}
    assert {e.actor for e in sign_ins} >= {member.user_id, clinician.user_id}
    # Rows about the client: those whose target is the client.
    about_client = await listed(client_id=client.user_id)
    assert about_client and all(e.target == client.user_id or e.client_id == client.user_id for e in about_client)
    # A period: the newest sign-in alone.
    newest = sign_ins[0].occurred_at
    only = await listed(actions=["sign_in"], since=newest,
                        until=_stamp(newest.ToDatetime(tzinfo=UTC) + timedelta(milliseconds=1)))
    assert [e.event_id for e in only] == [sign_ins[0].event_id]
    # Filters combine.
    assert await listed(actor=member.user_id, actions=["user.deactivate"]) == []

    for bad in ({"since": sign_ins[0].occurred_at, "until": sign_ins[0].occurred_at},
                {"actions": [""]}, {"actor": "x\x00y"}):
        err = await rpc_error(auth.audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(**bad),
                                                         metadata=as_owner, timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

"""The practice owner's pages: the Team (invite, change roles, deactivate) and a
read-only view of auth's audit trail.

Only the owner sees them (403 for other staff); auth checks the same again on
every call. Results are shown after a redirect that carries only the person's id
(``?invited=<id>``), never a name or an email address. Deactivation asks for a
confirmation on a page of its own (the CSP allows no inline script).
"""

from __future__ import annotations

import asyncio
import functools

import grpc
from aiohttp import web
from confidant.audit.v1 import audit_service_pb2 as audit_pb
from confidant.auth.v1 import auth_service_pb2 as auth_pb

from services.web.errors import HttpError, from_rpc_error
from services.web.presenters import when
from services.web.rendering import render_staff
from services.web.resources import BACKENDS
from services.web.session import Person, role_name, staff_page
from services.web.views import see_other

OWNER_ONLY = "Only the practice owner can manage the team."
AUDIT_OWNER_ONLY = "Only the practice owner can see the audit trail."
AUDIT_ROWS = 50

# The roles an owner gives, in the order the select lists them.
ASSIGNABLE = (("clinician", "Clinician", auth_pb.ROLE_CLINICIAN), ("team_member", "Team member",
                                                                    auth_pb.ROLE_TEAM_MEMBER))
ROLE_ENUMS = {name: enum for name, _, enum in ASSIGNABLE}
ROLE_TITLES = {"owner": "Owner", "clinician": "Clinician", "team_member": "Team member"}
MAX_NAME = 200
MAX_EMAIL = 254

# Answers of auth that a person can act on from the page.
_SHOWN = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
          grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _shown(exc: grpc.aio.AioRpcError) -> tuple[str, int]:
    if exc.code() not in _SHOWN:
        raise exc
    error = from_rpc_error(exc)
    return error.message, error.status


def owner_page(message: str):
    """A staff page for the practice owner only: other staff get 403."""

    def decorate(handler):
        @functools.wraps(handler)
        async def inner(request: web.Request, person: Person) -> web.StreamResponse:
            if person.role != "owner":
                raise HttpError(403, message)
            return await handler(request, person)

        return staff_page(inner)

    return decorate


# ---------------------------------------------------------------- what the pages show


def _member(member: auth_pb.StaffMember) -> dict:
    """A row of the Team list; the owner and deactivated people have no controls."""
    user = member.user
    role = role_name(user)
    return {"user_id": user.user_id, "name": user.display_name, "email": user.email, "role": role,
            "role_title": ROLE_TITLES.get(role, role), "deactivated": member.deactivated,
            "has_password": user.has_password, "manageable": role != "owner" and not member.deactivated}


async def _layout(request: web.Request, person: Person, template: str, title: str, context: dict,
                  status: int = 200) -> web.Response:
    roles = [(value, label) for value, label, _ in ASSIGNABLE]
    return await render_staff(request, person, template, {**context, "title": title, "roles": roles}, status)


async def _staff(request: web.Request, person: Person) -> list[auth_pb.StaffMember]:
    reply = await request.app[BACKENDS].auth.ListStaff(auth_pb.ListStaffRequest(), metadata=person.metadata)
    return list(reply.staff)


def _find(staff: list[auth_pb.StaffMember], user_id: str) -> auth_pb.StaffMember | None:
    return next((m for m in staff if m.user.user_id == user_id), None)


def _notice(request: web.Request, staff: list[auth_pb.StaffMember]) -> str:
    """The result of the form just sent, from the id the redirect carried."""
    for key in ("invited", "role_changed", "deactivated"):
        member = _find(staff, request.query.get(key, ""))
        if member is None:
            continue
        name = member.user.display_name
        if key == "invited":
            return f"Invitation sent to {member.user.email}."
        if key == "role_changed":
            return f"{name} is now a {ROLE_TITLES.get(role_name(member.user), '').lower()}."
        return f"{name} was deactivated and signed out everywhere."
    return ""


async def _team(request: web.Request, person: Person, *, error: str = "", status: int = 200,
                form: dict[str, str] | None = None) -> web.Response:
    staff = await _staff(request, person)
    # The owner first, then by name.
    staff.sort(key=lambda m: (role_name(m.user) != "owner", m.deactivated, m.user.display_name.lower()))
    form = form or {}
    context = {
        "error": error, "notice": "" if error else _notice(request, staff), "max_name": MAX_NAME,
        "max_email": MAX_EMAIL,
        "form": {"name": form.get("name", ""), "email": form.get("email", ""), "role": form.get("role", "clinician")},
        "members": [_member(m) for m in staff],
    }
    return await _layout(request, person, "staff/team.html", "Team", context, status)


# ---------------------------------------------------------------- the Team page


@owner_page(OWNER_ONLY)
async def team_page(request: web.Request, person: Person) -> web.Response:
    return await _team(request, person)


@owner_page(OWNER_ONLY)
async def invite(request: web.Request, person: Person) -> web.Response:
    posted = await request.post()
    form = {
        "name": " ".join(str(posted.get("name", "")).split())[:MAX_NAME],
        "email": str(posted.get("email", "")).strip()[:MAX_EMAIL],
        "role": str(posted.get("role", "")),
    }
    if not form["name"] or not form["email"]:
        return await _team(request, person, error="Enter the person's name and email address.", status=400,
                           form=form)
    if form["role"] not in ROLE_ENUMS:
        return await _team(request, person, error="Choose a role: Clinician or Team member.", status=400,
                           form=form)
    auth = request.app[BACKENDS].auth
    try:
        created = await auth.CreateUser(
            auth_pb.CreateUserRequest(practice_id=person.user.practice_id, role=ROLE_ENUMS[form["role"]],
                                      email=form["email"], display_name=form["name"]),
            metadata=person.metadata,
        )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _team(request, person, error=message, status=status, form=form)
    user_id = created.user.user_id
    try:
        await auth.InviteUser(auth_pb.InviteUserRequest(user_id=user_id), metadata=person.metadata)
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _team(request, person, status=status,
                           error=f"{form['name']} was added, but the invitation was not sent: {message} "
                                 "Try “Send invitation again”.")
    return see_other(f"/account/team?invited={user_id}")


@owner_page(OWNER_ONLY)
async def invite_again(request: web.Request, person: Person) -> web.Response:
    user_id = request.match_info["user_id"]
    try:
        await request.app[BACKENDS].auth.InviteUser(auth_pb.InviteUserRequest(user_id=user_id),
                                                    metadata=person.metadata)
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _team(request, person, error=message, status=status)
    return see_other(f"/account/team?invited={user_id}")


@owner_page(OWNER_ONLY)
async def change_role(request: web.Request, person: Person) -> web.Response:
    user_id = request.match_info["user_id"]
    posted = await request.post()
    role = str(posted.get("role", ""))
    if role not in ROLE_ENUMS:
        return await _team(request, person, error="Choose a role: Clinician or Team member.", status=400)
    try:
        await request.app[BACKENDS].auth.ChangeRole(
            auth_pb.ChangeRoleRequest(user_id=user_id, role=ROLE_ENUMS[role]), metadata=person.metadata
        )
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _team(request, person, error=message, status=status)
    return see_other(f"/account/team?role_changed={user_id}")


# ---------------------------------------------------------------- deactivation, confirmed on its own page


async def _confirm_page(request: web.Request, person: Person, error: str = "", status: int = 200) -> web.Response:
    member = _find(await _staff(request, person), request.match_info["user_id"])
    if member is None:
        raise HttpError(404, "This person is not in your practice.")
    if role_name(member.user) == "owner":
        raise HttpError(409, "The practice owner cannot be deactivated.")
    user = member.user
    return await _layout(request, person, "staff/deactivate.html", f"Deactivate {user.display_name}",
                         {"member": user, "error": error}, status)


@owner_page(OWNER_ONLY)
async def deactivate_confirm(request: web.Request, person: Person) -> web.Response:
    return await _confirm_page(request, person)


@owner_page(OWNER_ONLY)
async def deactivate(request: web.Request, person: Person) -> web.Response:
    user_id = request.match_info["user_id"]
    posted = await request.post()
    if posted.get("confirm") != "yes":
        return await _confirm_page(request, person, error="Tick the box to confirm the deactivation.", status=400)
    try:
        await request.app[BACKENDS].auth.DeactivateUser(auth_pb.DeactivateUserRequest(user_id=user_id),
                                                        metadata=person.metadata)
    except grpc.aio.AioRpcError as exc:
        message, status = _shown(exc)
        return await _team(request, person, error=message, status=status)
    return see_other(f"/account/team?deactivated={user_id}")


# ---------------------------------------------------------------- the audit trail (read-only)


@owner_page(AUDIT_OWNER_ONLY)
async def audit_page(request: web.Request, person: Person) -> web.Response:
    trail = request.app[BACKENDS].audit["auth"]
    verified, listing = await asyncio.gather(
        trail.VerifyAuditTrail(audit_pb.VerifyAuditTrailRequest(), metadata=person.metadata),
        trail.ListAuditEvents(audit_pb.ListAuditEventsRequest(page_size=AUDIT_ROWS), metadata=person.metadata),
    )
    events = [{"when": when(e.occurred_at), "action": e.action, "outcome": e.outcome, "actor": e.actor}
              for e in listing.events[:AUDIT_ROWS]]
    context = {"intact": verified.intact, "limit": AUDIT_ROWS, "rows": verified.rows, "events": events}
    return await _layout(request, person, "staff/audit.html", "Audit trail", context)

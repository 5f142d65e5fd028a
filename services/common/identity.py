"""Who is calling: the principal carried by every gRPC call's access token."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from services.common.errors import PermissionDenied, Unauthenticated

STAFF_ROLES = frozenset({"owner", "clinician", "team_member"})
# A practice system signed in with a client id and secret; reaches only what its scopes allow.
SERVICE_ACCOUNT = "service_account"


@dataclass(frozen=True)
class Principal:
    subject: str  # a user id, or "service:<name>" for one of our services
    role: str  # owner | clinician | team_member | client | service_account | service
    practice_id: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    # "full" or "magic_link" for people; "" for services.
    session_kind: str = ""
    # A magic-link session reaches only this conversation.
    conversation_id: str = ""
    # When the access token expires (epoch seconds); 0 when unknown. Long-lived
    # calls (event streams) end then, so an ended session stops receiving.
    expires_at: int = field(default=0, compare=False)

    @property
    def is_service(self) -> bool:
        return self.role == "service"

    @property
    def service_name(self) -> str:
        return self.subject.removeprefix("service:") if self.is_service else ""

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def is_client(self) -> bool:
        return self.role == "client"

    @property
    def is_service_account(self) -> bool:
        return self.role == SERVICE_ACCOUNT

    @property
    def user_id(self) -> str:
        return "" if self.is_service else self.subject


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("confidant_principal", default=None)


def set_caller(principal: Principal | None) -> contextvars.Token:
    return _current.set(principal)


def reset_caller(token: contextvars.Token) -> None:
    _current.reset(token)


def caller() -> Principal:
    """The authenticated caller of the current gRPC call."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("This call needs an access token.")
    return principal


def require_service(*names: str) -> Principal:
    """Only our own named services may make this call."""
    principal = caller()
    if not principal.is_service or (names and principal.service_name not in names):
        raise PermissionDenied("This call is reserved for internal services.")
    return principal


def require_user(*roles: str) -> Principal:
    """A signed-in person (of one of ``roles`` when given) must make this call.

    Service accounts pass only where ``roles`` names them explicitly.
    """
    principal = caller()
    if principal.is_service or not principal.practice_id:
        raise PermissionDenied("This call must be made on behalf of a signed-in person.")
    if principal.is_service_account and SERVICE_ACCOUNT not in roles:
        raise PermissionDenied("This call is not open to service accounts.")
    if roles and principal.role not in roles:
        raise PermissionDenied("Your role does not allow this.")
    return principal


def require_staff() -> Principal:
    return require_user(*STAFF_ROLES)


def require_scope(scope: str) -> Principal:
    """A practice's service account holding ``scope`` must make this call."""
    principal = caller()
    if not principal.is_service_account or not principal.practice_id:
        raise PermissionDenied("This call is reserved for service accounts.")
    if scope not in principal.scopes:
        raise PermissionDenied(f"This service account does not have the {scope} scope.")
    return principal

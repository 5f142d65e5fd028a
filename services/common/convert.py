"""Conversions between protobuf types and our own, shared by every service."""

from __future__ import annotations

from datetime import datetime

from confidant.auth.v1 import auth_service_pb2 as auth_pb
from google.protobuf.timestamp_pb2 import Timestamp

# The auth contract's Role enum and the role names used in tokens and code.
ROLE_TO_PB = {
    "owner": auth_pb.ROLE_OWNER,
    "clinician": auth_pb.ROLE_CLINICIAN,
    "team_member": auth_pb.ROLE_TEAM_MEMBER,
    "client": auth_pb.ROLE_CLIENT,
    "service_account": auth_pb.ROLE_SERVICE_ACCOUNT,
}
PB_TO_ROLE = {value: name for name, value in ROLE_TO_PB.items()}


def role_name(role: int) -> str:
    """The role name of an auth Role enum value ("unknown" for unspecified)."""
    return PB_TO_ROLE.get(role, "unknown")


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp

"""The demo practice of development mode, created through the services' own RPCs.

Seeded once: if Dana can already sign in, nothing is done, so restarts keep
whatever people did in the demo.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import grpc
from confidant.auth.v1 import auth_service_pb2 as auth_pb
from confidant.auth.v1 import auth_service_pb2_grpc as auth_grpc
from confidant.consent.v1 import consent_service_pb2 as consent_pb
from confidant.consent.v1 import consent_service_pb2_grpc as consent_grpc
from confidant.messaging.v1 import messaging_service_pb2 as msg_pb
from confidant.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from google.protobuf import field_mask_pb2

from services.common.clients import bearer, open_channel
from services.common.tokens import ServiceTokenSource, TokenSigner

log = logging.getLogger("confidant.seed")

PRACTICE = "Lakeside Counseling"
DANA = ("dana@lakeside.test", "Dana Rivera", "quiet-harbor-2026")
SAM = ("sam@lakeside.test", "Sam Okafor", "quiet-harbor-2026")
JORDAN = ("jordan@client.test", "Jordan Lee", "maple-window-77")
ALEX = ("alex@client.test", "Alex Chen")
JORDAN_PHONE = "+1 212 555 0101"
JORDAN_BIRTHDAY = "1990-04-12"
TIME_ZONE = "America/New_York"
PRACTICE_PHONE = "+1 212 555 0100"
PRACTICE_EMAIL = "hello@lakeside.test"
# Two clients of the same name, as every practice has: told apart by email and date of birth.
NAMESAKES = [("maria.garcia@client.test", "Maria Garcia", "1984-06-02"),
             ("mgarcia.work@client.test", "Maria Garcia", "1997-11-19")]

_FIRST = ["Avery", "Blake", "Camila", "Diego", "Elena", "Farah", "Gabriel", "Hana", "Isaac", "Julia",
          "Kenji", "Lucía", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sofia", "Tomás"]
_LAST = ["Adams", "Brooks", "Castillo", "Dubois", "Eriksen", "Fischer", "García", "Hughes", "Ibáñez",
         "Jensen", "Kowalski"]


def generated_clients(count: int = 200) -> list[tuple[str, str]]:
    people = []
    for n, (first, last) in enumerate(itertools.islice(itertools.product(_FIRST, _LAST), count)):
        ascii_first = first.encode("ascii", "ignore").decode().lower()
        ascii_last = last.encode("ascii", "ignore").decode().lower()
        people.append((f"{ascii_first}.{ascii_last}.{n}@client.test", f"{first} {last}"))
    return people


async def seed_demo(addresses: dict[str, str], keys_dir: Path) -> bool:
    """Create the demo practice unless it exists; True when it was created now."""
    web = ServiceTokenSource(TokenSigner.from_keys_dir(keys_dir, "web"))
    auth_ch = open_channel(addresses["auth"], web.token, deadline=30)
    msg_ch = open_channel(addresses["messaging"], web.token)
    consent_ch = open_channel(addresses["consent"], web.token)
    try:
        auth = auth_grpc.AuthServiceStub(auth_ch)
        try:
            await auth.SignIn(auth_pb.SignInRequest(email=DANA[0], password=DANA[2], client_address="127.0.0.1"))
            return False
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        created = await auth.CreatePractice(
            auth_pb.CreatePracticeRequest(
                name=PRACTICE, owner_email=DANA[0], owner_display_name=DANA[1], owner_password=DANA[2],
                time_zone=TIME_ZONE,
            )
        )
        practice_id = created.practice.practice_id

        async def add(role, email, name, password=""):
            reply = await auth.CreateUser(
                auth_pb.CreateUserRequest(
                    practice_id=practice_id, role=role, email=email, display_name=name, password=password
                )
            )
            return reply.user.user_id

        await add(auth_pb.ROLE_TEAM_MEMBER, *SAM)
        jordan_id = await add(auth_pb.ROLE_CLIENT, *JORDAN)
        await add(auth_pb.ROLE_CLIENT, *ALEX)
        for email, name in generated_clients():
            await add(auth_pb.ROLE_CLIENT, email, name)

        # Dana enables Jordan and records the phone number, as she would in the UI.
        signed_in = await auth.SignIn(
            auth_pb.SignInRequest(email=DANA[0], password=DANA[2], client_address="127.0.0.1")
        )
        session = await auth.AuthenticateSession(
            auth_pb.AuthenticateSessionRequest(session_token=signed_in.session_token)
        )
        as_dana = bearer(session.access_token)
        await auth.UpdatePractice(
            auth_pb.UpdatePracticeRequest(
                practice=auth_pb.Practice(contact_phone=PRACTICE_PHONE, contact_email=PRACTICE_EMAIL),
                update_mask=field_mask_pb2.FieldMask(paths=["contact_phone", "contact_email"]),
            ),
            metadata=as_dana,
        )
        await auth.UpdateClient(
            auth_pb.UpdateClientRequest(client_id=jordan_id, email=JORDAN[0], display_name=JORDAN[1],
                                        date_of_birth=JORDAN_BIRTHDAY),
            metadata=as_dana,
        )
        for email, name, born in NAMESAKES:
            await auth.CreateClient(auth_pb.CreateClientRequest(email=email, display_name=name, date_of_birth=born),
                                    metadata=as_dana)
        await msg_grpc.MessagingServiceStub(msg_ch).EnableClientMessaging(
            msg_pb.EnableClientMessagingRequest(client_id=jordan_id), metadata=as_dana
        )
        await consent_grpc.ConsentServiceStub(consent_ch).SetClientPhone(
            consent_pb.SetClientPhoneRequest(client_id=jordan_id, phone_number=JORDAN_PHONE, text_ok=True),
            metadata=as_dana,
        )
        await auth.SignOut(auth_pb.SignOutRequest(session_token=signed_in.session_token))
        return True
    finally:
        for ch in (auth_ch, msg_ch, consent_ch):
            await ch.close()

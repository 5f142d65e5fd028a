"""Every email address auth accepts is checked (email-validator, no DNS) and stored normalized."""

from __future__ import annotations

import grpc
import pytest
from confidant.auth.v1 import auth_service_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from services.auth.profiles import email_lookup_key, normalize_email
from services.common.errors import InvalidArgument
from tests.auth.harness import PASSWORD, AuthHarness, rpc_error

INVALID = "Enter a valid email address, like name@example.com."
REFUSED = ("not-an-email@x", "a@b", "@x.com", "a b@x.com", "not-an-email", "two@@client.test", "a@b..test", "")


def test_the_rules_of_an_address():
    for value in REFUSED:
        with pytest.raises(InvalidArgument) as err:
            normalize_email(value, allow_test_domains=True)
        assert err.value.message == INVALID, value
    # Normalized: the domain (and, by our rule, the whole address) lower-cased, IDNA decoded, trimmed.
    assert normalize_email("  Dana.Rivera@Lakeside.TEST ", allow_test_domains=True) == "dana.rivera@lakeside.test"
    assert normalize_email("Álex@Client.test", allow_test_domains=True) == "álex@client.test"
    assert normalize_email("user@XN--BCHER-KVA.example", allow_test_domains=False) == "user@bücher.example"
    # The reserved .test domain of the demo and the tests is for development only.
    with pytest.raises(InvalidArgument):
        normalize_email("dana@lakeside.test", allow_test_domains=False)
    assert normalize_email("dana@lakeside.example.com", allow_test_domains=False) == "dana@lakeside.example.com"
    # Sign-in looks up what was typed, never refusing it: normalized when valid, lower-cased otherwise.
    assert email_lookup_key(" Dana@Lakeside.TEST", allow_test_domains=True) == "dana@lakeside.test"
    assert email_lookup_key(" A B@X ", allow_test_domains=True) == "a b@x"


async def test_every_address_auth_accepts_is_checked(auth: AuthHarness):
    practice, owner = await auth.practice()
    me = auth.as_user(owner)
    client = (
        await auth.stub.CreateClient(
            pb.CreateClientRequest(email="jordan@client.test", display_name="Jordan Lee"), metadata=me, timeout=5
        )
    ).client
    calls = {
        "CreatePractice": lambda email: auth.stub.CreatePractice(
            pb.CreatePracticeRequest(name="Other Practice", owner_email=email, owner_display_name="Riley Stone",
                                     owner_password=PASSWORD),
            metadata=auth.web, timeout=10,
        ),
        "CreateUser": lambda email: auth.stub.CreateUser(
            pb.CreateUserRequest(practice_id=practice.practice_id, role=pb.ROLE_CLINICIAN, email=email,
                                 display_name="Casey Wong"),
            metadata=me, timeout=5,
        ),
        "CreateClient": lambda email: auth.stub.CreateClient(
            pb.CreateClientRequest(email=email, display_name="Alex Chen"), metadata=me, timeout=5
        ),
        "UpdateClient": lambda email: auth.stub.UpdateClient(
            pb.UpdateClientRequest(client_id=client.user_id, email=email, display_name="Jordan Lee"),
            metadata=me, timeout=5,
        ),
        "UpdatePractice": lambda email: auth.stub.UpdatePractice(
            pb.UpdatePracticeRequest(practice=pb.Practice(contact_email=email),
                                     update_mask=FieldMask(paths=["contact_email"])),
            metadata=me, timeout=5,
        ),
        "RequestPasswordReset": lambda email: auth.stub.RequestPasswordReset(
            pb.RequestPasswordResetRequest(email=email, client_address="198.51.100.4"), metadata=auth.web, timeout=5
        ),
    }
    for rpc, call in calls.items():
        for email in ("not-an-email@x", "a@b", "@x.com", "a b@x.com"):
            err = await rpc_error(call(email))
            assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, INVALID), (rpc, email)
    # Nothing was made or changed by the refusals.
    assert await auth.execute("SELECT count(*) FROM practices") == [(1,)]
    assert await auth.execute("SELECT email FROM users ORDER BY email") == sorted([(owner.email,),
                                                                                  ("jordan@client.test",)])
    assert await auth.execute("SELECT contact_email FROM practices") == [("",)]

    # Accepted addresses are stored in their normalized form.
    made = (await calls["CreateClient"](" Alex.Chen@CLIENT.Test ")).client
    assert made.email == "alex.chen@client.test"
    updated = (await calls["UpdateClient"]("Jordan.Lee@Client.TEST")).client
    assert updated.email == "jordan.lee@client.test"
    staff = (await calls["CreateUser"]("Casey@Lakeside.TEST")).user
    assert staff.email == "casey@lakeside.test"
    practice_reply = await calls["UpdatePractice"](" Front.Desk@Lakeside.TEST")
    assert practice_reply.practice.contact_email == "front.desk@lakeside.test"
    other = await calls["CreatePractice"]("Riley@Hillside.TEST")
    assert other.owner.email == "riley@hillside.test"
    # And sign-in finds an account however its address is typed.
    reply = await auth.stub.SignIn(
        pb.SignInRequest(email=" RILEY@hillside.test", password=PASSWORD, client_address="198.51.100.5"),
        metadata=auth.web, timeout=10,
    )
    assert reply.user.user_id == other.owner.user_id

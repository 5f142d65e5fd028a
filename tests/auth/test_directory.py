"""SearchDirectory: staff search their practice's clients and team by name or email."""

from __future__ import annotations

import time
import uuid

import grpc
from confidant.auth.v1 import auth_service_pb2 as pb

from tests.auth.harness import PASSWORD, rpc_error


async def _search(auth, caller, query="", roles=(), page_size=0) -> list[str]:
    reply = await auth.stub.SearchDirectory(
        pb.SearchDirectoryRequest(query=query, roles=list(roles), page_size=page_size),
        metadata=caller,
        timeout=5,
    )
    return [u.display_name for u in reply.users]


async def test_search_is_case_and_accent_insensitive_and_partial(auth):
    practice, owner = await auth.practice()
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Álex Chen", email="alex@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee", email="jordan@client.test")
    await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Zoë Ångström", email="z.a@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Percent 100%", email="pct@client.test")
    other, _ = await auth.practice("Hillside Therapy", "Riley Stone")
    await auth.user(other.practice_id, pb.ROLE_CLIENT, "Alexis Other")
    me = auth.as_user(owner)

    assert await _search(auth, me, "alex") == ["Álex Chen"]
    assert await _search(auth, me, "ÁLEX") == ["Álex Chen"]
    assert await _search(auth, me, "che") == ["Álex Chen"]  # a word's prefix
    assert await _search(auth, me, "  chen   alex ") == ["Álex Chen"]  # every word, any order
    assert await _search(auth, me, "zoe angstrom") == ["Zoë Ångström"]
    assert await _search(auth, me, "jordan@client") == ["Jordan Lee"]  # email, partially
    assert await _search(auth, me, "CLIENT.TEST") == [
        "Álex Chen",
        "Jordan Lee",
        "Percent 100%",
        "Zoë Ångström",
    ]
    assert await _search(auth, me, "okaf") == ["Sam Okafor"]
    assert await _search(auth, me, "nobody") == []
    # LIKE wildcards in the query are plain characters.
    assert await _search(auth, me, "%") == ["Percent 100%"]
    assert await _search(auth, me, "n_l") == []  # as a wildcard it would match "Jordan Lee"


async def test_empty_query_lists_the_first_page_in_name_order_with_role_filter(auth):
    practice, owner = await auth.practice(owner_name="Dana Rivera")
    await auth.user(practice.practice_id, pb.ROLE_TEAM_MEMBER, "Sam Okafor", password=PASSWORD)
    await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Casey Wong", password=PASSWORD)
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "alex Chen")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Émile Zola")
    # A service account exists in the practice but is never listed.
    await auth.execute(
        "INSERT INTO users (practice_id, role, email, display_name) VALUES (%s, 'service_account', %s, 'Aardvark EHR')",
        (practice.practice_id, f"ehr-{uuid.uuid4().hex}@systems.test"),
    )
    me = auth.as_user(owner)
    assert await _search(auth, me) == ["alex Chen", "Casey Wong", "Dana Rivera", "Émile Zola", "Sam Okafor"]
    assert await _search(auth, me, roles=[pb.ROLE_CLIENT]) == ["alex Chen", "Émile Zola"]
    assert await _search(auth, me, roles=[pb.ROLE_OWNER, pb.ROLE_CLINICIAN, pb.ROLE_TEAM_MEMBER]) == [
        "Casey Wong",
        "Dana Rivera",
        "Sam Okafor",
    ]
    assert await _search(auth, me, page_size=2) == ["alex Chen", "Casey Wong"]
    for roles, page_size in (([pb.ROLE_SERVICE_ACCOUNT], 0), ([pb.ROLE_UNSPECIFIED], 0), ([], -1)):
        err = await rpc_error(
            auth.stub.SearchDirectory(
                pb.SearchDirectoryRequest(roles=roles, page_size=page_size), metadata=me, timeout=5
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Searches that return clients are audited, with ids only.
    rows = await auth.audit_rows("directory.search")
    assert rows and rows[-1][0] == owner.user_id and "alex" not in str(rows)


async def test_only_staff_may_search(auth):
    practice, _ = await auth.practice()
    client = await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jordan Lee")
    for caller in (auth.as_user(client), auth.as_user(client, "magic_link", "c-1"), auth.web):
        err = await rpc_error(
            auth.stub.SearchDirectory(pb.SearchDirectoryRequest(), metadata=caller, timeout=5)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await rpc_error(auth.stub.SearchDirectory(pb.SearchDirectoryRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_search_stays_fast_with_hundreds_of_clients(auth):
    practice, owner = await auth.practice()
    await auth.execute(
        "INSERT INTO users (practice_id, role, email, display_name)"
        " SELECT %s, 'client', 'client' || n || '@bulk.test', 'Client ' || lpad(n::text, 4, '0')"
        " FROM generate_series(1, 600) AS n",
        (practice.practice_id,),
    )
    me = auth.as_user(owner)
    started = time.perf_counter()
    first_page = await _search(auth, me)
    assert first_page[:2] == ["Client 0001", "Client 0002"] and len(first_page) == 20
    assert len(await _search(auth, me, "client", page_size=500)) == 100  # capped
    assert await _search(auth, me, "0421") == ["Client 0421"]
    assert await _search(auth, me, "client421@") == ["Client 0421"]
    assert time.perf_counter() - started < 2.0

"""SearchDirectory (and ListClients' search): staff search their practice's clients and team by name
or email; matches at the start of a word come first, and every page is one statement."""

from __future__ import annotations

import time
import uuid

import grpc
from confidant.auth.v1 import auth_service_pb2 as pb

from services.auth.handlers import _page_token
from services.auth.storage import AuthStorage, DirectoryQuery
from services.common.db import open_pool
from tests.auth.harness import PASSWORD, rpc_error
from tests.messaging.test_list_queries import CountingPool  # how messaging's list tests count statements


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


# -- ranking and paging (issue 11, defect 17: "Al" found twenty Kowalskis and stopped at 20) ------


async def _ranked_practice(auth):
    """A practice with 25 clients whose names hold "al" only inside a word, and a few whose
    name or email has a word starting with "al" (one of them staff)."""
    practice, owner = await auth.practice()
    first_names = ("Maria", "Piotr", "Ewa", "Jan", "Zofia")
    for n in range(25):
        # Created out of name order; the number keeps each name unique.
        name = f"{first_names[n % 5]} Kowalski {(n * 7) % 25:02d}"
        await auth.user(practice.practice_id, pb.ROLE_CLIENT, name, email=f"k{n}@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Ana Alvarez", email="ana.a@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Álvaro Díaz", email="diaz@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Jo Smith", email="al@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Alex Chen", email="chen@client.test")
    await auth.user(practice.practice_id, pb.ROLE_CLINICIAN, "Alan Park", password=PASSWORD)
    await auth.user(practice.practice_id, pb.ROLE_CLIENT, "Lucía Ibáñez", email="lucia@client.test")
    other, _ = await auth.practice("Hillside Therapy", "Riley Stone")
    await auth.user(other.practice_id, pb.ROLE_CLIENT, "Alexis Other", email="alexis@client.test")
    kowalskis = sorted(
        (f"{first_names[n % 5]} Kowalski {(n * 7) % 25:02d}" for n in range(25)), key=str.lower
    )
    return practice, owner, kowalskis


async def _every_page(call, page_size: int) -> tuple[list[pb.User], int]:
    """Follow next_page_token to the end: every row, and how many pages it took."""
    seen, token, pages = [], "", 0
    while True:
        reply = await call(page_size, token)
        pages += 1
        rows = list(getattr(reply, "users", None) or reply.clients)
        seen.extend(rows)
        token = reply.next_page_token
        if not token:
            return seen, pages
        assert len(rows) == page_size
        assert not any(word in token.lower() for word in ("al", "kowalski", "chen"))  # ids only, never names


async def test_word_starts_come_first_and_paging_lists_every_match_once(auth):
    practice, owner, kowalskis = await _ranked_practice(auth)
    me = auth.as_user(owner)
    word_starts = ["Alan Park", "Alex Chen", "Álvaro Díaz", "Ana Alvarez", "Jo Smith"]

    async def search(page_size, token):
        return await auth.stub.SearchDirectory(
            pb.SearchDirectoryRequest(query="Al", page_size=page_size, page_token=token), metadata=me, timeout=5
        )

    first = await search(20, "")
    assert [u.display_name for u in first.users][:5] == word_starts  # "Alex", "Alvarez", "al@…" first
    assert first.next_page_token  # 30 matches: the 21st is no longer silently dropped
    seen, pages = await _every_page(search, 7)
    assert pages == 5
    assert [u.display_name for u in seen] == word_starts + kowalskis
    assert len({u.user_id for u in seen}) == 30 and {u.practice_id for u in seen} == {practice.practice_id}

    # ListClients ranks and pages the same way (its clients only).
    async def list_clients(page_size, token):
        return await auth.stub.ListClients(
            pb.ListClientsRequest(query="al", page_size=page_size, page_token=token), metadata=me, timeout=5
        )

    seen, pages = await _every_page(list_clients, 4)
    assert [u.display_name for u in seen] == word_starts[1:] + kowalskis and pages == 8
    # Accents and case still do not matter, and every word must match.
    assert await _search(auth, me, "lucia iban") == ["Lucía Ibáñez"]
    assert await _search(auth, me, "alvaro") == ["Álvaro Díaz"]
    assert await _search(auth, me, "al kowalski 07") == [name for name in kowalskis if name.endswith(" 07")]
    # Without a query: name order, paged the same way.
    seen, _ = await _every_page(
        lambda size, token: auth.stub.ListClients(
            pb.ListClientsRequest(page_size=size, page_token=token), metadata=me, timeout=5
        ),
        6,
    )
    assert [u.display_name for u in seen] == sorted(
        word_starts[1:] + kowalskis + ["Lucía Ibáñez"], key=lambda n: n.lower().replace("á", "a")
    )


async def test_a_ranked_page_is_one_statement(auth):
    practice, owner, _ = await _ranked_practice(auth)
    pool = await open_pool(auth.database_url, 1, 2)
    try:
        counting = CountingPool(pool)
        storage = AuthStorage(counting)
        pages, after = [], None
        while True:
            counting.statements = 0
            rows = await storage.directory_page(
                DirectoryQuery(practice.practice_id, ("client",), ["al"], after, 6)
            )
            assert counting.statements == 1
            pages.append(rows)
            if len(rows) < 6:
                break
            user, rank = rows[-1]
            after = (rank, user.user_id)
        ranks = [rank for page in pages for _, rank in page]
        assert ranks == [0] * 4 + [1] * 25
        # A page that continues after nobody of the practice is refused (one more look, only then).
        _, stranger = await auth.practice("Elsewhere Clinic", "Sky Doe")
        counting.statements = 0
        assert await storage.directory_page(
            DirectoryQuery(practice.practice_id, ("client",), ["al"], (0, stranger.user_id), 6)
        ) is None
        assert counting.statements == 2
    finally:
        await pool.close()


async def test_a_bad_page_token_is_invalid_argument(auth):
    practice, owner, _ = await _ranked_practice(auth)
    me = auth.as_user(owner)
    first = await auth.stub.SearchDirectory(
        pb.SearchDirectoryRequest(query="al", page_size=3), metadata=me, timeout=5
    )
    _, stranger = await auth.practice("Elsewhere Clinic", "Sky Doe")
    staff = first.users[0]  # Alan Park, a clinician
    for query, roles, token in (
        ("al", [], "!!!"),
        ("al", [], "AAAA"),
        ("al", [], "x" * 300),
        ("al", [], _page_token(stranger.user_id, 0)),  # another practice's person
        ("al", [], _page_token(staff.user_id, 2)),  # a rank a one-word search cannot have
        ("al", [pb.ROLE_CLIENT], _page_token(staff.user_id, 0)),  # not one of the roles searched
    ):
        err = await rpc_error(
            auth.stub.SearchDirectory(
                pb.SearchDirectoryRequest(query=query, roles=roles, page_token=token), metadata=me, timeout=5
            )
        )
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "The page token is not valid.")
    # The real token goes on where the first page ended.
    rest = await auth.stub.SearchDirectory(
        pb.SearchDirectoryRequest(query="al", page_size=3, page_token=first.next_page_token), metadata=me, timeout=5
    )
    assert [u.display_name for u in rest.users] == ["Ana Alvarez", "Jo Smith", rest.users[2].display_name]
    assert "Kowalski" in rest.users[2].display_name

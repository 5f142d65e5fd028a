"""The practice owner's view of a service's audit trail: ``confidant.audit.v1.AuditService``.

Every service with an audit trail (services/common/audit.py) serves the same contract for
its own table, so the web edge can merge auth's sign-ins, messaging's reads and sends,
consent's changes and notify's deliveries into one page. Listing and verifying are
themselves recorded in the trail. Rows are about a client when the row's target is the
client or its detail carries ``client_id``; filtering by client matches either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from confidant.audit.v1 import audit_service_pb2 as pb
from confidant.audit.v1 import audit_service_pb2_grpc as pb_grpc
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import audit
from services.common.convert import timestamp
from services.common.errors import InvalidArgument
from services.common.identity import require_user

log = logging.getLogger("confidant.audit")

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_ACTIONS = 50
FULL_NAME = "confidant.audit.v1.AuditService"


@dataclass(frozen=True)
class AuditFilter:
    """Which rows of a practice's trail to list; every part is optional."""

    actor: str = ""
    client_id: str = ""
    actions: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class AuditRow:
    event_id: int
    occurred_at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict
    client_id: str


class AuditTrail:
    """Reads one service's ``audit_events`` table (the pool's database)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def practice_page(
        self, practice_id: str, filters: AuditFilter, before_event_id: int | None, limit: int
    ) -> list[AuditRow]:
        """The practice's rows matching ``filters``, newest first, older than ``before_event_id``."""
        clauses = ["practice_id = %(practice)s"]
        params: dict[str, object] = {"practice": practice_id, "limit": limit}
        if before_event_id is not None:
            clauses.append("event_id < %(before)s")
            params["before"] = before_event_id
        if filters.actor:
            clauses.append("actor = %(actor)s")
            params["actor"] = filters.actor
        if filters.client_id:
            clauses.append("(target = %(client)s OR detail->>'client_id' = %(client)s)")
            params["client"] = filters.client_id
        if filters.actions:
            clauses.append("action = ANY(%(actions)s)")
            params["actions"] = list(filters.actions)
        if filters.since is not None:
            clauses.append("occurred_at >= %(since)s")
            params["since"] = filters.since
        if filters.until is not None:
            clauses.append("occurred_at < %(until)s")
            params["until"] = filters.until
        query = (
            "SELECT event_id, occurred_at, actor, action, target, outcome, detail,"
            " COALESCE(detail->>'client_id', '') AS client_id FROM audit_events"
            f" WHERE {' AND '.join(clauses)} ORDER BY event_id DESC LIMIT %(limit)s"
        )
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            return [AuditRow(**row) for row in await cur.fetchall()]

    async def verify(self) -> tuple[bool, int]:
        """Whether the whole chain is intact, and how many rows it has (one snapshot for both)."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            intact = await audit.verify_chain(conn)
            cur = await conn.execute("SELECT count(*) FROM audit_events")
            (rows,) = await cur.fetchone()
        return intact, rows

    async def record(self, **fields: object) -> None:
        async with self._pool.connection() as conn:
            await audit.record(conn, **fields)


def _moment(stamp, name: str) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"The {name} time is out of range.") from exc


def parse_filter(request: pb.ListAuditEventsRequest) -> AuditFilter:
    """The request's filters, checked."""
    for name, value in (("actor", request.actor), ("client", request.client_id)):
        if len(value) > 200 or "\x00" in value:
            raise InvalidArgument(f"The {name} filter is not valid.")
    if len(request.actions) > MAX_ACTIONS or any(
        not action or len(action) > 100 or "\x00" in action for action in request.actions
    ):
        raise InvalidArgument("The action filter is not valid.")
    since, until = _moment(request.since, "since"), _moment(request.until, "until")
    if since is not None and until is not None and until <= since:
        raise InvalidArgument("The end of the period must come after its start.")
    return AuditFilter(actor=request.actor, client_id=request.client_id, actions=tuple(request.actions),
                       since=since, until=until)


class AuditServicer(pb_grpc.AuditServiceServicer):
    """The practice owner's ListAuditEvents and VerifyAuditTrail for one service's trail."""

    def __init__(self, service: str, trail: AuditTrail) -> None:
        self._service = service
        self._trail = trail

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        principal = require_user("owner")
        if request.page_size < 0:
            raise InvalidArgument("The page size must not be negative.")
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        before = None
        if request.page_token:
            if not request.page_token.isdigit() or len(request.page_token) > 18:
                raise InvalidArgument("The page token is not valid.")
            before = int(request.page_token)
        filters = parse_filter(request)
        rows = await self._trail.practice_page(principal.practice_id, filters, before, limit + 1)
        await self._trail.record(actor=principal.subject, action="audit.list", outcome="success",
                                 practice_id=principal.practice_id, detail={"rows": min(len(rows), limit)})
        next_token = str(rows[limit - 1].event_id) if len(rows) > limit else ""
        return pb.ListAuditEventsResponse(events=[self._event(row) for row in rows[:limit]],
                                          next_page_token=next_token)

    async def VerifyAuditTrail(
        self, request: pb.VerifyAuditTrailRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyAuditTrailResponse:
        principal = require_user("owner")
        intact, rows = await self._trail.verify()
        await self._trail.record(actor=principal.subject, action="audit.verify",
                                 outcome="intact" if intact else "broken",
                                 practice_id=principal.practice_id, detail={"rows": rows})
        if not intact:
            log.error("the audit trail's hash chain is broken", extra={"fields": {"rows": rows}})
        return pb.VerifyAuditTrailResponse(intact=intact, rows=rows)

    def _event(self, row: AuditRow) -> pb.AuditEvent:
        return pb.AuditEvent(
            event_id=row.event_id, occurred_at=timestamp(row.occurred_at), actor=row.actor, action=row.action,
            target=row.target, outcome=row.outcome,
            detail_json=json.dumps(row.detail, sort_keys=True, separators=(",", ":")),
            client_id=row.client_id, service=self._service,
        )


def audit_servicer(service: str, pool: AsyncConnectionPool) -> tuple:
    """The ``GrpcService.servicers`` entry that serves ``service``'s trail."""
    return (pb_grpc.add_AuditServiceServicer_to_server, AuditServicer(service, AuditTrail(pool)), FULL_NAME)

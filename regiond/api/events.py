"""
``GET /api/v1/events``: the audit log, filtered, oldest first from a cursor.

The filters and the row→item representation live here once and are shared:
the event stream (`regiond.api.stream`) sends the same items as SSE data, and
webhooks (`regiond.webhooks`) post them as bodies.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import attrs

from regiond.api import errors
from regiond.api.router import ApiRequest, Route, parse_query
from regiond.db import Database, Row

__all__ = ["EventsAPI", "EventFilter", "event_item", "read_events", "event_type", "after_id", "EVENT_FILTER_QUERY"]

MAX_LIMIT = 1000

_COLUMNS = "id, created_at, type, actor, cluster_uuid::text AS cluster_uuid, subject, outcome, data"


def _limit(value: str) -> int:
    n = int(value)
    if not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"must be between 1 and {MAX_LIMIT}")
    return n


def after_id(value: str) -> int:
    """An event id used as a cursor (``after``, ``Last-Event-ID``)."""
    n = int(value)
    if not 0 <= n < 2**62:
        raise ValueError("must be an event id")
    return n


def _uuid(value: str) -> str:
    return str(uuidlib.UUID(value))


def _short(value: str) -> str:
    if not 0 < len(value) <= 255:
        raise ValueError("must be 1 to 255 characters")
    return value


def event_type(value: str) -> str:
    """An event type name, or a prefix ending in ``.`` (``infrastructure.``) matching every type under it."""
    return _short(value)


def event_item(row: Row) -> dict[str, Any]:
    """An events row as every API shows it: an item of GET /api/v1/events, stream data, a webhook body."""
    return {**row, "created_at": row["created_at"].isoformat()}


@attrs.frozen
class EventFilter:
    """Which events a reader wants; every field given must match (types: any one of them)."""

    #: Exact type names, and prefixes ending in "." that match every type starting with them.
    types: tuple[str, ...] = ()
    cluster: str | None = None
    subject: str | None = None
    request_id: str | None = None
    outcome: str | None = None

    @classmethod
    def from_request(cls, request: ApiRequest) -> EventFilter:
        """The filter the query asks for (``type`` may repeat); a 400 naming a bad parameter."""
        types = []
        for value in request.query.get("type", []):
            try:
                types.append(event_type(value))
            except ValueError as e:
                raise errors.BadRequest("invalid query parameter type", details={"type": str(e)}) from None
        return cls(
            types=tuple(dict.fromkeys(types)),
            cluster=parse_query(request, "cluster", _uuid, None),
            subject=parse_query(request, "subject", _short, None),
            request_id=parse_query(request, "request_id", _short, None),
            outcome=parse_query(request, "outcome", _short, None),
        )

    def where(self) -> tuple[list[str], list[Any]]:
        """SQL conditions (to AND together) and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.types:
            exact = [t for t in self.types if not t.endswith(".")]
            prefixes = [t for t in self.types if t.endswith(".")]
            alternatives = []
            if exact:
                alternatives.append("type = ANY(%s)")
                params.append(exact)
            for prefix in prefixes:
                alternatives.append("starts_with(type, %s)")
                params.append(prefix)
            clauses.append(f"({' OR '.join(alternatives)})")
        for column, value in (
            ("cluster_uuid", self.cluster), ("subject", self.subject),
            # Outpost's own events say request_id; Ignition's task events (infrastructure) say requestId.
            ("coalesce(data->>'request_id', data->>'requestId')", self.request_id),
            ("outcome", self.outcome),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        return clauses, params


async def read_events(
    db: Database, *, after: int, limit: int, until: int | None = None, where: EventFilter = EventFilter()
) -> list[dict[str, Any]]:
    """Up to `limit` items with `after` < id (≤ `until`, if given) matching `where`, oldest first."""
    clauses, params = where.where()
    clauses = ["id > %s", *clauses]
    params = [after, *params]
    if until is not None:
        clauses.append("id <= %s")
        params.append(until)
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s", (*params, limit)
    )
    return [event_item(r) for r in rows]


def _text(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string"}, "description": description}


#: The filter parameters, as OpenAPI declares them (shared with the stream).
EVENT_FILTER_QUERY = [
    {"name": "type", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": True,
     "description": "An event type, or a prefix ending in '.' (infrastructure.); repeat for any of several"},
    _text("cluster", "Cluster uuid"),
    _text("subject", "Subject (machine system_id, volume job id, ...)"),
    _text("request_id", "The request id in the event's data (request_id, or requestId in infrastructure events)"),
    _text("outcome", "Outcome"),
]


@attrs.frozen
class EventsAPI:
    db: Database

    async def list_events(self, request: ApiRequest) -> dict[str, Any]:
        after = parse_query(request, "after", after_id, 0)
        where = EventFilter.from_request(request)
        limit = parse_query(request, "limit", _limit, 100)
        items = await read_events(self.db, after=after, limit=limit, where=where)
        return {"items": items, "next_after": items[-1]["id"] if items else after}

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/api/v1/events", self.list_events, "The event log, oldest first after a cursor", tags=["events"],
                  responses={200: "Events and the cursor for the next page", 400: "Bad query parameter"},
                  query=[{"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                         {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
                         *EVENT_FILTER_QUERY],
                  response_schema={"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                                                                     "next_after": {"type": "integer"}}}),
        ]

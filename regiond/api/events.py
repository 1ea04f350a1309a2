"""``GET /api/v1/events``: the audit log, filtered, oldest first from a cursor."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import attrs

from regiond.api.router import ApiRequest, Route, parse_query
from regiond.db import Database

__all__ = ["EventsAPI"]

MAX_LIMIT = 1000


def _limit(value: str) -> int:
    n = int(value)
    if not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"must be between 1 and {MAX_LIMIT}")
    return n


def _after(value: str) -> int:
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


@attrs.frozen
class EventsAPI:
    db: Database

    async def list_events(self, request: ApiRequest) -> dict[str, Any]:
        clauses, params = ["id > %s"], [parse_query(request, "after", _after, 0)]
        for name, column, convert in (
            ("type", "type", _short), ("cluster", "cluster_uuid", _uuid), ("subject", "subject", _short),
            ("request_id", "data->>'request_id'", _short), ("outcome", "outcome", _short),
        ):
            value = parse_query(request, name, convert, None)
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        limit = parse_query(request, "limit", _limit, 100)
        rows = await self.db.fetch(
            "SELECT id, created_at, type, actor, cluster_uuid::text AS cluster_uuid, subject, outcome, data FROM events"
            f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        items = [{**r, "created_at": r["created_at"].isoformat()} for r in rows]
        return {"items": items, "next_after": items[-1]["id"] if items else params[0]}

    def routes(self) -> list[Route]:
        text = lambda name: {"name": name, "in": "query", "schema": {"type": "string"}}  # noqa: E731
        return [
            Route("GET", "/api/v1/events", self.list_events, "The event log, oldest first after a cursor", tags=["events"],
                  responses={200: "Events and the cursor for the next page", 400: "Bad query parameter"},
                  query=[{"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                         {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
                         text("type"), text("cluster"), text("subject"), text("request_id"), text("outcome")],
                  response_schema={"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                                                                     "next_after": {"type": "integer"}}}),
        ]

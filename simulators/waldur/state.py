"""
The Waldur simulator's state and its HTTP semantics, without twisted.web.

`WaldurSimulator.handle` answers one request (method, path, query, headers)
with a `SimResponse`, the way Waldur Mastermind does for the two endpoints
a storage proxy uses:

- ``GET /api/marketplace-resources/`` with ``offering_slug`` (comma
  separated, as django-filter's ``CharInFilter``), ``offering_uuid``,
  ``state`` (repeatable), ``page`` and ``page_size``;
- ``GET /api/marketplace-provider-offerings/{uuid}/customers/``: the
  customers with resources in that offering.

Both paginate as Waldur's ``LinkHeaderPagination`` (10 a page by default,
at most 300, ``X-Result-Count`` and ``Link`` headers, 404 "Invalid page."
past the end) and need ``Authorization: Token <token>``.  Because the
answer is a pure function of the state, tests can also drive it without
sockets (an ``httpx.MockTransport`` for the peer's client, say).

Faults (`fail_next`, `latency`) are applied by the web layer.
"""

from __future__ import annotations

import json
import math
import uuid as uuidlib
from collections import Counter
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

import attrs

from simulators.waldur.model import BASE, Customer, Offering, WaldurData, generate

__all__ = ["WaldurSimulator", "FaultPlan", "SimResponse", "DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE"]

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 300

_RESOURCES = "/api/marketplace-resources/"
_OFFERINGS = "/api/marketplace-provider-offerings/"


@attrs.frozen
class SimResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def _error(status: int, detail: str, extra: tuple[tuple[str, str], ...] = ()) -> SimResponse:
    return SimResponse(status, (("Content-Type", "application/json"), *extra), json.dumps({"detail": detail}).encode())


def _positive_int(value: str, cutoff: int) -> int:
    """DRF's ``_positive_int(strict=True)``: ValueError unless a whole number above 0."""
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return min(number, cutoff)


def _uuid_hex(value: str) -> str | None:
    try:
        return uuidlib.UUID(value).hex
    except ValueError:
        return None


@attrs.define(eq=False)
class FaultPlan:
    """Faults the web layer applies, in order, to the next requests."""

    #: Each entry is an HTTP status to answer with, "drop" (close the connection) or "hang" (never answer).
    queue: list[int | str] = attrs.field(factory=list)
    #: Seconds added before every answer.
    latency: float = 0.0


@attrs.define(eq=False)
class WaldurSimulator:
    """Marketplace offerings, customers and resources, served as Waldur serves them."""

    data: WaldurData
    token: str = attrs.field(repr=False)
    faults: FaultPlan = attrs.field(factory=FaultPlan)
    #: Every request handled: (method, path, query) — for tests to assert on.
    requests: list[tuple[str, str, dict[str, list[str]]]] = attrs.field(factory=list)
    #: How many requests each path template has had.
    counts: Counter[str] = attrs.field(factory=Counter)
    listeners: list[Any] = attrs.field(factory=list)
    record_requests: bool = True
    #: Offering UUID (hex) → the customer records to serve for it, instead of those derived from resources.
    customer_lists: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    _version: int = 0
    _cache: dict[tuple[Any, ...], SimResponse] = attrs.field(factory=dict)

    @classmethod
    def create(cls, *, token: str, resources: int = 100, seed: int = 0, customers: int | None = None) -> WaldurSimulator:
        return cls(generate(resources, seed=seed, customers=customers), token)

    # -- state changes (tests and demos) ------------------------------------------

    def changed(self) -> None:
        """Call after changing `data` directly: drops cached answers."""
        self._version += 1
        self._cache.clear()

    def add_resource(self, record: dict[str, Any]) -> None:
        self.data.resources.append(record)
        self.changed()

    def update_resource(self, uuid: str, **fields: Any) -> dict[str, Any]:
        for record in self.data.resources:
            if record["uuid"] == uuid:
                record.update(fields)
                self.changed()
                return record
        raise KeyError(uuid)

    def fail_next(self, *outcomes: int | str) -> None:
        """Answer the next requests with these statuses, ``"drop"`` or ``"hang"``."""
        self.faults.queue.extend(outcomes)

    def offering(self, slug: str) -> Offering:
        return next(o for o in self.data.offerings if o.slug == slug)

    # -- queries ------------------------------------------------------------------

    def offering_customers(self, offering_uuid: str) -> list[Customer]:
        """Customers with a resource in the offering, by name (as Waldur orders them)."""
        seen: dict[str, Customer] = {}
        by_slug = {c.slug: c for c in self.data.customers}
        for record in self.data.resources:
            if record["offering_uuid"] == offering_uuid and record["customer_slug"] in by_slug:
                seen.setdefault(record["customer_slug"], by_slug[record["customer_slug"]])
        return sorted(seen.values(), key=lambda c: (c.name, c.uuid))

    def _select(self, query: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
        records = self.data.resources
        if query.get("offering_slug"):
            wanted = {s for s in query["offering_slug"][-1].split(",") if s}
            if wanted:
                records = [r for r in records if r.get("offering_slug") in wanted]
        if query.get("offering_uuid"):
            uuids = {_uuid_hex(s) for s in query["offering_uuid"][-1].split(",") if s}
            records = [r for r in records if r.get("offering_uuid") in uuids]
        states = [s for s in query.get("state", []) if s]
        if states:
            records = [r for r in records if r.get("state") in states]
        # Waldur lists marketplace resources newest first.
        return sorted(records, key=lambda r: (r.get("created") or "", r.get("uuid") or ""), reverse=True)

    # -- HTTP ---------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Mapping[str, Sequence[str]], headers: Mapping[str, str], origin: str) -> SimResponse:
        """
        The answer to one request; `headers` has lower-case names, `origin`
        is ``http://host:port`` as the client addressed us.
        """
        if self.record_requests:
            self.requests.append((method, path, {k: list(v) for k, v in query.items()}))
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "token" or not token:
            return _error(401, "Authentication credentials were not provided.", (("WWW-Authenticate", "Token"),))
        if token.strip() != self.token:
            return _error(401, "Invalid token.", (("WWW-Authenticate", "Token"),))
        if method not in ("GET", "HEAD"):
            return _error(405, f'Method "{method}" not allowed.')
        key = (path, tuple(sorted((k, tuple(v)) for k, v in query.items())), origin, self._version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if path == _RESOURCES:
            self.counts["resources"] += 1
            answer = self._paginate(self._select(query), query, path, origin)
        elif path.startswith(_OFFERINGS) and path.endswith("/customers/"):
            self.counts["customers"] += 1
            offering_uuid = _uuid_hex(path[len(_OFFERINGS) : -len("/customers/")])
            if offering_uuid is not None and offering_uuid in self.customer_lists:
                customers = list(self.customer_lists[offering_uuid])
            elif offering_uuid is None or not any(o.uuid == offering_uuid for o in self.data.offerings):
                return _error(404, "No Offering matches the given query.")
            else:
                customers = [c.as_offering_customer() for c in self.offering_customers(offering_uuid)]
            answer = self._paginate(customers, query, path, origin)
        else:
            return _error(404, "Not found.")
        if len(self._cache) >= 64:  # answers can be ~1 MB each: keep the hot few
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = answer
        return answer

    def _paginate(self, items: list[Any], query: Mapping[str, Sequence[str]], path: str, origin: str) -> SimResponse:
        page_size = DEFAULT_PAGE_SIZE
        if query.get("page_size"):
            try:
                page_size = _positive_int(query["page_size"][-1], MAX_PAGE_SIZE)
            except ValueError:
                pass
        pages = max(1, math.ceil(len(items) / page_size))
        raw_page = query["page"][-1] if query.get("page") else ""
        try:
            page = pages if raw_page == "last" else int(raw_page or 1)
        except ValueError:
            return _error(404, "Invalid page.")
        if page < 1 or page > pages:
            return _error(404, "Invalid page.")
        chunk = items[(page - 1) * page_size : page * page_size]
        links = []
        for rel, number in (("first", 1), ("prev", page - 1), ("next", page + 1), ("last", pages)):
            if rel == "prev" and page == 1 or rel == "next" and page == pages:
                continue
            params = {k: list(v) for k, v in query.items() if k != "page"}
            if number != 1:
                params["page"] = [str(number)]
            qs = urlencode(sorted(params.items()), doseq=True)
            links.append(f'<{origin}{path}{"?" + qs if qs else ""}>; rel="{rel}"')
        body = json.dumps(chunk, separators=(", ", ": ")).replace(BASE, origin).encode()
        headers = (
            ("Content-Type", "application/json"),
            ("X-Result-Count", str(len(items))),
            ("Link", ", ".join(links)),
        )
        return SimResponse(200, headers, body)

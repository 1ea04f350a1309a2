"""
The storage routes: ``GET /api/storage-resources/`` (the CSCS proxy's
path, envelope and 422 bodies) and ``GET /api/v1/storage/gid-cache``.

Per request, as the proxy: one page of Waldur resources (``page`` and
``page_size`` go to Waldur), the offerings' customers, GIDs, the
transformation, then the ``data_type``/``status`` filters on the result.
With ``storage_system`` the proxy's per-system listing applies (one
offering slug, Creating resources whose order is not yet the provider's are
left out, ``raw_total_from_api``); without it, all configured offerings in
one Waldur request (``api_total``).

Auth: the proxy checks a Keycloak bearer token; the region checks its own
bearer API tokens, any role (``read``).  401s are the region's shape.
Waldur failures: ``{"status": "error", "error": ..., "code": N}`` as the
proxy, with 502 (504 on a timeout) where the proxy said 500 — or, worse,
silently answered an empty list.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from regiond.api.router import ApiRequest, Response, Route, parse_query
from regiond.storage._config import StorageConfig
from regiond.storage._gids import GidResolver, HpcUserClient
from regiond.storage._http import HTTPClient, make_http_client
from regiond.storage._query import MAX_PAGE_SIZE, RESOURCE_STATES, StorageQuery, parse_storage_query
from regiond.storage._transform import Transformer, apply_filters, customer_index, needs_gid_lookup, prepare, status_of
from regiond.storage._waldur import WaldurClient, WaldurPage
from regiond.storage.errors import UpstreamTimeout, WaldurError

__all__ = ["StorageService", "storage_routes", "STORAGE_PATH", "GID_CACHE_PATH"]

log = Logger()

STORAGE_PATH = "/api/storage-resources/"
GID_CACHE_PATH = "/api/v1/storage/gid-cache"
_SECRET_WORDS = ("secret", "token", "password", "key")


def _redact(value: Any) -> Any:
    """A copy without keys that look like secrets (the proxy's debug output left them in backend_settings)."""
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items() if not any(w in str(k).lower() for w in _SECRET_WORDS)}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _pages(count: int, page_size: int) -> int:
    return (count + page_size - 1) // page_size


@attrs.define
class StorageService:
    """The storage resources API over Waldur, with its GID cache; one per region process."""

    reactor: IReactorTime
    config: StorageConfig
    http: HTTPClient | None = None
    #: `outpost.metrics.ExternalCallMetrics` for the Waldur and HPC User API calls, or None.
    metrics: Any = attrs.field(default=None, kw_only=True, repr=False)
    waldur: WaldurClient = attrs.field(init=False)
    resolver: GidResolver = attrs.field(init=False)
    transformer: Transformer = attrs.field(init=False)
    _pool: HTTPConnectionPool | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        http = self.http
        if http is None:
            http, self._pool = make_http_client(self.reactor)
        config = self.config
        self.waldur = WaldurClient(
            self.reactor, http, config.waldur_api_url, config.waldur_api_token, timeout=config.waldur_timeout, retries=config.waldur_retries,
            metrics=self.metrics,
        )
        client = HpcUserClient(self.reactor, http, config.hpc_user_api, metrics=self.metrics) if config.hpc_user_api is not None else None
        self.resolver = GidResolver(client, config.backend_settings.development_mode)
        self.transformer = Transformer(config.backend_settings, self.waldur.root + "/api")

    async def close(self) -> None:
        """Close the connections this service opened (none when an `http` client was given)."""
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    # -- fetching -----------------------------------------------------------------

    async def _customers(self, offering_hex: str) -> dict[str, dict[str, Any]]:
        """The offering's customers by slug; {} if Waldur fails (the proxy does the same)."""
        try:
            return customer_index(await self.waldur.offering_customers(offering_hex))
        except (WaldurError, ValueError) as e:
            log.warn("Customers of offering {uuid} unavailable: {error}", uuid=offering_hex, error=str(e))
            return {}

    async def _all_customers(self, offering_hexes: list[str]) -> dict[str, dict[str, Any]]:
        found = await defer.gatherResults(
            [Deferred.fromCoroutine(self._customers(h)) for h in offering_hexes], consumeErrors=True
        )
        merged: dict[str, dict[str, Any]] = {}
        for customers in found:
            merged.update(customers)
        return merged

    async def _entries(self, page: WaldurPage, *, single: bool) -> list[dict[str, Any]]:
        records = [r for r in (prepare(raw) for raw in page.items) if r is not None]
        if single:
            first = page.items[0].get("offering_uuid") if isinstance(page.items[0], dict) else None
            hexes = [h for h in [_hex(first)] if h]
        else:
            hexes = list(dict.fromkeys(h for h in (_hex(r.get("offering_uuid")) for r in page.items if isinstance(r, dict)) if h))
        mock_items = self.config.backend_settings.use_mock_target_items
        names = [r.project_slug for r in records if needs_gid_lookup(r, single=single, use_mock_target_items=mock_items)]
        # Customers and GIDs do not depend on each other: fetch them side by side.
        both: list[Deferred[Any]] = [Deferred.fromCoroutine(self._all_customers(hexes)), Deferred.fromCoroutine(self.resolver.resolve(names))]
        customers, gids = await defer.gatherResults(both, consumeErrors=True)
        return self.transformer.entries(records, customers, gids, single=single)

    # -- GET /api/storage-resources/ --------------------------------------------------

    async def storage_resources(self, request: ApiRequest) -> Response:
        query = parse_storage_query(request.arg, list(self.config.storage_systems))
        if isinstance(query, list):
            return Response({"detail": query}, 422)
        if query.debug:
            return await self._debug(query)
        try:
            if query.storage_system:
                body = await self._single(query)
            else:
                body = await self._multi(query)
        except WaldurError as e:
            code = 504 if isinstance(e, UpstreamTimeout) else 502
            log.error("Storage resources unavailable: {error}", error=str(e))
            return Response({"status": "error", "error": f"Failed to fetch storage resources: {e}", "code": code}, code)
        return Response(body)

    async def _multi(self, query: StorageQuery) -> dict[str, Any]:
        slugs = self.config.offering_slugs
        page = await self.waldur.resources_page(",".join(slugs), query.page, query.page_size, query.state)
        entries: list[dict[str, Any]] = []
        api_total = 0
        if page.items:
            api_total = page.result_count or 0
            entries = await self._entries(page, single=False)
        entries = apply_filters(entries, None, query.data_type, query.status)
        return {
            "status": "success",
            "resources": entries,
            "pagination": {
                "current": query.page,
                "limit": query.page_size,
                "offset": (query.page - 1) * query.page_size,
                "pages": _pages(len(entries), query.page_size) if entries else 0,
                "total": len(entries),
                "api_total": api_total,
            },
            "filters_applied": {
                "offering_slugs": slugs,
                "storage_system": None,
                "data_type": query.data_type,
                "status": query.status,
                "state": query.state,
            },
        }

    async def _single(self, query: StorageQuery) -> dict[str, Any]:
        assert query.storage_system is not None
        slug = self.config.storage_systems[query.storage_system]
        page = await self.waldur.resources_page(slug, query.page, query.page_size, query.state)
        pagination: dict[str, Any] = {"current": query.page, "limit": query.page_size, "offset": (query.page - 1) * query.page_size}
        if not page.items:
            entries: list[dict[str, Any]] = []
            pagination.update(pages=0, total=0)
        else:
            entries = apply_filters(await self._entries(page, single=True), slug, query.data_type, query.status)
            pagination.update(pages=max(1, _pages(len(entries), query.page_size)), total=len(entries), raw_total_from_api=len(page.items))
        return {
            "status": "success",
            "resources": entries,
            "pagination": pagination,
            "filters_applied": {"offering_slug": slug, "data_type": query.data_type, "status": query.status, "state": query.state},
        }

    async def _debug(self, query: StorageQuery) -> Response:
        config = self.config
        slug = config.storage_systems[query.storage_system] if query.storage_system else None
        agent_config = {
            "waldur_api_url": config.waldur_api_url,
            "backend_settings": _redact(config.backend_settings.as_json()),
            "backend_components": _redact(dict(config.backend_components)),
            "configured_storage_systems": dict(config.storage_systems),
            "requested_storage_system": query.storage_system,
            "resolved_offering_slug": slug,
        }
        pagination: dict[str, Any] = {"current": query.page, "limit": query.page_size, "offset": (query.page - 1) * query.page_size}
        try:
            page = await self.waldur.resources_page(slug or ",".join(config.offering_slugs), query.page, query.page_size, query.state)
        except WaldurError as e:
            raw: dict[str, Any] = {"error": f"Failed to fetch debug resources: {e}", "resources": [], "pagination": {**pagination, "pages": 0, "total": 0}}
            if slug is None:
                raw["offering_details"] = {}
            return Response({"status": "success", "debug_mode": True, "agent_config": agent_config, "raw_resources": raw})
        resources = [r for r in page.items if _debug_match(r, query)]
        if slug is not None:
            pages = max(1, _pages(len(resources), query.page_size)) if page.items else 0
            extra = {"raw_total_from_api": len(page.items)} if page.items else {}
            raw = {
                "resources": resources,
                "pagination": {**pagination, "pages": pages, "total": len(resources), **extra},
                "filters_applied": {"offering_slug": slug, "data_type": query.data_type, "status": query.status, "state": query.state},
            }
        else:
            raw = {
                "offering_details": {s: {"note": "Offering details available in resource data"} for s in config.offering_slugs},
                "resources": resources,
                "pagination": {
                    **pagination,
                    "pages": _pages(len(resources), query.page_size) if resources else 0,
                    "total": len(resources),
                    "api_total": page.result_count or 0,
                },
                "filters_applied": {
                    "offering_slugs": config.offering_slugs,
                    "storage_system": None,
                    "data_type": query.data_type,
                    "status": query.status,
                    "state": query.state,
                },
            }
        return Response({"status": "success", "debug_mode": True, "agent_config": agent_config, "raw_resources": raw})

    async def redirect(self, request: ApiRequest) -> Response:
        """FastAPI's ``redirect_slashes``: the path without its slash answers 307 to the one with."""
        query = urlencode([(k, v) for k, vs in request.query.items() for v in vs])
        return Response(None, 307, {"Location": STORAGE_PATH + (f"?{query}" if query else "")})

    # -- GET /api/v1/storage/gid-cache ---------------------------------------------------

    async def gid_cache(self, request: ApiRequest) -> dict[str, Any]:
        page = parse_query(request, "page", _bounded(1, 1_000_000), 1)
        page_size = parse_query(request, "page_size", _bounded(1, 1000), 100)
        stats = self.resolver.stats(limit=page * page_size)
        stats["projects"] = stats["projects"][(page - 1) * page_size :]
        stats.pop("projects_listed")
        stats.update(page=page, page_size=page_size)
        return stats

    def routes(self) -> list[Route]:
        systems = list(self.config.storage_systems)
        query_params = [
            {"name": "storage_system", "in": "query", "schema": {"type": "string", "enum": systems}},
            {"name": "data_type", "in": "query", "schema": {"type": "string"}, "description": "users, scratch, store or archive"},
            {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "pending, removing, active, error or removed"},
            {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(RESOURCE_STATES)}},
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
            {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 100}},
            {"name": "debug", "in": "query", "schema": {"type": "boolean", "default": False}},
        ]
        envelope = {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "resources": {"type": "array", "items": {"type": "object"}},
                "pagination": {"type": "object"},
                "filters_applied": {"type": "object"},
            },
        }
        return [
            Route(
                "GET", STORAGE_PATH, self.storage_resources,
                "CSCS storage resources from Waldur (compatible with waldur-site-agent-cscs-hpc-storage 0.7.9)",
                responses={
                    200: "A page of storage resources (or, with debug=true, raw Waldur data)",
                    422: "Invalid query parameter (FastAPI's {\"detail\": [...]} body)",
                    502: "Waldur failed ({\"status\": \"error\", \"error\", \"code\"})",
                    504: "Waldur did not answer in time",
                },
                query=query_params, response_schema=envelope, tags=["storage"],
                error_schemas={422: VALIDATION_ERROR_SCHEMA, 502: UPSTREAM_ERROR_SCHEMA, 504: UPSTREAM_ERROR_SCHEMA},
            ),
            Route(
                "GET", STORAGE_PATH.rstrip("/"), self.redirect, "Redirects to /api/storage-resources/ (FastAPI's redirect_slashes)",
                responses={307: "Use /api/storage-resources/"}, tags=["storage"],
            ),
            Route(
                "GET", GID_CACHE_PATH, self.gid_cache, "Project GID cache statistics (cached until the region restarts)",
                responses={200: "Cache statistics and a page of cached projects", 400: "Bad page or page_size"},
                query=[
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
                    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                ],
                response_schema={
                    "type": "object",
                    "properties": {
                        "total_entries": {"type": "integer"},
                        "cache_policy": {"type": "string"},
                        "projects": {"type": "array", "items": {"type": "object", "properties": {
                            "project": {"type": "string"}, "unix_gid": {"type": "integer"}, "source": {"type": "string"}}}},
                        "hits": {"type": "integer"},
                        "misses": {"type": "integer"},
                    },
                },
                tags=["storage"],
            ),
        ]


#: FastAPI's validation error body, which the peer answers for a bad query parameter.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                    "input": {},
                    "ctx": {"type": "object"},
                },
            },
        }
    },
}

#: The peer's body when Waldur fails or times out.
UPSTREAM_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "error", "code"],
    "properties": {"status": {"type": "string", "enum": ["error"]}, "error": {"type": "string"}, "code": {"type": "integer"}},
}


def _bounded(low: int, high: int) -> Any:
    def convert(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return convert


def _hex(value: Any) -> str | None:
    try:
        return uuidlib.UUID(value).hex
    except (TypeError, ValueError, AttributeError):
        return None


def _debug_match(raw: Any, query: StorageQuery) -> bool:
    if not isinstance(raw, dict):
        return False
    if query.data_type:
        attributes = raw.get("attributes")
        data_type = (attributes.get("storage_data_type") if isinstance(attributes, dict) else None) or "store"
        if not isinstance(data_type, str) or data_type.lower() != query.data_type:
            return False
    if query.status and status_of(raw.get("state")) != query.status:
        return False
    return True


def storage_routes(reactor: IReactorTime, config: StorageConfig, http: HTTPClient | None = None) -> list[Route]:
    """The storage routes of a new `StorageService` (use the service itself to close its connections)."""
    return StorageService(reactor, config, http).routes()


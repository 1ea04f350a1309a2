"""
The region's own API under /api/v1: health, discovery, clusters.

Each handler is a few lines over a store or the connection registry; the
route table at the bottom is the single description of the API (dispatch,
auth and the OpenAPI document all read it).
"""

from __future__ import annotations

import os
import socket
import time
import uuid as uuidlib
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from regiond.api import errors
from regiond.api.rpcerrors import api_error_for
from regiond.api.params import MAX_PAGE, MAX_PAGE_SIZE, pagination, true_or_false
from regiond.api.router import ApiRequest, Response, Route, parse_query
from regiond.clusters import ClusterStore, RegionProcessStore
from regiond.db import Database
from regiond.rpc.registry import ConnectionRegistry
from regiond.tokens import ADMIN
from rpc import errors as rpc_errors
from rpc.common import Ping

__all__ = ["RegionAPI"]

#: How long a ping waits for a cluster's answer unless the caller says otherwise.
PING_TIMEOUT = 10.0


def _uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        raise errors.BadRequest("not a UUID", details={"uuid": f"{value!r} is not a UUID"}) from None


@attrs.frozen
class RegionAPI:
    clock: IReactorTime
    db: Database
    clusters: ClusterStore
    processes: RegionProcessStore
    registry: ConnectionRegistry
    process_id: int

    async def health(self, request: ApiRequest) -> Response:
        try:
            await self.db.fetchone("SELECT 1 AS ok")
            database = "ok"
        except Exception as e:
            database = f"unavailable: {type(e).__name__}"
        body = {
            "status": "ok" if database == "ok" else "degraded",
            "database": database,
            "region": {"id": self.process_id, "hostname": socket.gethostname(), "pid": os.getpid()},
            "clusters_connected_here": len(self.registry.connected_uuids()),
        }
        return Response(body, 200 if database == "ok" else 503)

    async def rpc_endpoints(self, request: ApiRequest) -> dict[str, Any]:
        return {"endpoints": await self.processes.endpoints()}

    async def list_clusters(self, request: ApiRequest) -> dict[str, Any]:
        page, page_size = pagination(request)
        connected = parse_query(request, "connected", true_or_false, None)
        name = request.arg("name")
        items, total = await self.clusters.list(
            connected=connected, name=name, limit=page_size, offset=(page - 1) * page_size
        )
        return {"items": items, "page": page, "page_size": page_size, "total": total}

    async def get_cluster(self, request: ApiRequest) -> dict[str, Any]:
        uuid = _uuid(request.params["uuid"])
        cluster = await self.clusters.get(uuid)
        if cluster is None:
            raise errors.NotFound(f"no cluster {uuid}", details={"uuid": uuid})
        return cluster

    async def ping_cluster(self, request: ApiRequest) -> dict[str, Any]:
        uuid = _uuid(request.params["uuid"])
        body = request.json()
        if not isinstance(body, dict):
            raise errors.BadRequest("body must be a JSON object")
        unknown = sorted(set(body) - {"timeout"})
        if unknown:
            raise errors.BadRequest("unknown fields", details={k: "unknown field" for k in unknown})
        timeout = body.get("timeout", PING_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 120:
            raise errors.BadRequest("invalid timeout", details={"timeout": "must be a number of seconds in (0, 120]"})
        if await self.clusters.get(uuid) is None:
            raise errors.NotFound(f"no cluster {uuid}", details={"uuid": uuid})
        started = time.perf_counter()
        try:
            client = await self.registry.getClientFor(uuid, timeout=0)
            await client(Ping, timeout=timeout)
        except rpc_errors.RPCError as e:
            raise api_error_for(e, uuid) from None
        latency = (time.perf_counter() - started) * 1000
        return {"uuid": uuid, "latency_ms": round(latency, 3), "region": self.process_id}

    def routes(self) -> list[Route]:
        page_params = [
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}},
            {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 100}},
        ]
        return [
            Route("GET", "/api/v1/health", self.health, "Region liveness and database reachability", role=None,
                  responses={200: "Healthy", 503: "The database is unreachable"}, tags=["region"]),
            Route("GET", "/api/v1/rpc-endpoints", self.rpc_endpoints, "RPC endpoints of every live region process (cluster discovery)",
                  role=None, responses={200: "The endpoints"}, tags=["region"],
                  response_schema={"type": "object", "properties": {"endpoints": {"type": "array", "items": {"type": "object", "properties": {"host": {"type": "string"}, "port": {"type": "integer"}}}}}}),
            Route("GET", "/api/v1/clusters", self.list_clusters, "List clusters, connected or not",
                  responses={200: "A page of clusters", 400: "Bad query parameter"}, tags=["clusters"],
                  query=[*page_params,
                         {"name": "connected", "in": "query", "schema": {"type": "boolean"}},
                         {"name": "name", "in": "query", "schema": {"type": "string"}}],
                  response_schema={"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Cluster"}}, "page": {"type": "integer"}, "page_size": {"type": "integer"}, "total": {"type": "integer"}}}),
            Route("GET", "/api/v1/clusters/{uuid}", self.get_cluster, "One cluster: connected or not, last seen, connections",
                  responses={200: "The cluster", 400: "Malformed uuid", 404: "No such cluster"}, tags=["clusters"],
                  response_schema={"$ref": "#/components/schemas/Cluster"}),
            Route("POST", "/api/v1/clusters/{uuid}/ping", self.ping_cluster, "Round-trip an RPC Ping to the cluster and report its latency",
                  role=ADMIN, tags=["clusters"],
                  responses={200: "The cluster answered", 400: "Malformed uuid or body", 404: "No such cluster",
                             415: "Body is not JSON", 503: "The cluster is not connected (see Retry-After)", 504: "The cluster did not answer in time"},
                  request_body={"type": "object", "properties": {"timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 120, "default": PING_TIMEOUT}}, "additionalProperties": False},
                  response_schema={"type": "object", "properties": {"uuid": {"type": "string"}, "latency_ms": {"type": "number"}, "region": {"type": "integer"}}}),
        ]

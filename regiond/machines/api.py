"""
The machines API: inventory, actions routed to clusters, fleet fan-out,
sync, events for long actions, and the MAAS webhook receiver.

A machine is addressed as ``/api/v1/machines/{cluster}/{system_id}`` where
``{cluster}`` is the cluster's uuid or (unambiguous) name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import attrs

from regiond.api import errors
from regiond.api.body import boolean, number, one_of, read_body, string_list, text
from regiond.api.params import MAX_PAGE_SIZE, pagination, resolve_cluster, true_or_false
from regiond.api.router import ApiRequest, Response, Route, parse_query
from regiond.api.rpcerrors import api_error_for
from regiond.clusters import ClusterStore
from regiond.machines.service import POWER_ACTIONS, MachineNotFound, MachineService
from regiond.machines.store import MachineStore
from regiond.machines.sync import InventorySync
from regiond.tokens import ADMIN
from rpc import cluster as commands
from rpc.errors import RPCError

__all__ = ["MachinesAPI", "SIGNATURE_HEADER", "signature_for"]

#: The webhook's signature header: ``sha256=<hex HMAC-SHA256 of the body>``.
SIGNATURE_HEADER = "X-Hub-Signature-256"
FAN_OUT_TIMEOUT = 30.0
TIMEOUT_QUERY = {"name": "timeout", "in": "query", "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 300, "default": FAN_OUT_TIMEOUT}}

_MACHINE_SCHEMA = {"$ref": "#/components/schemas/Machine"}
_ACCEPTED = {"type": "object", "properties": {"request_id": {"type": "string"}, "status": {"type": "string"}}}
_ACTION_ERRORS = {
    400: "Bad body or path", 404: "No such cluster or machine", 409: "Wrong state, a different power action running, or no MAAS configured",
    415: "Body is not JSON", 502: "The site's MAAS failed, or the cluster does not support this", 503: "The cluster is not connected (see Retry-After)", 504: "The cluster did not answer in time",
}


def _multi(request: ApiRequest, name: str) -> list[str]:
    """A repeatable (or comma-separated) query parameter."""
    out = []
    for value in request.query.get(name, []):
        out += [v for v in value.split(",") if v]
    if len(out) > 100 or any(len(v) > 255 for v in out):
        raise errors.BadRequest(f"invalid query parameter {name}", details={name: "at most 100 values of at most 255 characters"})
    return out


def _base64_text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 4 * 1024 * 1024:
        raise ValueError("must be base64 text of at most 4 MiB")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    return value


def _seconds(value: str) -> float:
    n = float(value)
    if not 0 < n <= 300:
        raise ValueError("must be a number of seconds in (0, 300]")
    return n


def _timeout(request: ApiRequest) -> float:
    return parse_query(request, "timeout", _seconds, FAN_OUT_TIMEOUT)


@attrs.frozen
class MachinesAPI:
    clusters: ClusterStore
    store: MachineStore
    service: MachineService
    sync: InventorySync
    webhook_secret: bytes | None = attrs.field(default=None, repr=False)

    async def _cluster(self, ref: str) -> str:
        return await resolve_cluster(self.clusters, ref)

    async def _call(self, coro: Any, cluster: str, system_id: str = "") -> Any:
        try:
            return await coro
        except MachineNotFound as e:
            raise errors.NotFound(str(e), details={"cluster": cluster, "system_id": system_id}) from None
        except RPCError as e:
            raise api_error_for(e, cluster, system_id) from None

    # -- reading -----------------------------------------------------------

    async def list_machines(self, request: ApiRequest) -> dict[str, Any]:
        page, page_size = pagination(request)
        include_missing = parse_query(request, "missing", true_or_false, False)
        items, total = await self.store.list(
            status=_multi(request, "status"), hostname=_multi(request, "hostname"), tags=_multi(request, "tags"),
            zone=_multi(request, "zone"), pool=_multi(request, "pool"), cluster=_multi(request, "cluster"),
            include_missing=include_missing, limit=page_size, offset=(page - 1) * page_size,
        )
        return {"items": items, "page": page, "page_size": page_size, "total": total}

    async def get_machine(self, request: ApiRequest) -> dict[str, Any]:
        cluster = await self._cluster(request.params["cluster"])
        machine = await self.store.get(cluster, request.params["system_id"])
        if machine is None:
            raise errors.NotFound(f"no machine {request.params['system_id']} on cluster {cluster}")
        return machine

    # -- actions -----------------------------------------------------------

    async def power(self, request: ApiRequest) -> Response:
        cluster = await self._cluster(request.params["cluster"])
        system_id = request.params["system_id"]
        body = read_body(request, {"action": (one_of(*POWER_ACTIONS), None), "stop_mode": (one_of("hard", "soft"), "hard")}, required=("action",))
        result = await self._call(self.service.power(cluster, system_id, body["action"], body["stop_mode"], request.actor), cluster, system_id)
        return Response(result, 202)

    async def _act(self, request: ApiRequest, kind: str, fields: dict[str, Any]) -> Response:
        cluster = await self._cluster(request.params["cluster"])
        system_id = request.params["system_id"]
        options = {k: v for k, v in read_body(request, fields).items() if v is not None}
        result = await self._call(self.service.act(cluster, system_id, kind, options, request.actor), cluster, system_id)
        return Response({**result, "status": "accepted"}, 202)

    async def commission(self, request: ApiRequest) -> Response:
        return await self._act(request, "commission", {
            "enable_ssh": (boolean, None), "skip_networking": (boolean, None), "skip_storage": (boolean, None),
            "testing_scripts": (string_list(), None),
        })

    async def deploy(self, request: ApiRequest) -> Response:
        return await self._act(request, "deploy", {
            "distro_series": (text(64), None), "hwe_kernel": (text(64), None), "user_data": (_base64_text, None), "hostname": (text(63), None),
        })

    async def release(self, request: ApiRequest) -> Response:
        return await self._act(request, "release", {"erase": (boolean, None), "secure_erase": (boolean, None), "quick_erase": (boolean, None)})

    # -- fleet -------------------------------------------------------------

    async def power_query(self, request: ApiRequest) -> dict[str, Any]:
        def machine_refs(value: Any) -> list[tuple[str, str]]:
            if not isinstance(value, list) or len(value) > 100_000:
                raise ValueError("must be a list of {cluster, system_id} objects")
            refs = []
            for item in value:
                if not (isinstance(item, dict) and set(item) == {"cluster", "system_id"}
                        and all(isinstance(item[k], str) and 0 < len(item[k]) <= 255 for k in item)):
                    raise ValueError("each item must be {\"cluster\": str, \"system_id\": str}")
                refs.append((item["cluster"], item["system_id"]))
            return refs

        body = read_body(request, {"machines": (machine_refs, None), "timeout": (number(0, 300), FAN_OUT_TIMEOUT)})
        targets: dict[str, list[str]] | None = None
        if body["machines"] is not None:
            targets = {}
            for ref, system_id in body["machines"]:
                targets.setdefault(await self._cluster(ref), []).append(system_id)
        return await self.service.power_query(targets, body["timeout"])

    async def networks(self, request: ApiRequest) -> dict[str, Any]:
        return await self.service.fan_out(commands.ListNetworks, ("subnets", "vlans", "spaces"), _timeout(request))

    async def zones(self, request: ApiRequest) -> dict[str, Any]:
        return await self.service.fan_out(commands.ListZones, ("zones",), _timeout(request))

    async def pools(self, request: ApiRequest) -> dict[str, Any]:
        return await self.service.fan_out(commands.ListPools, ("pools",), _timeout(request))

    async def maas_health(self, request: ApiRequest) -> dict[str, Any]:
        cluster = await self._cluster(request.params["uuid"])

        async def check() -> dict[str, Any]:
            client = await self.service.registry.getClientFor(cluster, timeout=0)
            answer: dict[str, Any] = await client(commands.TestMAASConnection, timeout=FAN_OUT_TIMEOUT)
            return answer

        answer = await self._call(check(), cluster)
        return {"cluster": cluster, **answer}

    async def start_sync(self, request: ApiRequest) -> Response:
        read_body(request, {})
        self.sync.run().addErrback(lambda f: None)  # the outcome is recorded per cluster
        return Response({"status": "started"}, 202)

    # -- webhook -----------------------------------------------------------

    async def webhook(self, request: ApiRequest) -> dict[str, Any]:
        if self.webhook_secret is None:
            raise errors.Forbidden("MAAS webhooks are not configured on this region (maas.webhook_secret_file)")
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        expected = "sha256=" + hmac.new(self.webhook_secret, request.raw_body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode("latin-1", "replace"), expected.encode("ascii")):
            raise errors.Unauthorized(
                f"missing or wrong {SIGNATURE_HEADER} signature",
                headers={"WWW-Authenticate": f'Signature header="{SIGNATURE_HEADER}", algorithm="hmac-sha256"'},
            )
        cluster = await self._cluster(request.params["cluster"])
        body = read_body(request, {
            "type": (one_of("MACHINE_STATUS_CHANGED", "MACHINE_DEPLOYED", "MACHINE_RELEASED", "MACHINE_POWER_CHANGED"), None),
            "system_id": (text(64), None), "status": (text(64), None), "power_state": (one_of("on", "off", "unknown", "error"), None),
            "hostname": (text(255), None),
        }, required=("type", "system_id"))
        fields = {"status": body["status"], "power_state": body["power_state"], "hostname": body["hostname"]}
        if body["type"] == "MACHINE_DEPLOYED":
            fields["status"] = fields["status"] or "Deployed"
        elif body["type"] == "MACHINE_RELEASED":
            fields["status"] = fields["status"] or "Ready"
        machine = await self.store.apply_update(cluster, body["system_id"], fields, source="webhook")
        if machine is None:
            raise errors.NotFound(f"no machine {body['system_id']} on cluster {cluster}")
        return {"status": "ok", "machine": machine}

    def routes(self) -> list[Route]:
        machine = "/api/v1/machines/{cluster}/{system_id}"

        def multi(name: str) -> dict[str, Any]:
            return {"name": name, "in": "query", "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": True}

        def action_body(props: dict[str, Any]) -> dict[str, Any]:
            return {"type": "object", "properties": props, "additionalProperties": False}

        accepted = {202: "Accepted; the outcome follows as events with the request_id", **_ACTION_ERRORS}
        return [
            Route("GET", "/api/v1/machines", self.list_machines, "List machines across clusters", tags=["machines"],
                  responses={200: "A page of machines", 400: "Bad query parameter"},
                  query=[multi("status"), multi("hostname"), multi("tags"), multi("zone"), multi("pool"), multi("cluster"),
                         {"name": "missing", "in": "query", "schema": {"type": "boolean"}},
                         {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                         {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}}],
                  response_schema={"type": "object", "properties": {"items": {"type": "array", "items": _MACHINE_SCHEMA}, "total": {"type": "integer"}}}),
            Route("GET", machine, self.get_machine, "One machine", tags=["machines"],
                  responses={200: "The machine", 400: "Ambiguous cluster name", 404: "No such cluster or machine"}, response_schema=_MACHINE_SCHEMA),
            Route("POST", machine + "/power", self.power, "Power a machine on, off, or cycle it (off, verify, on, verify)", role=ADMIN, tags=["machines"],
                  responses=accepted, response_schema=_ACCEPTED,
                  request_body=action_body({"action": {"enum": list(POWER_ACTIONS)}, "stop_mode": {"enum": ["hard", "soft"], "default": "hard"}})),
            Route("POST", machine + "/commission", self.commission, "Commission a machine", role=ADMIN, tags=["machines"],
                  responses=accepted, response_schema=_ACCEPTED,
                  request_body=action_body({"enable_ssh": {"type": "boolean"}, "skip_networking": {"type": "boolean"}, "skip_storage": {"type": "boolean"},
                                            "testing_scripts": {"type": "array", "items": {"type": "string"}}})),
            Route("POST", machine + "/deploy", self.deploy, "Deploy a machine", role=ADMIN, tags=["machines"],
                  responses=accepted, response_schema=_ACCEPTED,
                  request_body=action_body({"distro_series": {"type": "string"}, "hwe_kernel": {"type": "string"},
                                            "user_data": {"type": "string", "format": "byte"}, "hostname": {"type": "string"}})),
            Route("POST", machine + "/release", self.release, "Release a machine", role=ADMIN, tags=["machines"],
                  responses=accepted, response_schema=_ACCEPTED,
                  request_body=action_body({"erase": {"type": "boolean"}, "secure_erase": {"type": "boolean"}, "quick_erase": {"type": "boolean"}})),
            Route("POST", "/api/v1/machines/power-query", self.power_query, "Query power states across the fleet (given machines, or all)",
                  role=ADMIN, tags=["machines"], responses={200: "Per-machine states and per-cluster failures", 400: "Bad body", 404: "No such cluster", 415: "Body is not JSON"},
                  request_body=action_body({"machines": {"type": "array", "items": {"type": "object", "properties": {"cluster": {"type": "string"}, "system_id": {"type": "string"}}}},
                                            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300}})),
            Route("GET", "/api/v1/networks", self.networks, "Subnets, VLANs and spaces of every connected cluster", tags=["sites"], query=[TIMEOUT_QUERY],
                  responses={200: "Merged lists, each item tagged with its cluster, plus per-cluster failures", 400: "Bad timeout"}),
            Route("GET", "/api/v1/zones", self.zones, "MAAS zones of every connected cluster", tags=["sites"], query=[TIMEOUT_QUERY],
                  responses={200: "Zones and failures", 400: "Bad timeout"}),
            Route("GET", "/api/v1/pools", self.pools, "MAAS resource pools of every connected cluster", tags=["sites"], query=[TIMEOUT_QUERY],
                  responses={200: "Pools and failures", 400: "Bad timeout"}),
            Route("GET", "/api/v1/clusters/{uuid}/maas/health", self.maas_health, "Check a cluster's MAAS connection", tags=["clusters"],
                  responses={200: "The checks", 400: "Ambiguous cluster name", 404: "No such cluster", 409: "No MAAS configured",
                             502: "The cluster does not support this or failed", 503: "The cluster is not connected", 504: "The cluster did not answer in time"}),
            Route("POST", "/api/v1/sync", self.start_sync, "Run an inventory sync of every connected cluster now", role=ADMIN, tags=["machines"],
                  responses={202: "Started; outcomes are recorded as maas.sync events", 400: "Bad body", 415: "Body is not JSON"}),
            Route("POST", "/api/v1/webhooks/maas/{cluster}", self.webhook, "Receive a MAAS machine event (HMAC-SHA256 signed)", role=None, tags=["machines"],
                  security_scheme="webhookSignature",
                  responses={200: "Applied", 400: "Bad body", 401: f"Missing or wrong {SIGNATURE_HEADER}", 403: "Webhooks not configured",
                             404: "No such cluster or machine", 415: "Body is not JSON"},
                  request_body=action_body({"type": {"enum": ["MACHINE_STATUS_CHANGED", "MACHINE_DEPLOYED", "MACHINE_RELEASED", "MACHINE_POWER_CHANGED"]},
                                            "system_id": {"type": "string"}, "status": {"type": "string"},
                                            "power_state": {"enum": ["on", "off", "unknown", "error"]}, "hostname": {"type": "string"}})),
        ]


def signature_for(secret: bytes, body: bytes) -> str:
    """The webhook signature header value for `body` (for senders and tests)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


"""/api/openapi.json: served open, describes exactly the route table, and declares what is served."""

from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any

import pytest_twisted
from twisted.protocols import amp

from regiond.api.openapi import openapi_document
from regiond.machines.api import signature_for
from regiond.machines.store import MachineStore
from rpc import cluster as infra_commands
from rpc import errors as rpc_errors
from tests.machinehelpers import summary
from tests.regionstack import WEBHOOK_SECRET, RegionStack, eventually, region_stack  # noqa: F401

C1 = "9d2f1c4e-3b5a-4c6d-8e7f-0a1b2c3d4e5f"
GONE = "1c0ffee0-0000-4000-8000-000000000002"

#: Every operation the region's API serves today: (METHOD, template).
EXPECTED_OPERATIONS = {
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/rpc-endpoints"),
    ("GET", "/api/v1/clusters"),
    ("GET", "/api/v1/clusters/{uuid}"),
    ("POST", "/api/v1/clusters/{uuid}/ping"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/v1/machines"),
    ("GET", "/api/v1/machines/{cluster}/{system_id}"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/power"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/commission"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/deploy"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/release"),
    ("POST", "/api/v1/machines/power-query"),
    ("GET", "/api/v1/networks"),
    ("GET", "/api/v1/zones"),
    ("GET", "/api/v1/pools"),
    ("GET", "/api/v1/clusters/{uuid}/maas/health"),
    ("POST", "/api/v1/sync"),
    ("POST", "/api/v1/webhooks/maas/{cluster}"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/stream"),
    ("POST", "/api/v1/ossea/config"),
    ("GET", "/api/v1/clusters/{uuid}/cloudstack"),
    ("PUT", "/api/v1/clusters/{uuid}/cloudstack"),
    ("DELETE", "/api/v1/clusters/{uuid}/cloudstack"),
    ("POST", "/api/v1/clusters/{uuid}/cloudstack/test"),
    ("POST", "/api/v1/clusters/{uuid}/cloudstack/reconcile"),
    ("POST", "/api/v1/volume-jobs"),
    ("GET", "/api/v1/volume-jobs"),
    ("GET", "/api/v1/volume-jobs/{job_id}"),
    ("DELETE", "/api/v1/volume-jobs/{job_id}"),
    ("POST", "/api/infrastructure/create"),
    ("POST", "/api/infrastructure/query"),
    ("POST", "/api/infrastructure/delete"),
    ("POST", "/api/infrastructure/find"),
    ("GET", "/api/v1/infrastructures"),
    ("GET", "/api/v1/infrastructures/{cluster}/{id}"),
}

_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), template)
        for template, item in document["paths"].items()
        for method in item
        if method in _HTTP_METHODS
    }


def refs(node: Any) -> list[str]:
    """Every ``$ref`` anywhere under `node`."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def fetch_document(stack: RegionStack) -> dict[str, Any]:
    result = await stack.request("GET", "/api/openapi.json")
    assert result.status == 200, result.raw
    assert result.headers["content-type"] == "application/json"
    return result.json()


@pytest_twisted.ensureDeferred
async def test_the_document_is_served_without_a_token_and_is_openapi_3(region_stack: RegionStack) -> None:
    document = await fetch_document(region_stack)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    # Every reference resolves inside the document.
    for ref in refs(document):
        assert isinstance(resolve(document, ref), dict), ref
    for template, item in document["paths"].items():
        assert template.startswith("/api/")
        for method, operation in item.items():
            assert operation["responses"], (method, template)
            for status in operation["responses"]:
                assert 100 <= int(status) <= 599
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            in_template = {part[1:-1] for part in template.split("/") if part.startswith("{")}
            assert declared == in_template, (method, template)
    # Served as the route table generates it (what the lead's RegionService serves too).
    assert document == openapi_document(region_stack.routes, document["info"]["version"])


@pytest_twisted.ensureDeferred
async def test_the_document_lists_every_route_of_the_table_and_nothing_else(region_stack: RegionStack) -> None:
    document = await fetch_document(region_stack)
    table = {(route.method, route.template) for route in region_stack.routes}
    assert operations(document) == table == EXPECTED_OPERATIONS
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


@pytest_twisted.ensureDeferred
async def test_declared_security_matches_what_is_enforced(region_stack: RegionStack) -> None:
    """An operation with ``security`` refuses a request without a token (401); one without it does not."""
    document = await fetch_document(region_stack)
    for method, template in operations(document):
        operation = document["paths"][template][method.lower()]
        path = template.replace("{uuid}", C1)
        result = await region_stack.request(method, path)
        if operation.get("security"):
            assert result.status == 401, (method, template, result.status)
            assert "401" in operation["responses"]
            if operation["x-role"] == "admin":
                denied = await region_stack.request(method, path, token=region_stack.read_token)
                assert denied.status == 403, (method, template, denied.status)
        else:
            assert result.status != 401, (method, template)


async def representative_requests(stack: RegionStack) -> None:
    """The kinds of request the v1 tests make: successes, bad input, auth failures, unavailability."""
    admin, read = stack.admin_token, stack.read_token
    # Clusters: one connected, one known but gone, one that will not answer.
    await stack.connect_cluster(C1, "site-1")
    gone = await stack.connect_cluster(GONE, "site-2")
    gone.transport.loseConnection()

    async def is_gone() -> bool:
        return stack.registry.connection_count(GONE) == 0

    await eventually(is_gone)
    mute_uuid = str(uuidlib.uuid4())
    mute = await stack.connect_cluster(mute_uuid, "site-3")
    mute.transport.pauseProducing()

    unknown = str(uuidlib.uuid4())
    requests: list[tuple[str, str, str | None, dict[str, Any]]] = [
        ("GET", "/api/v1/health", None, {}),
        ("GET", "/api/v1/rpc-endpoints", None, {}),
        ("GET", "/api/openapi.json", None, {}),
        ("GET", "/api/v1/clusters", read, {}),
        ("GET", "/api/v1/clusters", None, {}),
        ("GET", "/api/v1/clusters", "opt_unknown", {}),
        ("GET", "/api/v1/clusters?page=2&page_size=1&connected=true&name=site-1", admin, {}),
        ("GET", "/api/v1/clusters?page=0", read, {}),
        ("GET", "/api/v1/clusters?page_size=5000", read, {}),
        ("GET", "/api/v1/clusters?connected=maybe", read, {}),
        ("GET", f"/api/v1/clusters/{C1}", read, {}),
        ("GET", f"/api/v1/clusters/{GONE}", read, {}),
        ("GET", f"/api/v1/clusters/{unknown}", read, {}),
        ("GET", "/api/v1/clusters/not-a-uuid", read, {}),
        ("GET", f"/api/v1/clusters/{C1}", None, {}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {"json": {"timeout": 2}}),
        ("POST", f"/api/v1/clusters/{C1}/ping", read, {}),
        ("POST", f"/api/v1/clusters/{C1}/ping", None, {}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {"json": {"timeout": 0}}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {"json": [1]}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {"data": b"{", "headers": {"Content-Type": "application/json"}}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {"data": b"timeout=1", "headers": {"Content-Type": "text/plain"}}),
        ("POST", f"/api/v1/clusters/{C1}/ping", admin, {"data": b"x" * (1024 * 1024 + 1), "headers": {"Content-Type": "application/json"}}),
        ("POST", f"/api/v1/clusters/{GONE}/ping", admin, {}),
        ("POST", f"/api/v1/clusters/{unknown}/ping", admin, {}),
        ("POST", "/api/v1/clusters/not-a-uuid/ping", admin, {}),
        ("POST", f"/api/v1/clusters/{mute_uuid}/ping", admin, {"json": {"timeout": 0.2}}),
        ("GET", "/api/v1/no-such-thing", admin, {}),
        ("DELETE", "/api/v1/clusters", admin, {}),
    ]
    # Machines: one on each kind of cluster.  The stack's clusters have no
    # MAAS responders, so actions reach them and come back "unsupported".
    for cluster in (C1, GONE, mute_uuid):
        await MachineStore(stack.db).apply_inventory(cluster, [summary("m1")])
    hook = json.dumps({"type": "MACHINE_STATUS_CHANGED", "system_id": "m1", "status": "Deploying"}).encode()
    hook_unknown = json.dumps({"type": "MACHINE_DEPLOYED", "system_id": "nope"}).encode()
    signed = {"Content-Type": "application/json", "X-Hub-Signature-256": signature_for(WEBHOOK_SECRET, hook)}
    machine = f"/api/v1/machines/{C1}/m1"
    requests += [
        ("GET", "/api/v1/machines", read, {}),
        ("GET", "/api/v1/machines?status=Ready&tags=a,b&cluster=site-1&missing=true", read, {}),
        ("GET", "/api/v1/machines?page=0", read, {}),
        ("GET", machine, read, {}),
        ("GET", "/api/v1/machines/site-1/m1", read, {}),
        ("GET", f"/api/v1/machines/{C1}/nope", read, {}),
        ("GET", f"/api/v1/machines/{unknown}/m1", read, {}),
        ("POST", machine + "/power", admin, {"json": {"action": "on"}}),
        ("POST", machine + "/power", admin, {"json": {"action": "dance"}}),
        ("POST", machine + "/power", read, {"json": {"action": "on"}}),
        ("POST", f"/api/v1/machines/{C1}/nope/power", admin, {"json": {"action": "off"}}),
        ("POST", f"/api/v1/machines/{GONE}/m1/power", admin, {"json": {"action": "off"}}),
        ("POST", machine + "/commission", admin, {"json": {"enable_ssh": True}}),
        ("POST", machine + "/commission", admin, {"json": {"enable_ssh": "yes"}}),
        ("POST", machine + "/deploy", admin, {"json": {"distro_series": "jammy", "user_data": "aGVsbG8="}}),
        ("POST", machine + "/deploy", admin, {"json": {"user_data": "not base64!"}}),
        ("POST", machine + "/deploy", admin, {"data": b"x", "headers": {"Content-Type": "text/plain"}}),
        ("POST", f"/api/v1/machines/{GONE}/m1/release", admin, {"json": {}}),
        ("POST", machine + "/release", admin, {"json": {"erase": True}}),
        ("POST", "/api/v1/machines/power-query", admin, {"json": {"timeout": 0.5}}),
        ("POST", "/api/v1/machines/power-query", admin, {"json": {"machines": [{"cluster": C1, "system_id": "m1"}], "timeout": 1}}),
        ("POST", "/api/v1/machines/power-query", admin, {"json": {"machines": [{"cluster": unknown, "system_id": "m1"}]}}),
        ("POST", "/api/v1/machines/power-query", admin, {"json": {"machines": "all"}}),
        ("GET", "/api/v1/networks?timeout=0.5", read, {}),
        ("GET", "/api/v1/zones?timeout=0.5", read, {}),
        ("GET", "/api/v1/pools?timeout=0.5", read, {}),
        ("GET", "/api/v1/pools?timeout=-1", read, {}),
        ("GET", f"/api/v1/clusters/{C1}/maas/health", read, {}),
        ("GET", f"/api/v1/clusters/{GONE}/maas/health", read, {}),
        ("GET", f"/api/v1/clusters/{unknown}/maas/health", read, {}),
        ("POST", "/api/v1/sync", admin, {}),
        ("POST", "/api/v1/sync", admin, {"json": {"now": True}}),
        ("POST", f"/api/v1/webhooks/maas/{C1}", None, {"data": hook, "headers": signed}),
        ("POST", f"/api/v1/webhooks/maas/{C1}", None, {"data": hook, "headers": {"Content-Type": "application/json"}}),
        ("POST", f"/api/v1/webhooks/maas/{C1}", None, {"data": hook_unknown, "headers": {
            "Content-Type": "application/json", "X-Hub-Signature-256": signature_for(WEBHOOK_SECRET, hook_unknown)}}),
        ("POST", f"/api/v1/webhooks/maas/{C1}", None, {"data": b"[]", "headers": {
            "Content-Type": "application/json", "X-Hub-Signature-256": signature_for(WEBHOOK_SECRET, b"[]")}}),
        ("GET", "/api/v1/events", read, {}),
        ("GET", f"/api/v1/events?type=machine.status&cluster={C1}&after=0&limit=5", read, {}),
        ("GET", "/api/v1/events?limit=0", read, {}),
        ("GET", "/api/v1/events?cluster=nope", read, {}),
        # A stream that starts never ends by itself: only the refusals are asked for here.
        ("GET", "/api/v1/events/stream?after=-1", read, {}),
        ("GET", "/api/v1/events/stream", read, {"headers": {"Last-Event-ID": "not-an-id"}}),
    ]
    config = {"name": "site-1-cs", "api_url": "http://cs.example:8080/client/api", "api_key": "k" * 20,
              "secret_key": "s" * 20, "zone": "zone-1", "oma_vm_id": str(uuidlib.uuid4())}
    cs = f"/api/v1/clusters/{C1}/cloudstack"
    requests += [
        ("POST", "/api/v1/ossea/config", read, {"json": {"action": "list"}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "create", "configuration": {"cluster": C1, "name": "x"}}}),
        ("POST", "/api/v1/ossea/config", read, {"json": {"action": "create", "configuration": {"cluster": C1, **config}}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "create", "configuration": {"cluster": C1, **config}}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "create", "configuration": {"cluster": C1, **config}}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "create", "configuration": {"cluster": unknown, **config}}}),
        ("POST", "/api/v1/ossea/config", read, {"json": {"action": "get", "configuration": {"name": "site-1-cs"}}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "update", "configuration": {"name": "site-1-cs", "zone": "zone-2"}}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "test", "configuration": {"cluster": C1}}}),
        ("POST", "/api/v1/ossea/config", admin, {"json": {"action": "explode"}}),
        ("POST", "/api/v1/ossea/config", admin, {"data": b"x", "headers": {"Content-Type": "text/plain"}}),
        ("GET", cs, read, {}),
        ("PUT", cs, admin, {"json": {"zone": "zone-3"}}),
        ("PUT", cs, admin, {"json": {"oma_vm_id": "nope"}}),
        ("POST", cs + "/test", admin, {}),
        ("POST", f"/api/v1/clusters/{GONE}/cloudstack/reconcile", admin, {"json": {"clean": False}}),
        ("POST", cs + "/reconcile", admin, {"json": {"clean": "yes"}}),
        ("POST", cs + "/reconcile", admin, {"json": {}}),
        ("DELETE", cs, admin, {}),
        ("DELETE", cs, admin, {}),
        ("GET", f"/api/v1/clusters/{unknown}/cloudstack", read, {}),
        ("PUT", f"/api/v1/clusters/{GONE}/cloudstack", admin, {"json": {**config, "name": "gone-cs"}}),
        ("PUT", f"/api/v1/clusters/{GONE}/cloudstack", admin, {"data": b"[", "headers": {"Content-Type": "text/plain"}}),
        ("POST", f"/api/v1/clusters/{mute_uuid}/cloudstack/test", admin, {"data": b"x", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/api/v1/volume-jobs", admin, {"json": {"cluster": C1, "job_id": "job-1", "disks": [{"name": "d0", "size_gb": 10}]}}),
        ("POST", "/api/v1/volume-jobs", admin, {"json": {"cluster": C1, "job_id": "job-1", "disks": [{"name": "d0", "size_gb": 10}]}}),
        ("POST", "/api/v1/volume-jobs", admin, {"json": {"cluster": GONE, "job_id": "job-2", "disks": [{"name": "d0", "size_gb": 10}]}}),
        ("POST", "/api/v1/volume-jobs", admin, {"json": {"cluster": C1, "job_id": "bad id", "disks": []}}),
        ("POST", "/api/v1/volume-jobs", admin, {"json": {"cluster": unknown, "job_id": "job-3", "disks": [{"name": "d0", "size_gb": 1}]}}),
        ("POST", "/api/v1/volume-jobs", admin, {"data": b"x", "headers": {"Content-Type": "text/plain"}}),
        ("GET", "/api/v1/volume-jobs", read, {}),
        ("GET", f"/api/v1/volume-jobs?cluster={C1}&state=failed", read, {}),
        ("GET", "/api/v1/volume-jobs?page_size=0", read, {}),
        ("GET", f"/api/v1/volume-jobs?cluster={unknown}", read, {}),
        ("GET", "/api/v1/volume-jobs/job-1", read, {}),
        ("GET", "/api/v1/volume-jobs/nope", read, {}),
        ("DELETE", "/api/v1/volume-jobs/job-1?keep=maybe", admin, {}),
        ("DELETE", "/api/v1/volume-jobs/nope", admin, {}),
        ("DELETE", "/api/v1/volume-jobs/job-1", admin, {}),
    ]
    # Infrastructure (Ignition): a cluster whose driver fails as the template, id or instance name says.
    infra_uuid = str(uuidlib.uuid4())
    await stack.connect_cluster(infra_uuid, "site-infra", locator=_InfraSite())
    where = {"name": "site-infra", "type": "simulated"}
    create = {"deploymentLocation": where, "template": "ok", "templateType": "TOSCA", "systemProperties": {}, "properties": {}}
    find = {"deploymentLocation": where, "template": "ok", "templateType": "TOSCA", "instanceName": "vm-1"}
    as_text = {"data": b"x", "headers": {"Content-Type": "text/plain"}}
    too_big = {"data": b"{}" + b" " * (1024 * 1024), "headers": {"Content-Type": "application/json"}}
    requests += [
        ("POST", "/api/infrastructure/create", admin, {"json": create}),
        ("POST", "/api/infrastructure/create", admin, {"json": {**create, "template": "temporary"}}),
        ("POST", "/api/infrastructure/create", admin, {"json": {**create, "template": "broken"}}),
        ("POST", "/api/infrastructure/create", admin, {"json": {**create, "template": 1}}),
        ("POST", "/api/infrastructure/create", admin, {"json": {**create, "deploymentLocation": {"name": "site-2"}}}),
        ("POST", "/api/infrastructure/create", read, {"json": create}),
        ("POST", "/api/infrastructure/create", None, {"json": create}),
        ("POST", "/api/infrastructure/create", admin, as_text),
        ("POST", "/api/infrastructure/create", admin, too_big),
        ("POST", "/api/infrastructure/query", read, {"json": {"infrastructureId": "inf-1", "requestId": "req-1", "deploymentLocation": where}}),
        ("POST", "/api/infrastructure/query", read, {"json": {"infrastructureId": "inf-1", "requestId": "nope", "deploymentLocation": where}}),
        ("POST", "/api/infrastructure/query", read, as_text),
        ("POST", "/api/infrastructure/query", None, {"json": {}}),
        ("POST", "/api/infrastructure/delete", admin, {"json": {"infrastructureId": "inf-1", "deploymentLocation": where}}),
        ("POST", "/api/infrastructure/delete", admin, {"json": {"infrastructureId": "temporary", "deploymentLocation": where}}),
        ("POST", "/api/infrastructure/delete", admin, {"json": {"infrastructureId": "broken", "deploymentLocation": where}}),
        ("POST", "/api/infrastructure/delete", admin, {"json": {"infrastructureId": "inf-1"}}),
        ("POST", "/api/infrastructure/delete", admin, as_text),
        ("POST", "/api/infrastructure/find", read, {"json": find}),
        ("POST", "/api/infrastructure/find", read, {"json": {**find, "instanceName": "temporary"}}),
        ("POST", "/api/infrastructure/find", read, {"json": {**find, "instanceName": "broken"}}),
        ("POST", "/api/infrastructure/find", read, {"json": {**find, "deploymentLocation": {"name": "nowhere"}}}),
        ("POST", "/api/infrastructure/find", read, as_text),
        ("GET", "/api/v1/infrastructures", read, {}),
        ("GET", "/api/v1/infrastructures?cluster=site-infra&state=creating&location=site-infra&page=1&page_size=10", read, {}),
        ("GET", "/api/v1/infrastructures?state=nope", read, {}),
        ("GET", f"/api/v1/infrastructures?cluster={unknown}", read, {}),
        ("GET", "/api/v1/infrastructures/site-infra/inf-1", read, {}),
        ("GET", "/api/v1/infrastructures/site-infra/nope", read, {}),
        ("GET", "/api/v1/infrastructures/not-a-uuid-or-name/x", read, {}),
    ]
    for method, path, token, kwargs in requests:
        await stack.request(method, path, token=token, **kwargs)


class _InfraSite(amp.CommandLocator):
    """A cluster's infrastructure driver: "temporary" and "broken" fail as their names say."""

    @staticmethod
    def _fail_on(value: str) -> None:
        if value == "temporary":
            raise rpc_errors.TemporaryInfrastructureError("busy")
        if value == "broken":
            raise rpc_errors.InfrastructureError("the driver broke")

    @infra_commands.CreateInfrastructure.responder
    def create(self, request: Any) -> dict[str, Any]:
        self._fail_on(request["template"])
        return {"infrastructure_id": "inf-1", "request_id": "req-1"}

    @infra_commands.DeleteInfrastructure.responder
    def delete(self, infrastructure_id: str, deployment_location: Any) -> dict[str, Any]:
        self._fail_on(infrastructure_id)
        return {"infrastructure_id": infrastructure_id, "request_id": "del-1"}

    @infra_commands.FindInfrastructure.responder
    def find(self, request: Any) -> dict[str, Any]:
        self._fail_on(request["instance_name"])
        return {"result": None}


@pytest_twisted.ensureDeferred
async def test_every_status_served_is_declared_in_the_document(region_stack: RegionStack) -> None:
    await representative_requests(region_stack)
    document = await fetch_document(region_stack)
    undeclared = set()
    for template, method, status in region_stack.observed:
        if template is None:
            # No route matched: nothing to declare it on.  Only these two may happen then.
            assert status in (404, 405), (method, status)
            continue
        responses = document["paths"][template][method.lower()]["responses"]
        if str(status) not in responses:
            undeclared.add((method, template, status))
    assert not undeclared, f"served but not in /api/openapi.json: {sorted(undeclared)}"
    # The run above did exercise each operation and each kind of outcome.
    seen = {(method, template) for template, method, _ in region_stack.observed if template is not None}
    assert seen == EXPECTED_OPERATIONS
    statuses = {status for _, _, status in region_stack.observed}
    assert {200, 202, 400, 401, 403, 404, 415, 502, 503, 504} <= statuses
    # Every outcome of the Ignition routes, in Ignition's statuses.
    infrastructure = {(template, status) for template, _, status in region_stack.observed if template and template.startswith("/api/infrastructure/")}
    assert {("/api/infrastructure/create", s) for s in (202, 400, 401, 403, 413, 415, 500, 503)} <= infrastructure
    assert {("/api/infrastructure/query", s) for s in (200, 400, 401, 415)} <= infrastructure
    assert {("/api/infrastructure/delete", s) for s in (202, 400, 415, 500, 503)} <= infrastructure
    assert {("/api/infrastructure/find", s) for s in (200, 400, 415, 500, 503)} <= infrastructure


@pytest_twisted.ensureDeferred
async def test_a_ping_body_the_document_forbids_is_refused(region_stack: RegionStack) -> None:
    document = await fetch_document(region_stack)
    schema = document["paths"]["/api/v1/clusters/{uuid}/ping"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    await region_stack.connect_cluster(C1, "site-1")
    result = await region_stack.request(
        "POST", f"/api/v1/clusters/{C1}/ping", token=region_stack.admin_token, json={"timeout": 1, "tiemout": 5}
    )
    assert result.status == 400, result.raw


@pytest_twisted.ensureDeferred
async def test_an_oversized_body_on_an_open_route_gets_a_declared_status(region_stack: RegionStack) -> None:
    document = await fetch_document(region_stack)
    result = await region_stack.request("GET", "/api/v1/health", data=b"x" * (1024 * 1024 + 1))
    assert str(result.status) in document["paths"]["/api/v1/health"]["get"]["responses"], result.status

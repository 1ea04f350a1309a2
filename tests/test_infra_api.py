"""
The Ignition-compatible infrastructure API and the region's infrastructure
records, through a real region (HTTP and RPC on sockets, PostgreSQL) with
fake clusters connected over real RPC: every route, status and error body,
each driver error class, timeouts, queries while the cluster is away,
de-duplicated completions and the lost-record case.
"""

from __future__ import annotations

import itertools
import json
import uuid as uuidlib
from typing import Any

import pytest
import pytest_twisted
from twisted.protocols import amp

from rpc import cluster as commands
from rpc import errors as rpc_errors
from rpc.region import ReportInfrastructureTask
from tests.regionstack import HTTPResult, RegionStack, eventually, region_stack  # noqa: F401

C1 = "eeeeeeee-0000-4000-8000-000000000001"
C2 = "eeeeeeee-0000-4000-8000-000000000002"
LOCATION = {"name": "site-1", "type": "simulated", "properties": {"password": "hunter2"}}


class InfraSite(amp.CommandLocator):
    """A cluster's infrastructure side: accepts everything, or fails with `error`."""

    def __init__(self) -> None:
        self.created: list[Any] = []
        self.deleted: list[tuple[str, Any]] = []
        self.found: list[Any] = []
        self.error: Exception | None = None
        self.result: Any = None
        self._ids = itertools.count(1)

    def _maybe_fail(self) -> None:
        if self.error is not None:
            raise self.error

    @commands.CreateInfrastructure.responder
    def create(self, request: Any) -> dict[str, Any]:
        self.created.append(request)
        self._maybe_fail()
        n = next(self._ids)
        return {"infrastructure_id": f"inf-{n}", "request_id": f"req-{n}"}

    @commands.DeleteInfrastructure.responder
    def delete(self, infrastructure_id: str, deployment_location: Any) -> dict[str, Any]:
        self.deleted.append((infrastructure_id, deployment_location))
        self._maybe_fail()
        return {"infrastructure_id": infrastructure_id, "request_id": f"del-{next(self._ids)}"}

    @commands.FindInfrastructure.responder
    def find(self, request: Any) -> dict[str, Any]:
        self.found.append(request)
        self._maybe_fail()
        return {"result": self.result}


def create_body(**overrides: Any) -> dict[str, Any]:
    return {"deploymentLocation": LOCATION, "template": "tosca_definitions_version: tosca_simple_yaml_1_0", "templateType": "TOSCA",
            "systemProperties": {"resourceName": {"type": "string", "value": "vm-1"}}, "properties": {"size": {"type": "string", "value": "s"}},
            **overrides}


def ignition_error(result: HTTPResult, status: int) -> str:
    """The message of an error in Ignition's shape, having checked the shape and status."""
    assert result.status == status, (result.status, result.raw)
    assert result.headers["content-type"] == "application/json"
    body = result.json()
    assert set(body) == {"localizedMessage", "status"} and body["status"] == status, body
    assert isinstance(body["localizedMessage"], str) and body["localizedMessage"]
    return str(body["localizedMessage"])


async def connect(stack: RegionStack, site: InfraSite | None = None, uuid: str = C1, name: str = "site-1") -> Any:
    return await stack.connect_cluster(uuid, name, locator=site or InfraSite())


async def post(stack: RegionStack, op: str, body: Any, token: str | None = "admin", **kwargs: Any) -> HTTPResult:
    bearer = {"admin": stack.admin_token, "read": stack.read_token}.get(token or "", token)
    return await stack.request("POST", f"/api/infrastructure/{op}", token=bearer, json=body, **kwargs)


async def disconnect(stack: RegionStack, proto: Any, uuid: str = C1) -> None:
    proto.transport.loseConnection()

    async def gone() -> bool:
        return stack.registry.connection_count(uuid) == 0

    await eventually(gone)


async def report(proto: Any, task: dict[str, Any], operation: str = "create", location: Any = None) -> Any:
    return await proto.call(ReportInfrastructureTask, task=task, operation=operation,
                            deployment_location=location or {"name": "site-1", "type": "simulated"})


# -- the lifecycle ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_query_complete_delete_through_the_api_and_the_cluster_reports(region_stack: RegionStack) -> None:
    site = InfraSite()
    cluster = await connect(region_stack, site)
    created = await post(region_stack, "create", create_body())
    assert created.status == 202, created.raw
    assert created.json() == {"infrastructureId": "inf-1", "requestId": "req-1"}
    assert site.created == [{"template": create_body()["template"], "template_type": "TOSCA",
                             "system_properties": create_body()["systemProperties"], "properties": create_body()["properties"],
                             "deployment_location": LOCATION}]
    query = {"infrastructureId": "inf-1", "requestId": "req-1", "deploymentLocation": LOCATION}
    in_progress = await post(region_stack, "query", query, token="read")
    assert in_progress.status == 200 and in_progress.json() == {"infrastructureId": "inf-1", "requestId": "req-1", "status": "IN_PROGRESS"}

    task = {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE", "outputs": {"ip": "10.0.0.7"}}
    assert await report(cluster, task) == {}
    complete = await post(region_stack, "query", query, token="read")
    assert complete.status == 200 and complete.json() == task
    # A repeat is acknowledged and publishes nothing more.
    assert await report(cluster, task) == {}
    events = await region_stack.request("GET", "/api/v1/events?type=infrastructure.task&request_id=req-1", token=region_stack.read_token)
    assert [(e["subject"], e["outcome"], e["data"]) for e in events.json()["items"]] == [("inf-1", "COMPLETE", task)]
    everything = await region_stack.request("GET", "/api/v1/events?request_id=req-1", token=region_stack.read_token)
    assert [e["type"] for e in everything.json()["items"]] == ["infrastructure.create.requested", "infrastructure.task"]
    assert b"hunter2" not in everything.raw

    detail = await region_stack.request("GET", "/api/v1/infrastructures/site-1/inf-1", token=region_stack.read_token)
    assert detail.status == 200
    record = detail.json()
    assert (record["state"], record["outputs"], record["instance_name"], record["cluster"]) == ("created", {"ip": "10.0.0.7"}, "vm-1", C1)
    assert record["created_by"] == f"token:{region_stack.admin_token_id}" and b"hunter2" not in detail.raw

    deleted = await post(region_stack, "delete", {"infrastructureId": "inf-1", "deploymentLocation": LOCATION})
    assert deleted.status == 202 and deleted.json() == {"infrastructureId": "inf-1", "requestId": "del-2"}
    assert site.deleted == [("inf-1", LOCATION)]
    await report(cluster, {"requestId": "del-2", "infrastructureId": "inf-1", "status": "COMPLETE"}, "delete")
    gone = await post(region_stack, "query", {**query, "requestId": "del-2"}, token="read")
    assert gone.json()["status"] == "COMPLETE"
    # Deleting it again: the region knows it is gone, the cluster is not asked.
    again = await post(region_stack, "delete", {"infrastructureId": "inf-1", "deploymentLocation": LOCATION})
    assert "deleted" in ignition_error(again, 400) and len(site.deleted) == 1
    detail = await region_stack.request("GET", f"/api/v1/infrastructures/{C1}/inf-1", token=region_stack.read_token)
    assert detail.json()["state"] == "deleted"
    assert [(r["request_id"], r["operation"], r["status"]) for r in detail.json()["requests"]] == [
        ("req-1", "create", "COMPLETE"), ("del-2", "delete", "COMPLETE")]


@pytest_twisted.ensureDeferred
async def test_a_failed_task_is_queried_with_its_failure_details(region_stack: RegionStack) -> None:
    cluster = await connect(region_stack)
    await post(region_stack, "create", create_body())
    failed = {"requestId": "req-1", "infrastructureId": "inf-1", "status": "FAILED",
              "failureDetails": {"failureCode": "INSUFFICIENT_CAPACITY", "description": "no machines free"}}
    await report(cluster, failed)
    result = await post(region_stack, "query", {"infrastructureId": "inf-1", "requestId": "req-1", "deploymentLocation": {"name": "site-1"}}, token="read")
    assert result.json() == failed


@pytest_twisted.ensureDeferred
async def test_query_is_answered_while_the_cluster_is_away(region_stack: RegionStack) -> None:
    cluster = await connect(region_stack)
    await post(region_stack, "create", create_body())
    await disconnect(region_stack, cluster)
    result = await post(region_stack, "query", {"infrastructureId": "inf-1", "requestId": "req-1", "deploymentLocation": LOCATION}, token="read")
    assert result.status == 200 and result.json()["status"] == "IN_PROGRESS"


@pytest_twisted.ensureDeferred
async def test_query_of_unknown_infrastructure_request_or_location_is_a_400(region_stack: RegionStack) -> None:
    await connect(region_stack)
    await post(region_stack, "create", create_body())
    base = {"infrastructureId": "inf-1", "requestId": "req-1", "deploymentLocation": LOCATION}
    assert "no infrastructure" in ignition_error(await post(region_stack, "query", {**base, "infrastructureId": "nope"}, token="read"), 400)
    assert "no request" in ignition_error(await post(region_stack, "query", {**base, "requestId": "nope"}, token="read"), 400)
    elsewhere = {**base, "deploymentLocation": {"name": "site-2"}}
    assert "no infrastructure" in ignition_error(await post(region_stack, "query", elsewhere, token="read"), 400)


@pytest_twisted.ensureDeferred
async def test_a_completion_the_region_never_recorded_is_recorded_from_the_report(region_stack: RegionStack) -> None:
    """The cluster accepted a create whose record the region lost (it crashed before writing it)."""
    cluster = await connect(region_stack)
    task = {"requestId": "lost-1", "infrastructureId": "inf-lost", "status": "COMPLETE", "outputs": {"a": "b"}}
    assert await report(cluster, task) == {}
    result = await post(region_stack, "query", {"infrastructureId": "inf-lost", "requestId": "lost-1", "deploymentLocation": LOCATION}, token="read")
    assert result.status == 200 and result.json() == task
    listed = await region_stack.request("GET", "/api/v1/infrastructures?state=created", token=region_stack.read_token)
    assert [(i["infrastructure_id"], i["created_by"]) for i in listed.json()["items"]] == [("inf-lost", f"cluster:{C1}")]
    assert await report(cluster, task) == {}
    events = await region_stack.request("GET", "/api/v1/events?type=infrastructure.task", token=region_stack.read_token)
    assert len(events.json()["items"]) == 1


@pytest_twisted.ensureDeferred
async def test_a_malformed_or_contradicting_report_is_refused_and_not_acknowledged(region_stack: RegionStack) -> None:
    cluster = await connect(region_stack)
    await post(region_stack, "create", create_body())
    with pytest.raises(rpc_errors.InvalidArgument):
        await report(cluster, {"requestId": "req-1", "status": "DONE"})
    with pytest.raises(rpc_errors.InvalidArgument):
        await report(cluster, {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE"}, "delete")
    with pytest.raises(rpc_errors.InvalidArgument):
        await report(cluster, {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE"}, "create", {"type": "x"})
    events = await region_stack.request("GET", "/api/v1/events?type=infrastructure.task", token=region_stack.read_token)
    assert events.json()["items"] == []


@pytest_twisted.ensureDeferred
async def test_find_answers_the_clusters_result_or_null(region_stack: RegionStack) -> None:
    site = InfraSite()
    await connect(region_stack, site)
    body = {"deploymentLocation": LOCATION, "template": "t", "templateType": "TOSCA", "instanceName": "vm-1"}
    assert (await post(region_stack, "find", body, token="read")).json() == {"result": None}
    site.result = {"infrastructureId": "inf-9", "outputs": {"ip": "1"}}
    found = await post(region_stack, "find", body, token="read")
    assert found.status == 200 and found.json() == {"result": {"infrastructureId": "inf-9", "outputs": {"ip": "1"}}}
    assert site.found[-1] == {"template": "t", "template_type": "TOSCA", "instance_name": "vm-1", "deployment_location": LOCATION}


# -- errors -------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tokens_are_checked_and_refusals_are_in_ignitions_shape(region_stack: RegionStack) -> None:
    await connect(region_stack)
    for op in ("create", "query", "delete", "find"):
        missing = await region_stack.request("POST", f"/api/infrastructure/{op}", json={})
        ignition_error(missing, 401)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        ignition_error(await post(region_stack, op, {}, token="opt_unknown"), 401)
    for op in ("create", "delete"):
        assert "admin" in ignition_error(await post(region_stack, op, create_body(), token="read"), 403)
    # Reads may query and find.
    assert (await post(region_stack, "find", {"deploymentLocation": LOCATION, "template": "t", "templateType": "T", "instanceName": "n"},
                       token="read")).status == 200


@pytest.mark.parametrize("op, body, words", [
    ("create", {}, ["deploymentLocation: required", "template: required", "templateType: required"]),
    ("create", create_body(template=5, templateType=None), ["template: must be a string", "templateType: must be a string"]),
    ("create", create_body(deploymentLocation={"type": "simulated"}), ["deploymentLocation.name: required"]),
    ("create", create_body(deploymentLocation={"name": 7, "type": [], "properties": "x"}),
     ["deploymentLocation.name: must be a string", "deploymentLocation.type: must be a string", "deploymentLocation.properties: must be an object"]),
    ("create", create_body(deploymentLocation=None), ["deploymentLocation: must be an object"]),
    ("create", create_body(systemProperties=[], properties="p"), ["systemProperties: must be an object", "properties: must be an object"]),
    ("create", create_body(template="\ud800"), ["template: must be valid Unicode text"]),
    ("query", {"deploymentLocation": LOCATION}, ["infrastructureId: required", "requestId: required"]),
    ("query", {"deploymentLocation": LOCATION, "infrastructureId": 1, "requestId": {}}, ["infrastructureId: must be a string", "requestId: must be a string"]),
    ("delete", {"infrastructureId": "x"}, ["deploymentLocation: required"]),
    ("delete", {"infrastructureId": ["x"], "deploymentLocation": LOCATION}, ["infrastructureId: must be a string"]),
    ("delete", {"infrastructureId": "", "deploymentLocation": LOCATION}, ["infrastructureId: must be 1 to 1024 characters"]),
    ("query", {"infrastructureId": "i" * 1025, "requestId": "", "deploymentLocation": LOCATION},
     ["infrastructureId: must be 1 to 1024 characters", "requestId: must be 1 to 1024 characters"]),
    ("find", {"deploymentLocation": LOCATION, "template": "t", "templateType": "T"}, ["instanceName: required"]),
    ("find", [], ["JSON object"]),
    ("find", "text", ["JSON object"]),
])
@pytest_twisted.ensureDeferred
async def test_every_problem_with_a_body_is_named_in_a_400(region_stack: RegionStack, op: str, body: Any, words: list[str]) -> None:
    await connect(region_stack)
    message = ignition_error(await post(region_stack, op, body), 400)
    for word in words:
        assert word in message, message


@pytest_twisted.ensureDeferred
async def test_bodies_that_are_not_json_too_large_or_not_objects_get_ignitions_error_body(region_stack: RegionStack) -> None:
    await connect(region_stack)
    admin = region_stack.admin_token
    as_json = {"Content-Type": "application/json"}
    for op in ("create", "query", "delete", "find"):
        path = f"/api/infrastructure/{op}"
        assert "JSON" in ignition_error(await region_stack.request("POST", path, token=admin, data=b"{", headers=as_json), 400)
        ignition_error(await region_stack.request("POST", path, token=admin, data=b"x=1", headers={"Content-Type": "text/plain"}), 415)
        ignition_error(await region_stack.request("POST", path, token=admin, data=b"{}" + b" " * (1024 * 1024), headers=as_json), 413)
        assert "required" in ignition_error(await region_stack.request("POST", path, token=admin), 400)
        assert "NUL" in ignition_error(await region_stack.request("POST", path, token=admin, data=b'{"template": "\\u0000"}', headers=as_json), 400)


@pytest_twisted.ensureDeferred
async def test_unknown_fields_are_accepted_and_a_template_near_the_body_limit_reaches_the_cluster(region_stack: RegionStack) -> None:
    site = InfraSite()
    await connect(region_stack, site)
    extra = create_body(colour="blue", deploymentLocation={**LOCATION, "zone": "a"})
    assert (await post(region_stack, "create", extra)).status == 202
    template = "x" * (1024 * 1024 - 2000)
    big = await post(region_stack, "create", create_body(template=template))
    assert big.status == 202, big.raw[:200]
    assert site.created[-1]["template"] == template


@pytest_twisted.ensureDeferred
async def test_an_unknown_or_disconnected_location_is_unreachable(region_stack: RegionStack) -> None:
    region_stack.app.infrastructure_service.connect_wait = 0.05
    proto = await connect(region_stack)
    await disconnect(region_stack, proto)
    for op, body in (("create", create_body()), ("delete", {"infrastructureId": "x", "deploymentLocation": LOCATION}),
                     ("find", {"deploymentLocation": LOCATION, "template": "t", "templateType": "T", "instanceName": "n"})):
        assert "not connected" in ignition_error(await post(region_stack, op, body), 400)
        nowhere = {**body, "deploymentLocation": {"name": "nowhere"}}
        assert "not a cluster known" in ignition_error(await post(region_stack, op, nowhere), 400)
        empty = {**body, "deploymentLocation": {"name": ""}}
        ignition_error(await post(region_stack, op, empty), 400)


@pytest.mark.parametrize("error, status", [
    (rpc_errors.InvalidInfrastructureTemplate("the template does not parse"), 400),
    (rpc_errors.InvalidInfrastructureRequest("unknown location type"), 400),
    (rpc_errors.InfrastructureNotFound("no such thing"), 400),
    (rpc_errors.InfrastructureRequestNotFound("no such request"), 400),
    (rpc_errors.UnreachableDeploymentLocation("the VIM is down"), 400),
    (rpc_errors.TemporaryInfrastructureError("busy, try later"), 503),
    (rpc_errors.InfrastructureError("the driver broke"), 500),
])
@pytest_twisted.ensureDeferred
async def test_each_driver_error_class_gets_ignitions_status(region_stack: RegionStack, error: Exception, status: int) -> None:
    site = InfraSite()
    site.error = error
    await connect(region_stack, site)
    bodies = {"create": create_body(), "delete": {"infrastructureId": "inf-1", "deploymentLocation": LOCATION},
              "find": {"deploymentLocation": LOCATION, "template": "t", "templateType": "T", "instanceName": "n"}}
    for op, body in bodies.items():
        result = await post(region_stack, op, body)
        assert ignition_error(result, status) == str(error)
        if status == 503:
            assert int(result.headers["retry-after"]) > 0
    listed = await region_stack.request("GET", "/api/v1/infrastructures", token=region_stack.read_token)
    assert listed.json()["total"] == 0


@pytest_twisted.ensureDeferred
async def test_a_cluster_that_breaks_or_does_not_know_the_commands(region_stack: RegionStack) -> None:
    site = InfraSite()
    site.error = RuntimeError("bug in the cluster")
    await connect(region_stack, site)
    assert "reference" in ignition_error(await post(region_stack, "create", create_body()), 500)
    await region_stack.connect_cluster(C2, "old-site")
    old = create_body(deploymentLocation={"name": "old-site"})
    assert "does not support" in ignition_error(await post(region_stack, "create", old), 400)


@pytest_twisted.ensureDeferred
async def test_a_cluster_that_does_not_answer_in_time_is_a_temporary_error(region_stack: RegionStack) -> None:
    region_stack.app.infrastructure_service.call_timeout = 0.3
    site = InfraSite()
    mute = await connect(region_stack, site)
    mute.transport.pauseProducing()
    result = await post(region_stack, "create", create_body())
    assert "did not answer" in ignition_error(result, 503)
    assert int(result.headers["retry-after"]) > 0


@pytest_twisted.ensureDeferred
async def test_an_ambiguous_location_name_is_an_invalid_request(region_stack: RegionStack) -> None:
    await connect(region_stack, uuid=C1, name="twin")
    await connect(region_stack, uuid=C2, name="twin")
    result = await post(region_stack, "create", create_body(deploymentLocation={"name": "twin"}))
    assert "uuid" in ignition_error(result, 400)
    by_uuid = await post(region_stack, "create", create_body(deploymentLocation={"name": C2}))
    assert by_uuid.status == 202


# -- the region's records --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_records_are_listed_filtered_paged_and_shown_with_their_requests(region_stack: RegionStack) -> None:
    cluster = await connect(region_stack)
    await connect(region_stack, uuid=C2, name="site-2")
    for _ in range(3):
        assert (await post(region_stack, "create", create_body())).status == 202
    assert (await post(region_stack, "create", create_body(deploymentLocation={"name": "site-2"}))).status == 202
    await report(cluster, {"requestId": "req-2", "infrastructureId": "inf-2", "status": "COMPLETE"})
    read = region_stack.read_token

    async def get(path: str) -> Any:
        result = await region_stack.request("GET", path, token=read)
        assert result.status == 200, result.raw
        return result.json()

    everything = await get("/api/v1/infrastructures")
    assert everything["total"] == 4 and everything["page"] == 1
    assert {(i["cluster_name"], i["infrastructure_id"]) for i in everything["items"]} == {
        ("site-1", "inf-1"), ("site-1", "inf-2"), ("site-1", "inf-3"), ("site-2", "inf-1")}
    page = await get("/api/v1/infrastructures?cluster=site-1&page=2&page_size=2")
    assert page["total"] == 3 and [i["infrastructure_id"] for i in page["items"]] == ["inf-3"]
    assert [i["infrastructure_id"] for i in (await get("/api/v1/infrastructures?state=created"))["items"]] == ["inf-2"]
    assert [i["cluster"] for i in (await get("/api/v1/infrastructures?location=site-2"))["items"]] == [C2]
    detail = await get(f"/api/v1/infrastructures/{C2}/inf-1")
    assert detail["location"]["name"] == "site-2" and [r["request_id"] for r in detail["requests"]] == ["req-1"]

    async def error(path: str, status: int) -> dict[str, Any]:
        result = await region_stack.request("GET", path, token=read)
        assert result.status == status, result.raw
        return dict(result.json()["error"])

    assert (await error("/api/v1/infrastructures?state=happy", 400))["details"] == {"state": "must be one of creating, created, create_failed, deleting, deleted, delete_failed"}
    await error("/api/v1/infrastructures?page_size=0", 400)
    await error(f"/api/v1/infrastructures?cluster={uuidlib.uuid4()}", 404)
    await error("/api/v1/infrastructures/site-1/nope", 404)
    assert (await error("/api/v1/infrastructures/site-1/a%00b", 400))["details"] == {"id": "must not contain NUL"}
    await error("/api/v1/infrastructures/a%00b/inf-1", 400)
    await error(f"/api/v1/infrastructures/{uuidlib.uuid4()}/inf-1", 404)
    assert (await region_stack.request("GET", "/api/v1/infrastructures")).status == 401


@pytest_twisted.ensureDeferred
async def test_the_openapi_document_describes_the_ignition_routes(region_stack: RegionStack) -> None:
    document = (await region_stack.request("GET", "/api/openapi.json")).json()
    create = document["paths"]["/api/infrastructure/create"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["deploymentLocation", "template", "templateType"]
    assert schema["properties"]["deploymentLocation"]["required"] == ["name"]
    assert create["x-role"] == "admin" and {"202", "400", "401", "403", "413", "415", "500", "503"} <= set(create["responses"])
    assert document["paths"]["/api/infrastructure/query"]["post"]["x-role"] == "read"
    assert document["paths"]["/api/infrastructure/find"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["required"] == ["result"]
    # Errors are documented in Ignition's shape, as they are served.
    assert create["responses"]["400"]["content"]["application/json"]["schema"]["required"] == ["localizedMessage", "status"]
    assert json.dumps(document)


@pytest_twisted.ensureDeferred
async def test_a_wrong_method_on_an_ignition_path_is_answered_in_ignition_shape(region_stack: RegionStack) -> None:
    wrong = await region_stack.request("GET", "/api/infrastructure/create", token=region_stack.admin_token)
    assert wrong.status == 405 and wrong.json() == {"localizedMessage": "GET is not allowed on /api/infrastructure/create", "status": 405}
    assert wrong.headers["allow"] == "POST"


@pytest_twisted.ensureDeferred
async def test_text_postgresql_cannot_store_in_a_property_is_not_a_500(region_stack: RegionStack) -> None:
    await connect(region_stack)
    created = await post(region_stack, "create", create_body(systemProperties={"resourceName": "vm-\udc00"}, properties={"p": "\ud800"}))
    assert created.status == 202, created.raw
    detail = await region_stack.request("GET", "/api/v1/infrastructures/site-1/inf-1", token=region_stack.read_token)
    assert detail.json()["instance_name"] == "vm-?"

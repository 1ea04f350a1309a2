"""
The region's infrastructure records and service on a real PostgreSQL:
accepted requests, de-duplicated completions, the lost-record case, late
reports, queries answered from the records, and how every failure of a
cluster call becomes one of Ignition's error classes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import Clock

from regiond.clusters import ClusterStore
from regiond.db import Database
from regiond.infrastructure.service import (
    CreateRequest,
    FindRequest,
    InfrastructureService,
    as_infrastructure_error,
    check_report,
    instance_name_of,
)
from regiond.infrastructure.store import (
    InfrastructureStore,
    Location,
    ReportMismatch,
    TaskReport,
)
from regiond.rpc.registry import ConnectionRegistry
from rpc import cluster as commands
from rpc import errors as rpc_errors
from tests.regionstack import eventually

C1 = "aaaaaaaa-0000-4000-8000-000000000001"
C2 = "aaaaaaaa-0000-4000-8000-000000000002"
SITE = Location("site-1", "simulated")


async def add_cluster(db: Database, uuid: str = C1, name: str = "site-1") -> None:
    await db.execute("INSERT INTO clusters (uuid, name) VALUES (%s, %s)", (uuid, name))


async def task_events(db: Database) -> list[dict[str, Any]]:
    return await db.fetch("SELECT type, actor, cluster_uuid::text AS cluster_uuid, subject, outcome, data FROM events"
                          " WHERE type = 'infrastructure.task' ORDER BY id")


async def accept_create(store: InfrastructureStore, infra: str = "inf-1", request: str = "req-1", **kw: Any) -> None:
    await store.create_accepted(C1, infra, request, SITE, instance_name=kw.get("instance_name", "vm-1"),
                                template_type="TOSCA", template_sha256="ab" * 32, actor="token:1")


def done(infra: str = "inf-1", request: str = "req-1", status: str = "COMPLETE", **kw: Any) -> TaskReport:
    return TaskReport(request, infra, status, **kw)


# -- the store ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_create_is_recorded_and_its_completion_records_state_outputs_and_one_task_event(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    record = await store.get(C1, "inf-1")
    assert record is not None
    assert (record["state"], record["instance_name"], record["template_type"], record["created_by"]) == ("creating", "vm-1", "TOSCA", "token:1")
    assert record["location"] == {"name": "site-1", "type": "simulated"} and record["cluster_name"] == "site-1"
    assert [(r["request_id"], r["operation"], r["status"], r["completed_at"]) for r in record["requests"]] == [("req-1", "create", "IN_PROGRESS", None)]
    assert (await store.task("site-1", "inf-1", "req-1")).to_event() == {"requestId": "req-1", "infrastructureId": "inf-1", "status": "IN_PROGRESS"}

    assert await store.complete(C1, done(outputs={"ip": "10.0.0.5"}), "create", SITE) is True
    record = await store.get(C1, "inf-1")
    assert record["state"] == "created" and record["outputs"] == {"ip": "10.0.0.5"}
    assert record["requests"][0]["status"] == "COMPLETE" and record["requests"][0]["completed_at"] is not None
    assert await task_events(db) == [{
        "type": "infrastructure.task", "actor": f"cluster:{C1}", "cluster_uuid": C1, "subject": "inf-1", "outcome": "COMPLETE",
        "data": {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE", "outputs": {"ip": "10.0.0.5"}},
    }]
    requested = await db.fetch("SELECT data FROM events WHERE type = 'infrastructure.create.requested'")
    assert requested[0]["data"]["requestId"] == "req-1" and requested[0]["data"]["templateSha256"] == "ab" * 32


@pytest_twisted.ensureDeferred
async def test_a_repeated_report_is_acknowledged_and_changes_and_publishes_nothing(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    assert await store.complete(C1, done(outputs={"a": "1"}), "create", SITE) is True
    before = await store.get(C1, "inf-1")
    # The same report again, and one that says something else about the same request: both ignored.
    assert await store.complete(C1, done(outputs={"a": "1"}), "create", SITE) is False
    assert await store.complete(C1, done(status="FAILED", failure_code="INTERNAL_ERROR", failure_description="x"), "create", SITE) is False
    assert await store.get(C1, "inf-1") == before
    assert len(await task_events(db)) == 1


@pytest_twisted.ensureDeferred
async def test_reports_arriving_together_are_recorded_once(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    results = await gatherResults([Deferred.fromCoroutine(store.complete(C1, done(), "create", SITE)) for _ in range(4)])
    assert sorted(results) == [False, False, False, True]
    assert len(await task_events(db)) == 1


@pytest_twisted.ensureDeferred
async def test_a_lost_request_is_recorded_from_its_report_and_the_late_insert_keeps_its_outcome(db: Database) -> None:
    """The cluster accepted, the region lost the record (or had not written it yet), the report came first."""
    await add_cluster(db)
    store = InfrastructureStore(db)
    assert await store.complete(C1, done(outputs={"ip": "1"}), "create", Location("site-1", "simulated")) is True
    record = await store.get(C1, "inf-1")
    assert record["state"] == "created" and record["outputs"] == {"ip": "1"} and record["created_by"] == f"cluster:{C1}"
    assert [(r["status"], r["actor"]) for r in record["requests"]] == [("COMPLETE", f"cluster:{C1}")]
    assert (await store.task("site-1", "inf-1", "req-1")).status == "COMPLETE"
    # The API's own insert lands afterwards: it adds what it knows and leaves the outcome alone.
    await accept_create(store)
    record = await store.get(C1, "inf-1")
    assert record["state"] == "created" and record["outputs"] == {"ip": "1"}
    assert (record["template_type"], record["instance_name"], record["created_by"]) == ("TOSCA", "vm-1", "token:1")
    assert [(r["status"], r["actor"]) for r in record["requests"]] == [("COMPLETE", "token:1")]
    assert len(await task_events(db)) == 1


@pytest_twisted.ensureDeferred
async def test_a_lost_delete_of_unknown_infrastructure_is_recorded_as_deleted(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    assert await store.complete(C1, done("old-1", "del-1"), "delete", SITE) is True
    record = await store.get(C1, "old-1")
    assert record["state"] == "deleted" and record["requests"][0]["operation"] == "delete"


@pytest_twisted.ensureDeferred
async def test_failures_are_recorded_with_their_details_and_read_back_in_ignitions_shape(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    await store.complete(C1, done(status="FAILED", failure_code="INSUFFICIENT_CAPACITY", failure_description="no room"), "create", SITE)
    record = await store.get(C1, "inf-1")
    assert record["state"] == "create_failed"
    assert (record["requests"][0]["failure_code"], record["requests"][0]["failure_description"]) == ("INSUFFICIENT_CAPACITY", "no room")
    assert (await store.task("site-1", "inf-1", "req-1")).to_event() == {
        "requestId": "req-1", "infrastructureId": "inf-1", "status": "FAILED",
        "failureDetails": {"failureCode": "INSUFFICIENT_CAPACITY", "description": "no room"},
    }


@pytest_twisted.ensureDeferred
async def test_a_delete_moves_the_infrastructure_through_deleting_to_deleted_or_delete_failed(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    await store.complete(C1, done(outputs={"k": "v"}), "create", SITE)
    await store.delete_accepted(C1, "inf-1", "del-1", SITE, "token:2")
    assert await store.state(C1, "inf-1") == "deleting"
    await store.complete(C1, done(request="del-1", status="FAILED", failure_code="INFRASTRUCTURE_ERROR"), "delete", SITE)
    assert await store.state(C1, "inf-1") == "delete_failed"
    await store.delete_accepted(C1, "inf-1", "del-2", SITE, "token:2")
    await store.complete(C1, done(request="del-2"), "delete", SITE)
    record = await store.get(C1, "inf-1")
    assert record["state"] == "deleted" and record["outputs"] == {"k": "v"}
    assert [(r["request_id"], r["operation"], r["status"]) for r in record["requests"]] == [
        ("req-1", "create", "COMPLETE"), ("del-1", "delete", "FAILED"), ("del-2", "delete", "COMPLETE")]


@pytest_twisted.ensureDeferred
async def test_a_late_create_report_does_not_undo_a_newer_delete(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    await store.delete_accepted(C1, "inf-1", "del-1", SITE, "token:2")
    await store.complete(C1, done(request="del-1"), "delete", SITE)
    assert await store.complete(C1, done(outputs={"late": "yes"}), "create", SITE) is True
    record = await store.get(C1, "inf-1")
    assert record["state"] == "deleted"
    assert [r["status"] for r in record["requests"]] == ["COMPLETE", "COMPLETE"]
    assert len(await task_events(db)) == 2


@pytest_twisted.ensureDeferred
async def test_a_report_contradicting_the_recorded_request_is_refused(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    with pytest.raises(ReportMismatch):
        await store.complete(C1, done(infra="other"), "create", SITE)
    with pytest.raises(ReportMismatch):
        await store.complete(C1, done(), "delete", SITE)
    assert await store.state(C1, "inf-1") == "creating" and await task_events(db) == []


@pytest_twisted.ensureDeferred
async def test_a_reused_id_starts_its_record_over(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    await store.complete(C1, done(outputs={"a": "1"}), "create", SITE)
    await store.delete_accepted(C1, "inf-1", "del-1", SITE, "token:2")
    await store.complete(C1, done(request="del-1"), "delete", SITE)
    await accept_create(store, request="req-2", instance_name="vm-2")
    record = await store.get(C1, "inf-1")
    assert (record["state"], record["outputs"], record["instance_name"]) == ("creating", None, "vm-2")


@pytest_twisted.ensureDeferred
async def test_the_list_filters_and_pages(db: Database) -> None:
    await add_cluster(db)
    await add_cluster(db, C2, "site-2")
    store = InfrastructureStore(db)
    for n in range(3):
        await accept_create(store, f"inf-{n}", f"req-{n}")
    await store.create_accepted(C2, "inf-0", "req-x", Location("site-2"), instance_name="", template_type="HEAT",
                                template_sha256="", actor="token:1")
    await store.complete(C1, done("inf-1", "req-1"), "create", SITE)
    items, total = await store.list()
    assert total == 4 and len(items) == 4
    items, total = await store.list(cluster_uuid=C1, limit=2, offset=0)
    assert total == 3 and [i["infrastructure_id"] for i in items] == ["inf-0", "inf-1"]
    items, total = await store.list(cluster_uuid=C1, limit=2, offset=2)
    assert total == 3 and [i["infrastructure_id"] for i in items] == ["inf-2"]
    items, total = await store.list(state="created")
    assert total == 1 and items[0]["infrastructure_id"] == "inf-1"
    items, total = await store.list(location="site-2")
    assert total == 1 and items[0]["cluster"] == C2
    assert await store.list(location="nowhere", limit=5) == ([], 0)


# -- checking reports ---------------------------------------------------------------------------


def test_a_well_formed_report_becomes_the_exact_ignition_event() -> None:
    task = {"requestId": "r", "infrastructureId": "i", "status": "FAILED",
            "failureDetails": {"failureCode": "RESOURCE_NOT_FOUND", "description": "gone"}, "outputs": {"x": 1}, "extra": True}
    report, operation, location = check_report(task, "delete", {"name": "site-1", "type": "maas", "properties": {"k": "secret"}})
    assert report.to_event() == {"requestId": "r", "infrastructureId": "i", "status": "FAILED",
                                 "failureDetails": {"failureCode": "RESOURCE_NOT_FOUND", "description": "gone"}, "outputs": {"x": 1}}
    assert (operation, location) == ("delete", Location("site-1", "maas"))


@pytest.mark.parametrize("task, operation, location", [
    ({"requestId": "r", "infrastructureId": "i", "status": "IN_PROGRESS"}, "create", {"name": "s"}),
    ({"requestId": "r", "infrastructureId": "i", "status": "COMPLETE"}, "update", {"name": "s"}),
    ({"requestId": "", "infrastructureId": "i", "status": "COMPLETE"}, "create", {"name": "s"}),
    ({"requestId": "r", "status": "COMPLETE"}, "create", {"name": "s"}),
    ({"requestId": "r", "infrastructureId": 5, "status": "COMPLETE"}, "create", {"name": "s"}),
    ({"requestId": "r", "infrastructureId": "i", "status": "FAILED", "failureDetails": {"failureCode": "OOPS"}}, "create", {"name": "s"}),
    ({"requestId": "r", "infrastructureId": "i", "status": "FAILED", "failureDetails": "bad"}, "create", {"name": "s"}),
    ({"requestId": "r", "infrastructureId": "i", "status": "COMPLETE", "outputs": [1]}, "create", {"name": "s"}),
    ({"requestId": "r", "infrastructureId": "i", "status": "COMPLETE"}, "create", {"type": "x"}),
    ({"requestId": "r", "infrastructureId": "i", "status": "COMPLETE"}, "create", "site"),
    ({"requestId": "r\ud800", "infrastructureId": "i", "status": "COMPLETE"}, "create", {"name": "s"}),
    ([], "create", {"name": "s"}),
])
def test_a_malformed_report_is_an_invalid_argument(task: Any, operation: Any, location: Any) -> None:
    with pytest.raises(rpc_errors.InvalidArgument):
        check_report(task, operation, location)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8,
)


@given(
    task=st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "requestId": json_values, "infrastructureId": json_values, "status": st.sampled_from(["COMPLETE", "FAILED", "IN_PROGRESS", 1]),
        "failureDetails": st.one_of(json_values, st.fixed_dictionaries({"failureCode": st.sampled_from(["INTERNAL_ERROR", "x"]),
                                                                          "description": json_values})),
        "outputs": json_values})),
    operation=st.one_of(st.sampled_from(["create", "delete"]), st.text(max_size=6)),
    location=st.one_of(json_values, st.fixed_dictionaries({"name": json_values}, optional={"type": json_values})),
)
def test_any_report_is_either_accepted_whole_or_an_invalid_argument(task: Any, operation: Any, location: Any) -> None:
    try:
        report, op, where = check_report(task, operation, location)
    except rpc_errors.InvalidArgument as e:
        assert str(e)
        return
    assert op in ("create", "delete") and where.name and report.status in ("COMPLETE", "FAILED")
    event = report.to_event()
    assert set(event) <= {"requestId", "infrastructureId", "status", "failureDetails", "outputs"}
    assert event["requestId"] == task["requestId"] and event["infrastructureId"] == task["infrastructureId"]


def test_the_instance_name_comes_from_the_resource_name_system_property() -> None:
    assert instance_name_of({"resourceName": "vm-1"}) == "vm-1"
    assert instance_name_of({"resourceName": {"type": "string", "value": "vm-2"}}) == "vm-2"
    assert instance_name_of({"resourceName": 7}) == instance_name_of({}) == ""
    assert instance_name_of({"resourceName": "vm\udc00-\x003"}) == "vm?-3"


# -- the service ------------------------------------------------------------------------------


@pytest.mark.parametrize("error, expected", [
    (rpc_errors.NoConnectionsAvailable("none"), rpc_errors.UnreachableDeploymentLocation),
    (rpc_errors.CallTimedOut("CreateInfrastructure", 2), rpc_errors.TemporaryInfrastructureError),
    (rpc_errors.ConnectionClosed("gone"), rpc_errors.TemporaryInfrastructureError),
    (rpc_errors.UnknownCommand("CreateInfrastructure"), rpc_errors.InvalidInfrastructureRequest),
    (rpc_errors.InvalidArgument("request: bad"), rpc_errors.InvalidInfrastructureRequest),
    (rpc_errors.RemoteUnhandledError("ref-1"), rpc_errors.InfrastructureError),
    (rpc_errors.IntegrationUnavailable("x"), rpc_errors.InfrastructureError),
    (rpc_errors.InvalidInfrastructureTemplate("bad template"), rpc_errors.InvalidInfrastructureTemplate),
    (rpc_errors.TemporaryInfrastructureError("busy"), rpc_errors.TemporaryInfrastructureError),
])
def test_every_failed_call_becomes_one_of_ignitions_classes(error: rpc_errors.RPCError, expected: type) -> None:
    mapped = as_infrastructure_error(error, C1, "site-1")
    assert type(mapped) is expected and str(mapped)


@attrs.define
class FakeRegistry:
    """A registry whose one cluster answers with `answers` (or fails with an exception in it)."""

    answers: dict[bytes, Any] = attrs.field(factory=dict)
    calls: list[tuple[bytes, dict[str, Any]]] = attrs.field(factory=list)
    connected: bool = True

    def getClientFor(self, uuid: str, timeout: float = 0) -> Deferred[Any]:  # noqa: N802
        if not self.connected:
            return fail(rpc_errors.NoConnectionsAvailable.from_uuid(uuid, timeout))

        def client(command: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[Any]:
            self.calls.append((command.commandName, kwargs))
            answer = self.answers[command.commandName]
            return fail(answer) if isinstance(answer, Exception) else succeed(answer)

        return succeed(client)


def service(db: Database, registry: Any) -> InfrastructureService:
    return InfrastructureService(registry, ClusterStore(db), InfrastructureStore(db), connect_wait=0)


def create_request(**overrides: Any) -> CreateRequest:
    fields = {"template": "tosca: 1", "template_type": "TOSCA", "deployment_location": {"name": "site-1", "type": "simulated", "properties": {"k": "v"}},
              "system_properties": {"resourceName": {"type": "string", "value": "vm-9"}}, "properties": {"p": "1"}}
    return CreateRequest(**{**fields, **overrides})


@pytest_twisted.ensureDeferred
async def test_a_create_is_sent_to_the_named_cluster_and_recorded_with_the_template_hash(db: Database) -> None:
    await add_cluster(db)
    registry = FakeRegistry({commands.CreateInfrastructure.commandName: {"infrastructure_id": "inf-7", "request_id": "req-7"}})
    answer = await service(db, registry).create(create_request(), "token:1")
    assert answer == {"infrastructureId": "inf-7", "requestId": "req-7"}
    [(_, kwargs)] = registry.calls
    assert kwargs["request"] == {"template": "tosca: 1", "template_type": "TOSCA", "system_properties": {"resourceName": {"type": "string", "value": "vm-9"}},
                                 "properties": {"p": "1"}, "deployment_location": {"name": "site-1", "type": "simulated", "properties": {"k": "v"}}}
    record = await InfrastructureStore(db).get(C1, "inf-7")
    assert record["template_sha256"] == hashlib.sha256(b"tosca: 1").hexdigest() and record["instance_name"] == "vm-9"
    events = await db.fetch("SELECT data FROM events WHERE type = 'infrastructure.create.requested'")
    assert "k" not in str(events[0]["data"]["location"]) and "properties" not in events[0]["data"]


@pytest_twisted.ensureDeferred
async def test_a_refused_or_unanswered_create_records_nothing(db: Database) -> None:
    await add_cluster(db)
    for failure, expected in ((rpc_errors.InvalidInfrastructureTemplate("no"), rpc_errors.InvalidInfrastructureTemplate),
                              (rpc_errors.CallTimedOut("CreateInfrastructure", 1), rpc_errors.TemporaryInfrastructureError)):
        registry = FakeRegistry({commands.CreateInfrastructure.commandName: failure})
        with pytest.raises(expected):
            await service(db, registry).create(create_request(), "token:1")
    accepted_without_ids = FakeRegistry({commands.CreateInfrastructure.commandName: {"infrastructure_id": "", "request_id": "r"}})
    with pytest.raises(rpc_errors.InfrastructureError):
        await service(db, accepted_without_ids).create(create_request(), "token:1")
    assert await InfrastructureStore(db).list() == ([], 0)


@pytest_twisted.ensureDeferred
async def test_unknown_ambiguous_and_disconnected_locations(db: Database) -> None:
    await add_cluster(db)
    await add_cluster(db, C2, "twin")
    await add_cluster(db, "aaaaaaaa-0000-4000-8000-000000000003", "twin")
    svc = service(db, FakeRegistry(connected=False))
    with pytest.raises(rpc_errors.UnreachableDeploymentLocation, match="not a cluster known"):
        await svc.create(create_request(deployment_location={"name": "nowhere"}), "t")
    with pytest.raises(rpc_errors.UnreachableDeploymentLocation, match="not a cluster known"):
        await svc.create(create_request(deployment_location={"name": "x" * 300}), "t")
    with pytest.raises(rpc_errors.InvalidInfrastructureRequest, match="2 clusters"):
        await svc.find(FindRequest("t", "TOSCA", "vm", {"name": "twin"}))
    with pytest.raises(rpc_errors.UnreachableDeploymentLocation, match="not connected"):
        await svc.delete("inf-1", {"name": "site-1"}, "t")
    # By uuid works as well as by name.
    assert await svc.locate({"name": C1}) == C1


@pytest_twisted.ensureDeferred
async def test_the_real_registry_waits_briefly_for_a_cluster_to_come_back(db: Database) -> None:
    await add_cluster(db)
    clock = Clock()
    svc = InfrastructureService(ConnectionRegistry(clock), ClusterStore(db), InfrastructureStore(db), connect_wait=1.0)
    pending = Deferred.fromCoroutine(svc.find(FindRequest("t", "TOSCA", "vm", {"name": "site-1"})))

    async def waiting() -> bool:
        return clock.getDelayedCalls() != []

    await eventually(waiting)
    assert not pending.called
    clock.advance(1.0)
    with pytest.raises(rpc_errors.UnreachableDeploymentLocation):
        await pending


@pytest_twisted.ensureDeferred
async def test_deleting_infrastructure_known_to_be_deleted_is_not_found_without_asking_the_cluster(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    await store.delete_accepted(C1, "inf-1", "del-1", SITE, "t")
    await store.complete(C1, done(request="del-1"), "delete", SITE)
    registry = FakeRegistry({commands.DeleteInfrastructure.commandName: {"infrastructure_id": "inf-1", "request_id": "del-2"}})
    with pytest.raises(rpc_errors.InfrastructureNotFound):
        await service(db, registry).delete("inf-1", {"name": "site-1"}, "t")
    assert registry.calls == []
    # Infrastructure the region has no record of is the driver's to judge.
    registry.answers[commands.DeleteInfrastructure.commandName] = {"infrastructure_id": "unknown-1", "request_id": "del-3"}
    assert await service(db, registry).delete("unknown-1", {"name": "site-1", "type": "simulated"}, "t") == {
        "infrastructureId": "unknown-1", "requestId": "del-3"}
    assert await store.state(C1, "unknown-1") == "deleting"


@pytest_twisted.ensureDeferred
async def test_query_answers_from_the_records_and_tells_a_missing_infrastructure_from_a_missing_request(db: Database) -> None:
    await add_cluster(db)
    store = InfrastructureStore(db)
    await accept_create(store)
    svc = service(db, FakeRegistry(connected=False))
    assert (await svc.query("inf-1", "req-1", {"name": "site-1"}))["status"] == "IN_PROGRESS"
    with pytest.raises(rpc_errors.InfrastructureNotFound):
        await svc.query("inf-2", "req-1", {"name": "site-1"})
    with pytest.raises(rpc_errors.InfrastructureNotFound):
        await svc.query("inf-1", "req-1", {"name": "site-2"})
    with pytest.raises(rpc_errors.InfrastructureRequestNotFound):
        await svc.query("inf-1", "req-9", {"name": "site-1"})


@pytest_twisted.ensureDeferred
async def test_find_passes_the_clusters_result_or_null(db: Database) -> None:
    await add_cluster(db)
    registry = FakeRegistry({commands.FindInfrastructure.commandName: {"result": {"infrastructureId": "inf-3", "outputs": {"ip": "1"}}}})
    svc = service(db, registry)
    request = FindRequest("t", "TOSCA", "vm-3", {"name": "site-1"})
    assert await svc.find(request) == {"result": {"infrastructureId": "inf-3", "outputs": {"ip": "1"}}}
    assert registry.calls[0][1]["request"] == {"template": "t", "template_type": "TOSCA", "instance_name": "vm-3", "deployment_location": {"name": "site-1"}}
    registry.answers[commands.FindInfrastructure.commandName] = {"result": None}
    assert await svc.find(request) == {"result": None}
    registry.answers[commands.FindInfrastructure.commandName] = {"result": ["nonsense"]}
    with pytest.raises(rpc_errors.InfrastructureError):
        await svc.find(request)


@pytest_twisted.ensureDeferred
async def test_task_completed_checks_the_report_and_refuses_contradictions(db: Database) -> None:
    await add_cluster(db)
    svc = service(db, FakeRegistry())
    await accept_create(svc.store)
    with pytest.raises(rpc_errors.InvalidArgument):
        await svc.task_completed(C1, {"requestId": "req-1"}, "create", {"name": "site-1"})
    with pytest.raises(rpc_errors.InvalidArgument, match="not a delete"):
        await svc.task_completed(C1, {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE"}, "delete", {"name": "site-1"})
    await svc.task_completed(C1, {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE"}, "create", {"name": "site-1"})
    await svc.task_completed(C1, {"requestId": "req-1", "infrastructureId": "inf-1", "status": "COMPLETE"}, "create", {"name": "site-1"})
    assert await svc.store.state(C1, "inf-1") == "created" and len(await task_events(db)) == 1


@pytest.mark.parametrize("outputs", [{"a": "x\x00y"}, {"a\x00": 1}, {"a": "\udc00"}, {"a": float("inf")}])
def test_outputs_postgresql_cannot_store_are_an_invalid_argument(outputs: Any) -> None:
    with pytest.raises(rpc_errors.InvalidArgument, match="outputs"):
        check_report({"requestId": "r", "infrastructureId": "i", "status": "COMPLETE", "outputs": outputs}, "create", {"name": "s"})

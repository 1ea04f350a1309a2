"""
The cluster's infrastructure work as a whole: the driver registry (built-in
names, entry point plugins, broken plugins, unknown types), the work the
responders call (argument checks, driver errors, journalling before the
answer), restarts on the same state directory, and the three commands over
an in-memory RPC connection with the report travelling back to the region.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent
from twisted.protocols import amp
from twisted.python.failure import Failure

from clusterd.infrastructure.driver import (
    COMPLETE,
    ENTRY_POINT_GROUP,
    IN_PROGRESS,
    DriverContext,
    Found,
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InvalidInfrastructureRequest,
    InvalidInfrastructureTemplate,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from clusterd.infrastructure.journal import Journal, write_here
from clusterd.infrastructure.registry import BUILTIN_DRIVERS, DriverRegistry
from clusterd.infrastructure.work import MAX_ID, MAX_TEMPLATE, InfrastructureWork
from clusterd.machines import MachineWork
from clusterd.responders import ClusterResponders
from rpc import errors as rpc_errors
from rpc.client import RegionClient
from rpc.cluster import CreateInfrastructure, DeleteInfrastructure, FindInfrastructure
from rpc.region import ReportInfrastructureTask
from tests.rpchelpers import make_pair
from tests.test_infra_monitor import FakeDriver, FakeRegion, step

ROOT = Path(__file__).resolve().parent.parent
LOCATION = {"name": "site-1", "type": "fake", "properties": {"zone": "a"}}
CREATE = {"template": "name: web\n", "template_type": "TOSCA", "system_properties": {"resourceId": {"type": "string", "value": "r1"}},
          "properties": {"size": {"type": "integer", "value": 2}}, "deployment_location": LOCATION}
FIND = {"template": "name: web\n", "template_type": "TOSCA", "instance_name": "web-1", "deployment_location": LOCATION}

#: Drivers the module-level factories below built, newest last.
BUILT: list[FakeDriver] = []


def make_fake(context: DriverContext) -> FakeDriver:
    """A driver factory importable by reference, as an entry point names one."""
    driver = FakeDriver()
    driver.context = context  # type: ignore[attr-defined]
    BUILT.append(driver)
    return driver


def make_other(context: DriverContext) -> FakeDriver:
    return make_fake(context)


def make_refusing(context: DriverContext) -> FakeDriver:
    raise ValueError(f"settings {dict(context.config)} lack url")


@pytest.fixture(autouse=True)
def fresh_drivers() -> Iterator[None]:
    BUILT.clear()
    yield
    BUILT.clear()


def messages(events: list[dict[str, Any]], level: LogLevel) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == level]


def context(tmp_path: Path, clock: Clock | None = None) -> DriverContext:
    return DriverContext(clock or Clock(), {}, tmp_path / "drivers", machines="machines", volumes="volumes", metrics="metrics")


def run(coroutine: Any) -> Any:
    """A coroutine's or Deferred's result (or Failure); the fakes answer at once, so no reactor is needed."""
    results: list[Any] = []
    d = coroutine if isinstance(coroutine, Deferred) else Deferred.fromCoroutine(coroutine)
    d.addBoth(results.append)
    assert results, "did not finish synchronously"
    return results[0]


# -- the registry ------------------------------------------------------------------------------


def test_the_built_in_drivers_are_the_ones_setup_cfg_registers() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    registered = {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in parser["options.entry_points"][ENTRY_POINT_GROUP].splitlines())
        if name.strip()
    }
    assert registered == dict(BUILTIN_DRIVERS) == {
        "simulated": "clusterd.infrastructure.simulated:make_driver", "maas": "clusterd.infrastructure.maas:make_driver"}


def test_the_shipped_built_in_references_load(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    registry = DriverRegistry.discover(context(tmp_path), entry_points=lambda group: [])
    assert registry.known == ("maas", "simulated")
    assert messages(logged, LogLevel.critical) == []


def test_built_in_drivers_are_known_without_any_installed_metadata(tmp_path: Path) -> None:
    registry = DriverRegistry.discover(
        context(tmp_path), builtins={"simulated": "tests.test_infra_cluster:make_fake", "maas": "tests.test_infra_cluster:make_other"},
        entry_points=lambda group: [],
    )
    assert registry.known == ("maas", "simulated")
    assert isinstance(registry.driver("simulated"), FakeDriver)


def test_an_entry_point_plugin_adds_a_location_type(tmp_path: Path) -> None:
    seen: list[str] = []

    def entry_points(group: str) -> list[EntryPoint]:
        seen.append(group)
        return [EntryPoint("acme-vim", "tests.test_infra_cluster:make_other", group)]

    registry = DriverRegistry.discover(context(tmp_path), builtins={}, entry_points=entry_points)
    assert seen == ["outpost.infrastructure_drivers"]
    assert registry.known == ("acme-vim",)
    assert registry.driver("acme-vim") is BUILT[-1]


def test_a_plugin_installed_as_a_distribution_is_found_and_a_broken_one_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: list[dict[str, Any]]
) -> None:
    info = tmp_path / "site" / "acme_vim-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-vim\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "acme = tests.test_infra_cluster:make_fake\n"
        "missing-module = acme_vim_driver_that_is_not_installed:make_driver\n"
        "missing-name = tests.test_infra_cluster:no_such_factory\n"
        "not-callable = tests.test_infra_cluster:LOCATION\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry = DriverRegistry.discover(context(tmp_path), builtins={})
    # (An installed Outpost adds its own entry points; only the fake distribution's matter here.)
    assert "acme" in registry.known
    assert not {"missing-module", "missing-name", "not-callable"} & set(registry.known)
    assert isinstance(registry.driver("acme"), FakeDriver)
    failures = messages(logged, LogLevel.critical)
    for name in ("missing-module", "missing-name", "not-callable"):
        assert any(f"Infrastructure driver {name} " in m for m in failures), name
    with pytest.raises(InvalidInfrastructureRequest, match="'missing-module'.*known types: .*acme"):
        registry.driver("missing-module")


def test_a_plugin_of_a_built_in_name_replaces_the_built_in(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    registry = DriverRegistry.discover(
        context(tmp_path), builtins={"maas": "tests.test_infra_cluster:make_refusing"},
        entry_points=lambda group: [EntryPoint("maas", "tests.test_infra_cluster:make_fake", group)],
    )
    assert isinstance(registry.driver("maas"), FakeDriver)
    assert any("replaces the built-in maas driver" in m for m in messages(logged, LogLevel.info))


def test_a_failing_built_in_is_skipped_not_fatal(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    registry = DriverRegistry.discover(
        context(tmp_path), builtins={"simulated": "no_such_package.driver:make_driver", "maas": "tests.test_infra_cluster:make_fake"},
        entry_points=lambda group: [],
    )
    assert registry.known == ("maas",)
    assert messages(logged, LogLevel.critical)


def test_listing_entry_points_that_fails_leaves_the_built_ins(tmp_path: Path) -> None:
    def broken(group: str) -> list[EntryPoint]:
        raise RuntimeError("bad metadata")

    registry = DriverRegistry.discover(context(tmp_path), builtins={"maas": "tests.test_infra_cluster:make_fake"}, entry_points=broken)
    assert registry.known == ("maas",)


def test_an_unknown_location_type_names_the_known_types(tmp_path: Path) -> None:
    registry = DriverRegistry(context(tmp_path))
    registry.register("simulated", make_fake)
    registry.register("maas", make_fake)
    with pytest.raises(InvalidInfrastructureRequest) as info:
        registry.driver("openstack")
    assert str(info.value) == ("this cluster has no infrastructure driver for deployment location type 'openstack' "
                               "(known types: maas, simulated)")


def test_a_driver_is_built_once_per_type_with_its_own_context(tmp_path: Path) -> None:
    clock = Clock()
    registry = DriverRegistry(context(tmp_path, clock), {"fake": {"url": "http://vim.test/"}})
    registry.register("fake", make_fake)
    registry.register("other", make_fake)
    assert BUILT == [], "built lazily"
    first = registry.driver("fake")
    assert registry.driver("fake") is first and len(BUILT) == 1
    ctx = first.context  # type: ignore[attr-defined]
    assert ctx.reactor is clock and ctx.config == {"url": "http://vim.test/"}
    assert ctx.state_dir == tmp_path / "drivers" / "fake" and ctx.state_dir.is_dir()
    assert (ctx.machines, ctx.volumes, ctx.metrics) == ("machines", "volumes", "metrics")
    assert registry.driver("other").context.config == {}  # type: ignore[attr-defined]
    closed: list[object] = []
    first.close = lambda: closed.append(first)  # type: ignore[attr-defined]
    registry.configure("fake", {"url": "http://elsewhere.test/"})
    assert closed == [first], "the old driver is closed before another can share its state directory"
    rebuilt = registry.driver("fake")
    assert rebuilt is not first and rebuilt.context.config == {"url": "http://elsewhere.test/"}  # type: ignore[attr-defined]


def test_a_driver_that_fails_to_start_is_an_infrastructure_error_and_tried_again(tmp_path: Path) -> None:
    registry = DriverRegistry(context(tmp_path), {"fake": {"timeout": 3}})
    registry.register("fake", make_refusing)
    with pytest.raises(InfrastructureError, match=r"the fake infrastructure driver could not be started: settings \{'timeout': 3\} lack url"):
        registry.driver("fake")
    registry.register("fake", make_fake)
    assert isinstance(registry.driver("fake"), FakeDriver)


@pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 65, 3])
def test_driver_names_must_be_location_types(tmp_path: Path, name: Any) -> None:
    with pytest.raises(ValueError):
        DriverRegistry(context(tmp_path)).register(name, make_fake)


def test_closing_the_registry_closes_the_drivers_built(tmp_path: Path) -> None:
    registry = DriverRegistry(context(tmp_path))
    registry.register("fake", make_fake)
    driver = registry.driver("fake")
    run(registry.close())
    assert driver.closed


# -- the work ------------------------------------------------------------------------------------


def make_work(tmp_path: Path, driver: FakeDriver | None = None, region: Any = None,
              clock: Clock | None = None) -> tuple[InfrastructureWork, FakeDriver, Any, Clock]:
    clock = clock or Clock()
    driver = driver or FakeDriver()
    driver.clock = clock
    region = region if region is not None else FakeRegion()
    registry = DriverRegistry(context(tmp_path, clock))
    registry.register("fake", lambda ctx: driver)
    work = InfrastructureWork(clock, registry, tmp_path / "infrastructure", region=region, write_journal=write_here)
    return work, driver, region, clock


def test_create_calls_the_driver_journals_the_task_and_monitors_it(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    work.startService()
    assert run(work.create(dict(CREATE))) == {"infrastructure_id": "inf-1", "request_id": "req-1"}
    assert driver.created == [{k: CREATE[k] for k in CREATE}]
    [watched] = Journal.open(tmp_path / "infrastructure").watched
    assert (watched.request_id, watched.infrastructure_id, watched.operation, watched.deployment_location) == (
        "req-1", "inf-1", "create", LOCATION)
    assert (work.monitored_count, work.undelivered_count) == (1, 0)
    driver.tasks["req-1"] = [COMPLETE]
    step(clock, 1)
    assert [r["task"]["status"] for r in region.reports] == [COMPLETE]
    assert (work.monitored_count, work.undelivered_count) == (0, 0)


def test_create_without_properties_gives_the_driver_empty_ones(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    request = {k: v for k, v in CREATE.items() if k not in ("properties", "system_properties")}
    run(work.create(request))
    assert driver.created[0]["properties"] == {} and driver.created[0]["system_properties"] == {}


def test_delete_is_journalled_and_monitored_like_create(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    work.startService()
    assert run(work.delete("inf-9", LOCATION)) == {"infrastructure_id": "inf-9", "request_id": "req-1"}
    assert driver.deleted == ["inf-9"]
    driver.tasks["req-1"] = [COMPLETE]
    step(clock, 1)
    assert region.reports[0]["operation"] == "delete" and region.reports[0]["task"]["infrastructureId"] == "inf-9"


def test_find_answers_the_result_or_none(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    driver.found["web-1"] = Found("inf-4", {"ip": "10.0.0.9"})
    assert run(work.find(dict(FIND))) == {"result": {"infrastructureId": "inf-4", "outputs": {"ip": "10.0.0.9"}}}
    assert run(work.find({**FIND, "instance_name": "web-2"})) == {"result": None}
    assert work.monitored_count == 0, "find starts nothing"


@pytest.mark.parametrize("answer", [("inf", "req"), Found("", {}), Found("inf", {"x": object()})], ids=["tuple", "empty-id", "not-json"])
def test_a_find_answer_that_is_not_a_found_is_an_infrastructure_error(tmp_path: Path, answer: Any) -> None:
    work, driver, region, clock = make_work(tmp_path)
    driver.found["web-1"] = answer
    assert run(work.find(dict(FIND))).check(InfrastructureError)


@pytest.mark.parametrize("error", [
    InvalidInfrastructureTemplate("bad template"), InfrastructureNotFound("no inf"), TemporaryInfrastructureError("busy"),
    UnreachableDeploymentLocation("unreachable"), InfrastructureError("broken"),
])
def test_the_drivers_own_errors_pass_through_unchanged(tmp_path: Path, error: Exception) -> None:
    work, driver, region, clock = make_work(tmp_path)
    driver.fail_with = error
    for call in (work.create(dict(CREATE)), work.delete("inf-1", LOCATION), work.find(dict(FIND))):
        assert run(call).value is error
    assert work.monitored_count == 0


@pytest.mark.parametrize(("error", "message"), [
    (KeyError("url"), "the fake driver failed to create infrastructure: KeyError: 'url'"),
    (rpc_errors.IntegrationNotConfigured("no MAAS here"), "the fake driver could not create infrastructure: no MAAS here"),
])
def test_other_driver_errors_become_infrastructure_errors(tmp_path: Path, error: Exception, message: str) -> None:
    work, driver, region, clock = make_work(tmp_path)
    driver.fail_with = error
    failure = run(work.create(dict(CREATE)))
    assert type(failure.value) is InfrastructureError and str(failure.value) == message


def test_an_accepted_answer_of_the_wrong_shape_is_an_infrastructure_error(tmp_path: Path) -> None:
    class Sloppy(FakeDriver):
        async def create_infrastructure(self, *args: Any) -> Any:
            return {"infrastructureId": "inf-1", "requestId": "req-1"}

    work, driver, region, clock = make_work(tmp_path, driver=Sloppy())
    assert "answered create with" in str(run(work.create(dict(CREATE))).value)
    assert work.journal.watched == ()


def test_a_task_the_journal_cannot_record_is_an_error_but_still_monitored(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    work.startService()
    work.journal.path.mkdir()  # the journal's file name is taken: every write fails
    failure = run(work.create(dict(CREATE)))
    assert failure.check(InfrastructureError)
    assert "accepted as request req-1 of inf-1, but the cluster could not record it" in str(failure.value)
    driver.tasks["req-1"] = [COMPLETE]
    step(clock, 1)
    assert [r["task"]["requestId"] for r in region.reports] == ["req-1"], "reported while this process lives"


def test_without_an_infrastructure_driver_for_the_type_the_request_is_refused(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    failure = run(work.create({**CREATE, "deployment_location": {"name": "x", "type": "openstack"}}))
    assert failure.check(InvalidInfrastructureRequest) and "known types: fake" in str(failure.value)


BAD_CREATES = [
    ("not a dict", "request must be a mapping"),
    ({**CREATE, "extra": 1}, "request has unknown keys extra"),
    ({k: v for k, v in CREATE.items() if k != "template"}, "request needs template"),
    ({**CREATE, "template_type": None}, "request needs template_type"),
    ({**CREATE, "template": 5}, "request.template must be a string"),
    ({**CREATE, "template": "x" * (MAX_TEMPLATE + 1)}, "request.template is longer than"),
    ({**CREATE, "template_type": ""}, "request.template_type must be a non-empty string"),
    ({**CREATE, "template_type": "T" * (MAX_ID + 1)}, "request.template_type is longer than 255"),
    ({**CREATE, "properties": []}, "request.properties must be a mapping"),
    ({**CREATE, "system_properties": {"big": "x" * 1_100_000}}, "request.system_properties is larger than"),
    ({**CREATE, "deployment_location": "site-1"}, "request.deployment_location must be a mapping"),
    ({**CREATE, "deployment_location": {"type": "fake"}}, "request.deployment_location.name must be a non-empty string"),
    ({**CREATE, "deployment_location": {"name": "a\nb", "type": "fake"}}, "request.deployment_location.name must not hold control"),
    ({**CREATE, "deployment_location": {"name": "x"}}, "request.deployment_location.type must be a location type"),
    ({**CREATE, "deployment_location": {"name": "x", "type": "a b"}}, "request.deployment_location.type must be a location type"),
    ({**CREATE, "deployment_location": {"name": "x", "type": "fake", "properties": "p"}},
     "request.deployment_location.properties must be a mapping"),
]


@pytest.mark.parametrize(("request_", "message"), BAD_CREATES)
def test_bad_create_arguments_are_invalid_arguments_naming_the_key(tmp_path: Path, request_: Any, message: str) -> None:
    work, driver, region, clock = make_work(tmp_path)
    failure = run(work.create(request_))
    assert failure.check(rpc_errors.InvalidArgument), failure
    assert message in str(failure.value)
    assert driver.created == []


@pytest.mark.parametrize(("call", "message"), [
    (lambda w: w.delete("", LOCATION), "infrastructure_id must be a non-empty string"),
    (lambda w: w.delete(None, LOCATION), "infrastructure_id must be a non-empty string"),
    (lambda w: w.delete("x" * 256, LOCATION), "infrastructure_id is longer than 255"),
    (lambda w: w.delete("inf-1", None), "deployment_location is required"),
    (lambda w: w.find({**FIND, "instance_name": ""}), "request.instance_name must be a non-empty string"),
    (lambda w: w.find({k: v for k, v in FIND.items() if k != "instance_name"}), "request needs instance_name"),
    (lambda w: w.find({**FIND, "properties": {}}), "request has unknown keys properties"),
])
def test_bad_delete_and_find_arguments_are_invalid_arguments(tmp_path: Path, call: Any, message: str) -> None:
    work, driver, region, clock = make_work(tmp_path)
    failure = run(call(work))
    assert failure.check(rpc_errors.InvalidArgument) and message in str(failure.value)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=10)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=st.dictionaries(st.sampled_from([*CREATE, "instance_name", "x"]), _json | st.sampled_from([LOCATION, "TOSCA"]),
                               max_size=7) | _json)
def test_any_request_is_answered_or_refused_with_a_declared_error(tmp_path: Path, request: Any) -> None:
    work, driver, region, clock = make_work(tmp_path)
    for call in (work.create, work.find):
        result = run(call(request))
        if isinstance(result, Failure):
            assert result.check(rpc_errors.InvalidArgument, InvalidInfrastructureRequest), result


# -- restarts --------------------------------------------------------------------------------------


def test_a_restarted_cluster_resumes_polling_the_tasks_it_was_monitoring(tmp_path: Path) -> None:
    clock = Clock()
    driver = FakeDriver()
    first, _, region, _ = make_work(tmp_path, driver=driver, clock=clock)
    first.startService()
    run(first.create(dict(CREATE)))
    step(clock, 3)
    assert len(driver.polls) == 2
    run(first.stopService())
    driver.tasks["req-1"] = [COMPLETE]
    second, _, _, _ = make_work(tmp_path, driver=driver, region=region, clock=clock)
    second.startService()
    assert second.monitored_count == 1
    step(clock, 1)
    assert [r["task"] for r in region.reports] == [{"requestId": "req-1", "infrastructureId": "inf-1", "status": COMPLETE}]
    assert Journal.open(tmp_path / "infrastructure").watched == ()


def test_a_completion_not_acknowledged_before_a_restart_is_delivered_once_after_it(tmp_path: Path) -> None:
    clock = Clock()
    driver = FakeDriver()
    region = FakeRegion()
    region.down = True
    first, _, _, _ = make_work(tmp_path, driver=driver, region=region, clock=clock)
    first.startService()
    run(first.create(dict(CREATE)))
    driver.tasks["req-1"] = [COMPLETE]
    step(clock, 5)
    assert first.undelivered_count == 1 and region.reports == []
    run(first.stopService())
    region.down = False

    acknowledged: list[str] = []
    second, _, _, _ = make_work(tmp_path, driver=driver, region=region, clock=clock)
    original = Journal.acknowledge

    def counting(self: Journal, request_id: str) -> bool:
        removed = original(self, request_id)
        if removed:
            acknowledged.append(request_id)
        return removed

    Journal.acknowledge = counting  # type: ignore[method-assign]
    try:
        second.startService()
        step(clock, 120)
    finally:
        Journal.acknowledge = original  # type: ignore[method-assign]
    assert [r["task"]["requestId"] for r in region.reports] == ["req-1"], "the stopped first run sends nothing more"
    assert acknowledged == ["req-1"]
    assert Journal.open(tmp_path / "infrastructure").undelivered == ()
    assert len(driver.polls) == 1, "an ended task is not polled again after the restart"


def test_a_call_before_start_opens_the_journal_and_start_then_polls(tmp_path: Path) -> None:
    work, driver, region, clock = make_work(tmp_path)
    run(work.create(dict(CREATE)))
    step(clock, 5)
    assert driver.polls == [], "not started: journalled only"
    work.startService()
    step(clock, 1)
    assert len(driver.polls) == 1


# -- over the wire --------------------------------------------------------------------------------


class RegionStub(amp.CommandLocator):
    """The region's side: records reports and acknowledges them (or fails while `failing`)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.failing = False

    @ReportInfrastructureTask.responder
    def report(self, task: Any, operation: str, deployment_location: Any) -> dict[str, Any]:
        if self.failing:
            raise rpc_errors.RegistrationRequired("register first")
        self.reports.append({"task": task, "operation": operation, "deployment_location": deployment_location})
        return {}


def settle(pump: Any, clock: Clock, seconds: float, by: float = 0.5) -> None:
    pump.flush()
    for _ in range(int(seconds / by)):
        clock.advance(by)
        pump.flush()


def wired(tmp_path: Path, infrastructure: bool = True) -> tuple[Any, RegionStub, InfrastructureWork, FakeDriver, Any, Clock]:
    clock = Clock()
    holder: dict[str, Any] = {}
    work, driver, _, _ = make_work(tmp_path, clock=clock, region=lambda: RegionClient(holder["cluster"], ident="region-1"))
    stub = RegionStub()
    responders = ClusterResponders(MachineWork(clock, None, region=lambda: None), None, work if infrastructure else None)
    region, cluster, pump, _ = make_pair(region_locator=stub, cluster_locator=responders, clock=clock)
    holder["cluster"] = cluster
    work.startService()
    return region, stub, work, driver, pump, clock


def answer(pump: Any, d: Deferred[Any]) -> Any:
    pump.flush()
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "no answer"
    return results[0]


def test_create_over_rpc_is_journalled_before_the_answer_and_its_end_reported_to_the_region(tmp_path: Path) -> None:
    region, stub, work, driver, pump, clock = wired(tmp_path)
    on_disk: list[Any] = []
    d = region.call(CreateInfrastructure, request=CREATE)
    d.addCallback(lambda result: on_disk.append(Journal.open(tmp_path / "infrastructure").watched) or result)
    assert answer(pump, d) == {"infrastructure_id": "inf-1", "request_id": "req-1"}
    assert [w.request_id for w in on_disk[0]] == ["req-1"], "in the journal when the region got the answer"
    driver.tasks["req-1"] = [IN_PROGRESS, {"status": "nonsense"}]  # second poll: not a task -> FAILED
    stub.failing = True
    settle(pump, clock, 3)
    assert stub.reports == [] and work.undelivered_count == 1, "an error answer is not an acknowledgement"
    stub.failing = False
    settle(pump, clock, 4)
    [report] = stub.reports
    assert report["operation"] == "create" and report["deployment_location"] == LOCATION
    assert report["task"]["status"] == "FAILED" and report["task"]["failureDetails"]["failureCode"] == "INTERNAL_ERROR"
    assert work.undelivered_count == 0


def test_delete_and_find_over_rpc(tmp_path: Path) -> None:
    region, stub, work, driver, pump, clock = wired(tmp_path)
    assert answer(pump, region.call(DeleteInfrastructure, infrastructure_id="inf-3", deployment_location=LOCATION)) == {
        "infrastructure_id": "inf-3", "request_id": "req-1"}
    driver.found["web-1"] = Found("inf-3", {"ip": "10.1.1.1", "ports": [80, 443]})
    assert answer(pump, region.call(FindInfrastructure, request=FIND)) == {
        "result": {"infrastructureId": "inf-3", "outputs": {"ip": "10.1.1.1", "ports": [80, 443]}}}
    assert answer(pump, region.call(FindInfrastructure, request={**FIND, "instance_name": "nobody"})) == {"result": None}


@pytest.mark.parametrize("error", [
    InvalidInfrastructureTemplate("template has no resources"),
    InvalidInfrastructureRequest("bad request"),
    InfrastructureNotFound("no infrastructure inf-3"),
    InfrastructureRequestNotFound("no request"),
    TemporaryInfrastructureError("VIM busy, try later"),
    UnreachableDeploymentLocation("site-1 unreachable"),
    InfrastructureError("VIM answered 500"),
])
def test_driver_errors_cross_the_wire_as_themselves(tmp_path: Path, error: Exception) -> None:
    region, stub, work, driver, pump, clock = wired(tmp_path)
    driver.fail_with = error
    for d in (region.call(CreateInfrastructure, request=CREATE),
              region.call(DeleteInfrastructure, infrastructure_id="inf-3", deployment_location=LOCATION),
              region.call(FindInfrastructure, request=FIND)):
        failure = answer(pump, d)
        assert type(failure.value) is type(error) and str(failure.value) == str(error)


def test_invalid_arguments_and_unknown_types_cross_the_wire_with_their_message(tmp_path: Path) -> None:
    region, stub, work, driver, pump, clock = wired(tmp_path)
    failure = answer(pump, region.call(CreateInfrastructure, request={**CREATE, "template": 7}))
    assert failure.check(rpc_errors.InvalidArgument) and "request.template must be a string" in str(failure.value)
    failure = answer(pump, region.call(DeleteInfrastructure, infrastructure_id="inf-1", deployment_location={"name": "x", "type": "vmware"}))
    assert failure.check(InvalidInfrastructureRequest) and "'vmware'" in str(failure.value)
    failure = answer(pump, region.call(FindInfrastructure, request=None))
    assert failure.check(rpc_errors.InvalidArgument)


def test_a_cluster_without_infrastructure_work_says_so(tmp_path: Path) -> None:
    region, stub, work, driver, pump, clock = wired(tmp_path, infrastructure=False)
    for d in (region.call(CreateInfrastructure, request=CREATE),
              region.call(DeleteInfrastructure, infrastructure_id="inf-3", deployment_location=LOCATION),
              region.call(FindInfrastructure, request=FIND)):
        failure = answer(pump, d)
        assert failure.check(InvalidInfrastructureRequest) and str(failure.value) == "this cluster does no infrastructure work"


# -- with the shipped simulated driver and a simulated VIM (real reactor, loopback HTTP) -----------


@pytest_twisted.ensureDeferred
async def test_the_simulated_driver_and_vim_run_a_create_and_a_delete_to_their_reports(tmp_path: Path) -> None:
    from twisted.internet import reactor

    from simulators.vim import simulator_url, start_vim_simulator, stop_vim_simulator
    from tests.regionstack import eventually

    port, sim = await start_vim_simulator(reactor, create_duration=0.05, delete_duration=0.05)
    region = FakeRegion()
    registry = DriverRegistry.discover(DriverContext(reactor, {}, tmp_path / "drivers"), entry_points=lambda group: [])
    registry.configure("simulated", {"url": simulator_url(port)})
    work = InfrastructureWork(reactor, registry, tmp_path / "infrastructure", region=region, interval=0.05, max_interval=0.2)
    work.startService()
    location = {"name": "site-1", "type": "simulated", "properties": {}}
    template = "resources:\n  server: {type: Simulated::Server}\noutputs:\n  ip: {get_attr: [server, ip]}\n"
    try:
        created = await work.create({"template": template, "template_type": "simulated", "deployment_location": location,
                                     "system_properties": {"resourceName": {"type": "string", "value": "web-1"}},
                                     "properties": {}})

        async def reported() -> bool:
            return len(region.reports) == 1

        await eventually(reported)
        [report] = region.reports
        assert report["operation"] == "create" and report["task"]["status"] == "COMPLETE"
        assert report["task"]["requestId"] == created["request_id"] and "ip" in report["task"]["outputs"]
        found = await work.find({"template": template, "template_type": "simulated", "instance_name": "web-1",
                                 "deployment_location": location})
        assert found["result"]["infrastructureId"] == created["infrastructure_id"]
        deleted = await work.delete(created["infrastructure_id"], location)

        async def both() -> bool:
            return len(region.reports) == 2

        await eventually(both)
        assert region.reports[1]["task"] == {"requestId": deleted["request_id"], "infrastructureId": created["infrastructure_id"],
                                             "status": "COMPLETE"}
        assert work.monitored_count == 0 and work.undelivered_count == 0
    finally:
        await work.stopService()
        await stop_vim_simulator(port, sim)

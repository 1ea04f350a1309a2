"""
The ``maas`` infrastructure driver against the in-process MAAS simulator
(and the CloudStack simulator for volumes), everything on one `task.Clock`:
the real MAAS and CloudStack clients talk to the simulators through memory,
so every step is deterministic and nothing waits on real time.

It proves: machines are chosen by each constraint; too few is a task FAILED
with INSUFFICIENT_CAPACITY; concurrent creates never share a machine;
delete releases everything; find works by instance name; a new driver on
the same state directory (a restarted cluster) carries on; failed work is
undone; errors are Ignition's; the template parser is strict (Hypothesis);
and the reusable driver contract (tests/infracontract.py) holds.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from clusterd.cloudstack import CloudStackClient
from clusterd.infrastructure.driver import (
    COMPLETE,
    FAILED,
    IN_PROGRESS,
    INFRASTRUCTURE_ERROR,
    INSUFFICIENT_CAPACITY,
    RESOURCE_ALREADY_EXISTS,
    Accepted,
    DriverContext,
    Found,
    InfrastructureDriver,
    InfrastructureNotFound,
    InfrastructureTask,
    InvalidInfrastructureRequest,
    InvalidInfrastructureTemplate,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from clusterd.infrastructure.maas import (
    STATE_FILE,
    MAASInfrastructureDriver,
    Settings,
    make_driver,
)
from clusterd.infrastructure.maas_template import (
    Constraints,
    MachineGroup,
    allocate,
    parse_template,
)
from clusterd.maas.client import MAASClient
from clusterd.maas.retry import RetryPolicy
from clusterd.machines import MachineWork, summarize
from clusterd.site import plug_devices
from clusterd.volumes import SimulatedMounter
from clusterd.volumes.work import VolumeWork
from outpost.config import ConfigError
from rpc.region import GetTrackedVolumeJobs
from simulators.cloudstack import CloudStackResource, CloudStackSimulator, Limits
from simulators.maas import MAASSimulator, Status
from tests.cloudstackhelpers import API_KEY as CS_KEY
from tests.cloudstackhelpers import SECRET_KEY as CS_SECRET
from tests.cloudstackhelpers import PumpedStubTreq as CloudStackStub
from tests.infracontract import (
    DriverContract,
    new_name,
    system_properties,
)
from tests.maashelpers import API_KEY, DURATIONS, in_memory_client

CLOUDSTACK_URL = "http://cloudstack.test:8080/client/api"
LOCATION = {"name": "site-1", "type": "maas", "properties": {}}
#: No retries: a retry would wait on the clock inside a call the test awaits.
ONE_TRY = RetryPolicy(attempts=1)


class Refusing:
    """An HTTP client for which MAAS is down: every connection is refused."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("connection refused"))


class Gate:
    """While closed, MAAS's answers (worked out at once) are held back until `open`."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.closed, self.held = inner, False, []

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        answer = self.inner.request(method, url, **kwargs)
        if not self.closed:
            return answer
        d: Deferred[Any] = Deferred()
        self.held.append((answer, d))
        return d

    def open(self) -> None:
        self.closed, held, self.held = False, self.held, []
        for answer, d in held:
            answer.chainDeferred(d)


class Losing:
    """POSTs never reach MAAS and are never answered: the caller dies waiting."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        if method == "POST":
            return Deferred()
        return self.inner.request(method, url, **kwargs)


class Unanswered:
    """POSTs reach MAAS, which acts on them, but their answers never come back: the caller dies waiting."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        answer = self.inner.request(method, url, **kwargs)
        if method == "POST":
            return Deferred()
        return answer


class Region:
    """A region stand-in for VolumeWork: tracks no jobs, takes every report."""

    def __call__(self, command: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        if command is GetTrackedVolumeJobs:
            return succeed({"job_ids": [], "busy": {}})
        return succeed({})


@attrs.define
class MAASHarness:
    """A maas driver over a MAAS simulator (and, with `volumes`, a CloudStack one), all on `clock`."""

    clock: Clock
    sim: MAASSimulator
    client: MAASClient
    work: MachineWork
    state_dir: Path
    driver: MAASInfrastructureDriver
    location: dict[str, Any] = attrs.field(factory=lambda: dict(LOCATION))
    cloudstack: CloudStackSimulator | None = None
    volumes: VolumeWork | None = None
    config: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    async def start(cls, state_dir: Path, *, machines: int = 40, volumes: bool = False, limits: Limits | None = None,
                    config: dict[str, Any] | None = None) -> MAASHarness:
        clock = Clock()
        sim = MAASSimulator.create(clock, machines=machines, seed=7, api_key=API_KEY, durations=attrs.evolve(DURATIONS))
        client = in_memory_client(sim, clock, retry=ONE_TRY)
        work = MachineWork(clock, client, region=Region)
        cloudstack = volume_work = None
        if volumes:
            cloudstack = CloudStackSimulator.create(clock, api_key=CS_KEY, secret_key=CS_SECRET, job_duration=3.0, seed=5,
                                                    limits=limits)
            mounter = SimulatedMounter(clock)
            plug_devices(cloudstack, mounter)
            resource = CloudStackResource(cloudstack, clock)
            volume_work = VolumeWork(clock, mounter, region=Region, client_factory=lambda c: CloudStackClient(
                clock, c["api_url"], c["api_key"], c["secret_key"], http=CloudStackStub(resource), rng=lambda: 0.5))
            await volume_work.configure({"name": "cs", "api_url": CLOUDSTACK_URL, "api_key": CS_KEY, "secret_key": CS_SECRET,
                                         "zone": "OSSEA-Zone", "disk_offering": "", "oma_vm_id": cloudstack.appliance.id,
                                         "revision": 1})
        config = dict(config or {})
        driver = make_driver(DriverContext(clock, config, state_dir, machines=work, volumes=volume_work))
        return cls(clock, sim, client, work, state_dir, driver, cloudstack=cloudstack, volumes=volume_work, config=config)

    # -- the DriverHarness shape -------------------------------------------------

    def template(self, name: str) -> tuple[str, str]:
        return f"name: {name}\nmachines:\n  - name: node\n    count: 1\n", "maas"

    def invalid_template(self) -> tuple[str, str]:
        return "machines:\n  - name: node\n    count: 0\n", "maas"

    def failing_template(self, name: str) -> tuple[str, str, str]:
        return "machines:\n  - {name: huge, count: 1000}\n", "maas", INSUFFICIENT_CAPACITY

    async def settle(self) -> None:
        await self.run(lambda: not self.driver.unfinished())

    async def unreachable(self) -> None:
        self.client.http = Refusing()

    # -- more for this module ----------------------------------------------------

    async def run(self, done: Callable[[], bool], limit: int = 500) -> None:
        """Step the clock until `done()`."""
        for _ in range(limit):
            if done():
                return
            self.clock.advance(1.0)
        raise AssertionError("never got there")

    def restart(self) -> MAASInfrastructureDriver:
        """A new driver on the same state directory, as after a cluster restart (the old one is dropped)."""
        Deferred.fromCoroutine(self.driver.close())
        self.driver = make_driver(DriverContext(self.clock, self.config, self.state_dir, machines=self.work,
                                                volumes=self.volumes))
        return self.driver

    def ready(self) -> list[dict[str, Any]]:
        return [summarize(self.sim.machine_dict(m)) for m in self.sim.machines.values()
                if m.status == Status.READY and m.owner is None]

    def machine(self, system_id: str) -> Any:
        return self.sim.machines[system_id]

    def posts(self, op: str) -> int:
        return sum(1 for method, _, logged in self.sim.request_log if method == "POST" and logged == op)

    async def close(self) -> None:
        await self.driver.close()
        self.sim.stop()


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[MAASHarness]:
    h = await MAASHarness.start(tmp_path)
    try:
        yield h
    finally:
        await h.close()


@pytest_twisted.async_yield_fixture
async def with_volumes(tmp_path: Path) -> AsyncIterator[MAASHarness]:
    h = await MAASHarness.start(tmp_path, volumes=True)
    try:
        yield h
    finally:
        await h.close()


class TestMAASDriver(DriverContract):
    """The driver contract (tests/infracontract.py), for the maas driver."""


def test_the_harness_has_the_contract_shape() -> None:
    for name in ("template", "invalid_template", "failing_template", "settle", "unreachable"):
        assert callable(getattr(MAASHarness, name))
    assert {"driver", "location"} <= {a.name for a in attrs.fields(MAASHarness)}


# -- helpers ---------------------------------------------------------------------


def template(*groups: dict[str, Any], volumes: list[dict[str, Any]] | None = None, **top: Any) -> str:
    document: dict[str, Any] = {"machines": list(groups), **top}
    if volumes:
        document["volumes"] = volumes
    return yaml.safe_dump(document)


async def create(h: MAASHarness, text: str, name: str | None = None) -> Accepted:
    return await h.driver.create_infrastructure(text, "maas", system_properties(name or new_name()), {}, h.location)


async def task(h: MAASHarness, accepted: Accepted) -> InfrastructureTask:
    return await h.driver.get_infrastructure_task(accepted.infrastructure_id, accepted.request_id, h.location)


async def created(h: MAASHarness, text: str, name: str | None = None) -> tuple[Accepted, InfrastructureTask]:
    accepted = await create(h, text, name)
    await h.settle()
    return accepted, await task(h, accepted)


async def delete(h: MAASHarness, infrastructure_id: str) -> InfrastructureTask:
    accepted = await h.driver.delete_infrastructure(infrastructure_id, h.location)
    await h.settle()
    return await task(h, accepted)


def machine_ids(done: InfrastructureTask) -> list[str]:
    assert done.outputs is not None
    return [m["system_id"] for m in done.outputs["machines"]]


# -- allocation ------------------------------------------------------------------

CONSTRAINTS: dict[str, Callable[[list[dict[str, Any]]], dict[str, Any]]] = {
    # Each picks a constraint value from the Ready machines, so that some (not all) match.
    "tags": lambda ready: {"tags": [next(t for m in ready for t in m["tags"])]},
    "zone": lambda ready: {"zone": ready[0]["zone"]},
    "pool": lambda ready: {"pool": ready[0]["pool"]},
    "min_cpu": lambda ready: {"min_cpu": sorted(m["cpu_count"] for m in ready)[len(ready) // 2]},
    "min_memory_mb": lambda ready: {"min_memory_mb": sorted(m["memory_mb"] for m in ready)[len(ready) // 2]},
}


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
@pytest_twisted.ensureDeferred
async def test_machines_are_chosen_by_each_constraint_and_all_matching_ones_can_be_taken(harness: MAASHarness, constraint: str) -> None:
    ready = harness.ready()
    constraints = CONSTRAINTS[constraint](ready)
    matching = {m["system_id"] for m in ready if Constraints(**{k: tuple(v) if k == "tags" else v
                                                                for k, v in constraints.items()}).matches(m)}
    assert 0 < len(matching) < len(ready)
    _, done = await created(harness, template({"name": "group", "count": len(matching), "constraints": constraints}))
    assert done.status == COMPLETE, done
    assert set(machine_ids(done)) == matching
    for system_id in matching:
        machine = harness.machine(system_id)
        assert machine.status == Status.DEPLOYED and machine.owner == "admin"
    # Every matching machine is taken now: one more is more than there is.
    _, more = await created(harness, template({"name": "group", "count": 1, "constraints": constraints}))
    assert more.status == FAILED and more.failure_details is not None
    assert more.failure_details.failure_code == INSUFFICIENT_CAPACITY


@pytest_twisted.ensureDeferred
async def test_every_constraint_together_and_the_outputs_name_roles_hosts_and_addresses(harness: MAASHarness) -> None:
    ready = harness.ready()
    target = next(m for m in ready if m["tags"])
    constraints = {"tags": target["tags"][:1], "zone": target["zone"], "pool": target["pool"],
                   "min_cpu": target["cpu_count"], "min_memory_mb": target["memory_mb"]}
    text = template({"name": "special", "constraints": constraints, "deploy": {"distro_series": "noble"}},
                    {"name": "plain", "count": 2}, outputs={"owner": "team-a", "tier": 3})
    _, done = await created(harness, text)
    assert done.status == COMPLETE and done.outputs is not None
    assert done.outputs["owner"] == "team-a" and done.outputs["tier"] == 3 and done.outputs["volumes"] == []
    roles = [m["role"] for m in done.outputs["machines"]]
    assert roles == ["special", "plain", "plain"]
    for output in done.outputs["machines"]:
        machine = harness.machine(output["system_id"])
        assert output["hostname"] == machine.hostname
        assert output["addresses"] == machine.ip_addresses and output["addresses"]
    special = harness.machine(done.outputs["machines"][0]["system_id"])
    assert Constraints(tuple(constraints["tags"]), target["zone"], target["pool"], target["cpu_count"],
                       target["memory_mb"]).matches(summarize(harness.sim.machine_dict(special)))
    assert special.distro_series == "noble"


@pytest_twisted.ensureDeferred
async def test_user_data_reaches_maas_as_given(harness: MAASHarness) -> None:
    cloud_config = "#cloud-config\npackages: [htop]\n"
    _, done = await created(harness, template({"name": "n", "deploy": {"user_data": cloud_config, "hwe_kernel": "hwe-22.04"}}))
    assert done.status == COMPLETE
    machine = harness.machine(machine_ids(done)[0])
    assert machine.user_data == cloud_config.encode() and machine.hwe_kernel == "hwe-22.04"


def test_a_scarce_group_chooses_first_and_each_takes_the_smallest_machines_that_fit() -> None:
    def machine(system_id: str, cpus: int, tags: list[str]) -> dict[str, Any]:
        return {"system_id": system_id, "hostname": system_id, "status_code": 4, "owner": "", "cpu_count": cpus,
                "memory_mb": 1024, "tags": tags, "zone": "default", "pool": "default"}

    ready = [machine("big-gpu", 64, ["gpu"]), machine("small", 4, []), machine("mid", 16, []), machine("taken", 2, [])]
    anything = MachineGroup("any", 2)
    gpu = MachineGroup("gpu", 1, Constraints(tags=("gpu",)))
    picks, shortfalls = allocate([anything, gpu], ready, {"taken"})
    assert shortfalls == []
    assert [(g.name, m["system_id"]) for g, m in picks] == [("any", "small"), ("any", "mid"), ("gpu", "big-gpu")]
    picks, shortfalls = allocate([MachineGroup("any", 4)], ready, {"taken"})
    assert picks == [] and shortfalls == ["machines[0] (any) wants 4 Ready machine(s) with no constraints; 3 free"]


# -- capacity and concurrency ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_too_few_machines_is_a_task_failed_with_insufficient_capacity_that_takes_nothing(harness: MAASHarness) -> None:
    free = len(harness.ready())
    accepted = await create(harness, template({"name": "a", "count": 1}, {"name": "b", "count": free, "constraints": {"min_cpu": 1}}))
    done = await task(harness, accepted)
    assert done.status == FAILED and done.failure_details is not None
    assert done.failure_details.failure_code == INSUFFICIENT_CAPACITY
    assert "machines[1] (b)" in done.failure_details.description
    assert harness.posts("deploy") == 0 and harness.driver.claimed() == frozenset()
    assert harness.driver.unfinished() == []


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_never_share_a_machine(harness: MAASHarness) -> None:
    ready = harness.ready()
    zone = max({m["zone"] for m in ready}, key=lambda z: sum(1 for m in ready if m["zone"] == z))
    in_zone = [m for m in ready if m["zone"] == zone]
    assert len(in_zone) >= 3
    gate = Gate(harness.client.http)
    harness.client.http = gate
    gate.closed = True
    half = len(in_zone) // 2
    first = Deferred.fromCoroutine(create(harness, template({"name": "a", "count": half, "constraints": {"zone": zone}})))
    second = Deferred.fromCoroutine(create(harness, template({"name": "b", "count": half, "constraints": {"zone": zone}})))
    greedy = Deferred.fromCoroutine(create(harness, template({"name": "c", "count": half, "constraints": {"zone": zone}})))
    assert len(gate.held) == 3  # all three have listed the Ready machines and wait for the answer
    gate.open()
    outcomes = [await d for d in (first, second, greedy)]
    await harness.settle()
    tasks = [await task(harness, a) for a in outcomes]
    assert [t.status for t in tasks][:2] == [COMPLETE, COMPLETE]
    a, b = set(machine_ids(tasks[0])), set(machine_ids(tasks[1]))
    assert len(a) == len(b) == half and not a & b
    if len(in_zone) < 3 * half:
        assert tasks[2].status == FAILED and tasks[2].failure_details is not None
        assert tasks[2].failure_details.failure_code == INSUFFICIENT_CAPACITY


# -- delete and find ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_releases_every_machine_and_they_can_be_taken_again(harness: MAASHarness) -> None:
    accepted, done = await created(harness, template({"name": "n", "count": 3}))
    ids = machine_ids(done)
    deleting = await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
    assert (await task(harness, deleting)).status == IN_PROGRESS  # releasing takes MAAS a while
    assert {harness.machine(i).status for i in ids} == {Status.RELEASING}
    again = await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
    assert again == deleting  # a repeated delete joins the running one
    await harness.settle()
    finished = await task(harness, deleting)
    assert finished.status == COMPLETE and finished.outputs is None
    assert all(harness.machine(i).status == Status.READY and harness.machine(i).owner is None for i in ids)
    assert harness.driver.claimed() == frozenset()
    assert (await task(harness, accepted)).outputs == done.outputs  # the create's answer does not change
    with pytest.raises(InfrastructureNotFound):
        await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
    everything = len(harness.ready())
    _, all_again = await created(harness, template({"name": "n", "count": everything}))
    assert all_again.status == COMPLETE and set(ids) <= set(machine_ids(all_again))


@pytest_twisted.ensureDeferred
async def test_delete_while_creating_ends_the_create_failed_and_releases_what_it_took(harness: MAASHarness) -> None:
    accepted = await create(harness, template({"name": "n", "count": 2}))
    harness.clock.advance(10)
    ids = sorted(harness.driver.claimed())
    assert {harness.machine(i).status for i in ids} == {Status.DEPLOYING}
    deleting = await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
    creating = await task(harness, accepted)
    assert creating.status == FAILED and creating.failure_details is not None
    assert creating.failure_details.failure_code == INFRASTRUCTURE_ERROR
    await harness.settle()
    assert (await task(harness, deleting)).status == COMPLETE
    assert {harness.machine(i).status for i in ids} == {Status.READY}


@pytest_twisted.ensureDeferred
async def test_find_by_resource_name_or_template_name_with_fresh_outputs(harness: MAASHarness) -> None:
    accepted, done = await created(harness, template({"name": "n"}), name="web-1")
    found = await harness.driver.find_infrastructure(template({"name": "n"}), "maas", "web-1", harness.location)
    assert found == Found(accepted.infrastructure_id, done.outputs or {})
    # Without a resourceName, the template's name is the instance name.
    text = template({"name": "n"}, name="db-1")
    unnamed = await harness.driver.create_infrastructure(text, "maas", {}, {}, harness.location)
    await harness.settle()
    found = await harness.driver.find_infrastructure(text, "maas", "db-1", harness.location)
    assert found is not None and found.infrastructure_id == unnamed.infrastructure_id
    assert await harness.driver.find_infrastructure(text, "maas", "", harness.location) is None
    # A failed create is not found.
    failing, kind, _ = harness.failing_template("x")
    await harness.driver.create_infrastructure(failing, kind, system_properties("nothing-here"), {}, harness.location)
    assert await harness.driver.find_infrastructure(text, "maas", "nothing-here", harness.location) is None


@pytest_twisted.ensureDeferred
async def test_a_second_create_with_a_live_name_fails_with_resource_already_exists(harness: MAASHarness) -> None:
    first, _ = await created(harness, template({"name": "n"}), name="dup")
    second = await create(harness, template({"name": "n"}), name="dup")
    done = await task(harness, second)
    assert done.status == FAILED and done.failure_details is not None
    assert done.failure_details.failure_code == RESOURCE_ALREADY_EXISTS
    assert first.infrastructure_id in done.failure_details.description
    await delete(harness, first.infrastructure_id)
    _, again = await created(harness, template({"name": "n"}), name="dup")
    assert again.status == COMPLETE  # the name is free once deleted


@pytest_twisted.ensureDeferred
async def test_the_ignition_system_properties_shape_names_the_infrastructure_too(harness: MAASHarness) -> None:
    properties = {"resourceName": {"type": "string", "value": "typed-name"}}
    accepted = await harness.driver.create_infrastructure(template({"name": "n"}), "MaaS", properties, {}, harness.location)
    await harness.settle()
    found = await harness.driver.find_infrastructure(template({"name": "n"}), "maas", "typed-name", harness.location)
    assert found is not None and found.infrastructure_id == accepted.infrastructure_id


# -- restarts -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_restarted_driver_finishes_a_create_finds_it_and_deletes_it(harness: MAASHarness) -> None:
    accepted = await create(harness, template({"name": "n", "count": 2}), name="survivor")
    harness.clock.advance(10)
    claimed = harness.driver.claimed()
    assert len(claimed) == 2 and {harness.machine(i).status for i in claimed} == {Status.DEPLOYING}
    driver = harness.restart()
    assert driver.claimed() == claimed
    assert driver.unfinished() == [(accepted.infrastructure_id, accepted.request_id)]
    await harness.settle()  # the new driver picks the request up by itself
    done = await task(harness, accepted)
    assert done.status == COMPLETE and set(machine_ids(done)) == claimed
    assert harness.posts("deploy") == 2
    harness.restart()
    found = await harness.driver.find_infrastructure(template({"name": "n"}), "maas", "survivor", harness.location)
    assert found is not None and found.infrastructure_id == accepted.infrastructure_id
    harness.restart()
    assert (await delete(harness, accepted.infrastructure_id)).status == COMPLETE
    assert {harness.machine(i).status for i in claimed} == {Status.READY}


@pytest_twisted.ensureDeferred
async def test_claims_survive_a_restart_and_a_deploy_lost_to_it_is_sent_again(harness: MAASHarness) -> None:
    working = harness.client.http
    harness.client.http = Losing(working)
    accepted = await create(harness, template({"name": "n"}))
    [claimed] = harness.driver.claimed()
    assert harness.machine(claimed).status == Status.READY  # its deploy never reached MAAS
    harness.client.http = working
    harness.restart()
    # Still Ready, but still ours: a create wanting every Ready machine cannot have it.
    everything = len(harness.ready())
    greedy = await task(harness, await create(harness, template({"name": "all", "count": everything})))
    assert greedy.status == FAILED and greedy.failure_details is not None
    assert greedy.failure_details.failure_code == INSUFFICIENT_CAPACITY
    await harness.settle()
    done = await task(harness, accepted)
    assert done.status == COMPLETE and machine_ids(done) == [claimed] and harness.posts("deploy") == 1


async def deploy_unrecorded(harness: MAASHarness) -> tuple[Any, str]:
    """
    A create whose deploy MAAS takes while its answer is lost (as if the
    cluster died before recording it): the accepted request and the machine,
    Deploying in MAAS.  MAAS answers normally again afterwards.
    """
    working = harness.client.http
    harness.client.http = Unanswered(working)
    before = harness.driver.claimed()
    accepted = await create(harness, template({"name": "n"}))
    [taken] = harness.driver.claimed() - before
    await harness.run(lambda: harness.machine(taken).status == Status.DEPLOYING)
    harness.client.http = working
    return accepted, taken


@pytest_twisted.ensureDeferred
async def test_a_deploy_maas_took_before_a_restart_is_ours_only_if_maas_names_us_its_owner(harness: MAASHarness) -> None:
    """
    A crash between MAAS taking our deploy and the state file recording it
    leaves a machine Deploying that the file says we have not deployed.
    MAAS's owner decides: ours, the create carries on; another user's, the
    create fails and that machine is left alone.
    """
    mine, taken = await deploy_unrecorded(harness)
    assert harness.machine(taken).owner == "admin"
    harness.restart()
    await harness.settle()
    done = await task(harness, mine)
    assert done.status == COMPLETE and machine_ids(done) == [taken] and harness.posts("deploy") == 1

    theirs, lost = await deploy_unrecorded(harness)
    harness.sim.set_machine(lost, owner="someone")  # as if another user's deploy had won
    harness.restart()
    await harness.settle()
    failed = await task(harness, theirs)
    assert failed.status == FAILED and failed.failure_details is not None
    assert failed.failure_details.failure_code == INFRASTRUCTURE_ERROR
    assert "Deploying for someone, not admin: taken by someone else" in failed.failure_details.description
    assert harness.machine(lost).owner == "someone" and harness.posts("release") == 0
    assert harness.driver.claimed() == {taken}


@pytest_twisted.ensureDeferred
async def test_a_deploy_that_failed_before_a_restart_recorded_it_is_ours_to_release(harness: MAASHarness) -> None:
    accepted, taken = await deploy_unrecorded(harness)
    harness.sim.set_machine(taken, status=Status.FAILED_DEPLOYMENT)
    harness.restart()
    await harness.settle()
    done = await task(harness, accepted)
    assert done.status == FAILED and done.failure_details is not None
    assert "failed: MAAS shows it Failed deployment" in done.failure_details.description
    assert harness.posts("release") == 1 and harness.machine(taken).owner is None
    assert harness.driver.claimed() == frozenset()


@pytest_twisted.ensureDeferred
async def test_not_knowing_who_we_are_is_temporary_and_the_create_carries_on_once_maas_says(harness: MAASHarness) -> None:
    accepted, taken = await deploy_unrecorded(harness)
    whoami = MachineWork.username
    answers = iter(["", ""])

    async def forgetful(work: MachineWork) -> str:
        for answer in answers:  # twice no user, then the real answer
            return answer
        return await whoami(work)

    MachineWork.username = forgetful  # type: ignore[method-assign]
    try:
        harness.restart()
        with pytest.raises(TemporaryInfrastructureError, match="whoami named no user"):
            await harness.driver.get_infrastructure_task(accepted.infrastructure_id, accepted.request_id, harness.location)
        await harness.settle()
    finally:
        MachineWork.username = whoami  # type: ignore[method-assign]
    done = await task(harness, accepted)
    assert done.status == COMPLETE and machine_ids(done) == [taken] and harness.posts("deploy") == 1


@pytest_twisted.ensureDeferred
async def test_the_state_file_is_private_and_a_corrupt_one_stops_the_driver(harness: MAASHarness) -> None:
    await created(harness, template({"name": "n", "deploy": {"user_data": "password: hunter2"}}))
    path = harness.state_dir / STATE_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["version"] == 1
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a maas driver state file"):
        make_driver(DriverContext(harness.clock, {}, harness.state_dir, machines=harness.work))


@pytest_twisted.ensureDeferred
async def test_finished_infrastructure_is_forgotten_after_keep_finished(tmp_path: Path) -> None:
    h = await MAASHarness.start(tmp_path, config={"keep_finished": 60})
    try:
        accepted, _ = await created(h, template({"name": "n"}))
        await delete(h, accepted.infrastructure_id)
        h.clock.advance(61)
        await created(h, template({"name": "n"}))  # any change saves, and forgets
        with pytest.raises(InfrastructureNotFound):
            await h.driver.get_infrastructure_task(accepted.infrastructure_id, accepted.request_id, h.location)
    finally:
        await h.close()


# -- failures and their undo ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_failed_deployment_releases_everything_and_fails_with_infrastructure_error(harness: MAASHarness) -> None:
    accepted = await create(harness, template({"name": "n", "count": 3}))
    ids = sorted(harness.driver.claimed())
    harness.sim.fail_next(ids[1], "deploy")
    await harness.settle()
    done = await task(harness, accepted)
    assert done.status == FAILED and done.failure_details is not None
    assert done.failure_details.failure_code == INFRASTRUCTURE_ERROR
    assert ids[1] in done.failure_details.description and "Failed deployment" in done.failure_details.description
    assert {harness.machine(i).status for i in ids} == {Status.READY}
    assert harness.driver.claimed() == frozenset()
    assert await harness.driver.find_infrastructure(template({"name": "n"}), "maas", "anything", harness.location) is None
    # The failed infrastructure can still be deleted (nothing left to do).
    assert (await delete(harness, accepted.infrastructure_id)).status == COMPLETE


@pytest_twisted.ensureDeferred
async def test_maas_refusing_the_deploy_options_fails_the_task_and_undoes(harness: MAASHarness) -> None:
    _, done = await created(harness, template({"name": "n", "count": 2, "deploy": {"distro_series": "nosuchseries"}}))
    assert done.status == FAILED and done.failure_details is not None
    assert done.failure_details.failure_code == INFRASTRUCTURE_ERROR and "distro_series" in done.failure_details.description
    assert harness.driver.claimed() == frozenset() and harness.sim.find(status=Status.DEPLOYING) == []


@pytest_twisted.ensureDeferred
async def test_a_machine_taken_by_someone_else_fails_the_create_and_is_left_alone(harness: MAASHarness) -> None:
    gate = Gate(harness.client.http)
    harness.client.http = gate
    gate.closed = True
    pending = Deferred.fromCoroutine(create(harness, template({"name": "n"})))
    # MAAS listed the Ready machines; before we hear it, someone else takes all of them.
    others = [m["system_id"] for m in harness.ready()]
    for system_id in others:
        harness.sim.set_machine(system_id, status=Status.ALLOCATED, owner="someone")
    gate.open()
    accepted = await pending
    await harness.settle()
    done = await task(harness, accepted)
    assert done.status == FAILED and done.failure_details is not None
    assert done.failure_details.failure_code == INFRASTRUCTURE_ERROR
    assert "taken by someone else" in done.failure_details.description
    assert harness.posts("deploy") == 0 and harness.posts("release") == 0
    assert {harness.machine(i).owner for i in others} == {"someone"}
    assert harness.driver.claimed() == frozenset()


@pytest_twisted.ensureDeferred
async def test_a_deployment_that_never_finishes_times_out_and_is_undone(tmp_path: Path) -> None:
    h = await MAASHarness.start(tmp_path, config={"deploy_timeout": 30})
    try:
        accepted = await create(h, template({"name": "n"}))
        done = await task(h, accepted)
        assert done.status == IN_PROGRESS
        await h.settle()
        done = await task(h, accepted)
        assert done.status == FAILED and done.failure_details is not None
        assert "not Deployed within 30s" in done.failure_details.description
        assert h.driver.claimed() == frozenset()
    finally:
        await h.close()


# -- volumes -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_volumes_are_prepared_listed_in_the_outputs_and_removed_on_delete(with_volumes: MAASHarness) -> None:
    h = with_volumes
    assert h.cloudstack is not None
    text = template({"name": "n"}, volumes=[{"name": "data", "size_gb": 10}, {"name": "logs", "size_gb": 2}])
    accepted, done = await created(h, text)
    assert done.status == COMPLETE and done.outputs is not None
    volumes = {v["name"]: v for v in done.outputs["volumes"]}
    assert sorted(volumes) == ["data", "logs"] and volumes["data"]["size_gb"] == 10
    in_cloudstack = {v.id: v for v in h.cloudstack.data_volumes()}
    assert set(in_cloudstack) == {v["volume_id"] for v in volumes.values()}
    assert all(v.vm is not None for v in in_cloudstack.values())
    assert volumes["data"]["mount_point"].endswith(f"infra-{accepted.infrastructure_id}/data")
    assert (await delete(h, accepted.infrastructure_id)).status == COMPLETE
    assert h.cloudstack.data_volumes() == [] and h.driver.claimed() == frozenset()


@pytest_twisted.ensureDeferred
async def test_volumes_that_cannot_be_made_fail_the_create_and_release_the_machines(tmp_path: Path) -> None:
    h = await MAASHarness.start(tmp_path, volumes=True, limits=Limits(capacity_gb=5))
    try:
        assert h.cloudstack is not None
        accepted = await create(h, template({"name": "n", "count": 2}, volumes=[{"name": "big", "size_gb": 10}]))
        ids = h.driver.claimed()
        await h.settle()
        done = await task(h, accepted)
        assert done.status == FAILED and done.failure_details is not None
        assert done.failure_details.failure_code == INFRASTRUCTURE_ERROR and "big" in done.failure_details.description
        assert h.driver.claimed() == frozenset() and h.cloudstack.data_volumes() == []
        assert len(ids) == 2 and {h.machine(i).status for i in ids} == {Status.READY}
    finally:
        await h.close()


@pytest_twisted.ensureDeferred
async def test_a_template_with_volumes_needs_cloudstack(harness: MAASHarness) -> None:
    with pytest.raises(InvalidInfrastructureRequest, match="CloudStack"):
        await create(harness, template({"name": "n"}, volumes=[{"name": "d", "size_gb": 1}]))


# -- errors ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_without_maas_every_request_is_an_invalid_request(tmp_path: Path) -> None:
    clock = Clock()
    for machines in (None, MachineWork(clock, None, region=Region)):
        driver = make_driver(DriverContext(clock, {}, tmp_path, machines=machines))
        with pytest.raises(InvalidInfrastructureRequest, match="no MAAS"):
            await driver.create_infrastructure(template({"name": "n"}), "maas", {}, {}, LOCATION)
        with pytest.raises(InvalidInfrastructureRequest, match="no MAAS"):
            await driver.find_infrastructure(template({"name": "n"}), "maas", "x", LOCATION)
        with pytest.raises(InvalidInfrastructureRequest, match="no MAAS"):
            await driver.delete_infrastructure("whatever", LOCATION)


@pytest_twisted.ensureDeferred
async def test_maas_answering_5xx_is_a_temporary_error_and_the_task_goes_on_after(harness: MAASHarness) -> None:
    harness.sim.set_faults(error_rate=1.0)
    with pytest.raises(TemporaryInfrastructureError):
        await create(harness, template({"name": "n"}))
    harness.sim.set_faults(error_rate=0.0)
    accepted = await create(harness, template({"name": "n"}))
    harness.sim.set_faults(error_rate=1.0)
    with pytest.raises(TemporaryInfrastructureError):
        await task(harness, accepted)
    harness.clock.advance(120)  # the watcher keeps trying, and keeps the request going
    harness.sim.set_faults(error_rate=0.0)
    await harness.settle()
    assert (await task(harness, accepted)).status == COMPLETE


@pytest_twisted.ensureDeferred
async def test_maas_unreachable_during_a_delete_only_delays_it(harness: MAASHarness) -> None:
    accepted, _ = await created(harness, template({"name": "n"}))
    deleting = await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
    working = harness.client.http
    await harness.unreachable()
    harness.clock.advance(60)
    with pytest.raises(UnreachableDeploymentLocation):
        await task(harness, deleting)
    harness.client.http = working
    await harness.settle()
    assert (await task(harness, deleting)).status == COMPLETE


def test_driver_configuration_is_checked() -> None:
    assert Settings.from_config({}) == Settings()
    assert Settings.from_config({"poll_interval": 2, "erase": True}).erase is True
    with pytest.raises(ConfigError) as e:
        Settings.from_config({"poll_interval": 0, "erase": "yes", "colour": "blue"})
    assert len(e.value.problems) == 3
    assert any("infrastructure.drivers.maas.colour" in p for p in e.value.problems)


def test_make_driver_gives_an_infrastructure_driver(tmp_path: Path) -> None:
    driver: InfrastructureDriver = make_driver(DriverContext(Clock(), {}, tmp_path))
    for method in ("create_infrastructure", "get_infrastructure_task", "delete_infrastructure", "find_infrastructure"):
        assert callable(getattr(driver, method))


# -- the template (Hypothesis) ---------------------------------------------------------------

ROLE = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
NAME = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
TAGS = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), max_size=3, unique=True)
CONSTRAINT_VALUES = st.fixed_dictionaries({}, optional={
    "tags": TAGS, "zone": NAME, "pool": NAME,
    "min_cpu": st.integers(0, 512), "min_memory_mb": st.integers(0, 1 << 20),
})
DEPLOY_VALUES = st.fixed_dictionaries({}, optional={
    "distro_series": st.sampled_from(["jammy", "ubuntu/22.04", "noble"]),
    "hwe_kernel": st.sampled_from(["hwe-22.04", "ga-24.04"]),
    "user_data": st.text(max_size=200),
})
GROUP = st.fixed_dictionaries({"name": ROLE}, optional={
    "count": st.integers(1, 20), "constraints": CONSTRAINT_VALUES, "deploy": DEPLOY_VALUES,
})
VOLUME = st.fixed_dictionaries({"name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,10}", fullmatch=True),
                                "size_gb": st.integers(1, 4096)})
DOCUMENT = st.fixed_dictionaries(
    {"machines": st.lists(GROUP, min_size=1, max_size=4, unique_by=lambda g: g["name"])},
    optional={
        "volumes": st.lists(VOLUME, max_size=3, unique_by=lambda v: v["name"]),
        "outputs": st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
            lambda k: k not in ("machines", "volumes")), st.one_of(st.text(max_size=20), st.integers(), st.booleans()),
            max_size=3),
        "name": st.text(min_size=1, max_size=30).filter(str.strip),
    },
)


@given(DOCUMENT, st.sampled_from(["maas", "MAAS", "Maas", " maas "]))
def test_every_valid_template_parses_to_what_it_says(document: dict[str, Any], kind: str) -> None:
    spec = parse_template(yaml.safe_dump(document), kind)
    assert [g.name for g in spec.groups] == [g["name"] for g in document["machines"]]
    for group, given_group in zip(spec.groups, document["machines"]):
        assert group.count == given_group.get("count", 1)
        constraints = given_group.get("constraints", {})
        assert group.constraints.tags == tuple(constraints.get("tags", ()))
        assert (group.constraints.zone, group.constraints.pool) == (constraints.get("zone"), constraints.get("pool"))
        assert group.constraints.min_cpu == constraints.get("min_cpu", 0)
        assert group.constraints.min_memory_mb == constraints.get("min_memory_mb", 0)
        assert attrs.asdict(group.deploy) == {k: given_group.get("deploy", {}).get(k) for k in ("distro_series", "hwe_kernel", "user_data")}
    assert [(v.name, v.size_gb) for v in spec.volumes] == [(v["name"], v["size_gb"]) for v in document.get("volumes", [])]
    assert dict(spec.outputs) == document.get("outputs", {})
    assert spec.name == document.get("name")


#: (where, a bad value, what the message names): each breaks one field of a valid template.
BREAKAGES = [
    (("machines", 0, "name"), "Not A Role", "machines[0].name"),
    (("machines", 0, "count"), 0, "machines[0].count"),
    (("machines", 0, "count"), "two", "machines[0].count"),
    (("machines", 0, "count"), True, "machines[0].count"),
    (("machines", 0, "constraints", "tags"), ["a,b"], "machines[0].constraints.tags"),
    (("machines", 0, "constraints", "zone"), "", "machines[0].constraints.zone"),
    (("machines", 0, "constraints", "pool"), 7, "machines[0].constraints.pool"),
    (("machines", 0, "constraints", "min_cpu"), -1, "machines[0].constraints.min_cpu"),
    (("machines", 0, "constraints", "min_memory_mb"), 1.5, "machines[0].constraints.min_memory_mb"),
    (("machines", 0, "constraints", "gpus"), 1, "machines[0].constraints.gpus"),
    (("machines", 0, "constraints"), ["gpu"], "machines[0].constraints"),
    (("machines", 0, "deploy", "distro_series"), "Jammy Jellyfish", "machines[0].deploy.distro_series"),
    (("machines", 0, "deploy", "user_data"), {"a": 1}, "machines[0].deploy.user_data"),
    (("machines", 0, "deploy", "erase"), True, "machines[0].deploy.erase"),
    (("machines", 0, "flavour"), "large", "machines[0].flavour"),
    (("machines",), [], "machines"),
    (("machines",), "all of them", "machines"),
    (("volumes",), [{"name": "d", "size_gb": 0}], "volumes[0].size_gb"),
    (("volumes",), [{"name": "bad name", "size_gb": 1}], "volumes[0].name"),
    (("volumes",), [{"name": "d", "size_gb": 1}, {"name": "d", "size_gb": 2}], "volumes"),
    (("outputs",), {"machines": "mine"}, "outputs.machines"),
    (("outputs",), {"nested": {"a": 1}}, "outputs.nested"),
    (("outputs",), ["a"], "outputs"),
    (("name",), "", "name"),
    (("colour",), "blue", "colour"),
]


@settings(max_examples=60)
@given(DOCUMENT, st.sampled_from(BREAKAGES))
def test_each_bad_field_is_named_in_the_error(document: dict[str, Any], breakage: tuple[Any, Any, str]) -> None:
    where, value, named = breakage
    _put(document, where, value)
    with pytest.raises(InvalidInfrastructureTemplate) as e:
        parse_template(yaml.safe_dump(document), "maas")
    assert f"{named}:" in str(e.value) or f"{named} " in str(e.value), str(e.value)


def _put(document: dict[str, Any], where: tuple[Any, ...], value: Any) -> None:
    target: Any = document
    for key in where[:-1]:
        if isinstance(target, dict):
            target = target.setdefault(key, {})
        else:
            target = target[key]
    target[where[-1]] = value


def test_a_repeated_role_is_refused_and_every_problem_is_listed_at_once() -> None:
    text = template({"name": "n", "count": 0}, {"name": "n"}, {"name": "m", "constraints": {"min_cpu": "many"}})
    with pytest.raises(InvalidInfrastructureTemplate) as e:
        parse_template(text, "maas")
    message = str(e.value)
    assert "machines[0].count" in message and "machines[2].constraints.min_cpu" in message
    with pytest.raises(InvalidInfrastructureTemplate, match="used more than once"):
        parse_template(template({"name": "n"}, {"name": "n"}), "maas")


def test_user_data_is_never_echoed_in_errors() -> None:
    with pytest.raises(InvalidInfrastructureTemplate) as e:
        parse_template(template({"name": "n", "deploy": {"user_data": "x" * (300 * 1024) + "secret"}}), "maas")
    assert "secret" not in str(e.value) and "user_data" in str(e.value)


@given(st.text(max_size=300))
def test_any_text_is_a_template_or_an_invalid_template_error(text: str) -> None:
    try:
        spec = parse_template(text, "maas")
    except InvalidInfrastructureTemplate:
        return
    assert spec.groups


@given(st.one_of(st.text(max_size=20), st.none(), st.integers()).filter(
    lambda t: not (isinstance(t, str) and t.strip().lower() == "maas")))
def test_any_other_template_type_is_refused(kind: Any) -> None:
    with pytest.raises(InvalidInfrastructureTemplate, match="templateType"):
        parse_template(template({"name": "n"}), kind)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=12))
def test_any_yaml_document_in_machines_is_handled(value: Any) -> None:
    try:
        parse_template(yaml.safe_dump({"machines": value}), "maas")
    except InvalidInfrastructureTemplate:
        pass

"""
The region's machine work against clusters answering over real RPC: the
sync (full, per cluster, transitional), actions, fan-out and reports.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.protocols import amp

from rpc import cluster as commands
from rpc import errors as rpc_errors
from rpc.region import ReportPowerOutcome
from tests.machinehelpers import summary
from tests.regionstack import RegionStack, eventually, region_stack  # noqa: F401

C1 = "bbbbbbbb-0000-4000-8000-000000000001"
C2 = "bbbbbbbb-0000-4000-8000-000000000002"


class FakeSite(amp.CommandLocator):
    """A cluster's answers, from a dict of machine summaries."""

    def __init__(self, machines: list[dict[str, Any]]) -> None:
        self.machines = {m["system_id"]: m for m in machines}
        self.powered: list[tuple[str, str, str]] = []
        self.hang = False

    @commands.ListMachines.responder
    def list_machines(self, filters: Any) -> Any:
        if self.hang:
            return Deferred()
        return {"machines": list(self.machines.values())}

    @commands.GetMachines.responder
    def get_machines(self, system_ids: list[str]) -> dict[str, Any]:
        return {"machines": [self.machines[s] for s in system_ids if s in self.machines],
                "missing": [s for s in system_ids if s not in self.machines]}

    @commands.PowerMachine.responder
    def power(self, system_id: str, action: str, stop_mode: str, request_id: str) -> dict[str, Any]:
        if system_id not in self.machines:
            raise rpc_errors.NoSuchMachine(system_id)
        if any(p[0] == system_id and p[1] != action for p in self.powered):
            raise rpc_errors.PowerActionInProgress("busy")
        self.powered.append((system_id, action, request_id))
        return {"joined": False}

    @commands.DeployMachine.responder
    def deploy(self, system_id: str, options: Any) -> dict[str, Any]:
        machine = self.machines[system_id]
        if machine["status"] != "Ready":
            raise rpc_errors.MachineActionConflict("not Ready")
        machine["status"] = "Deploying"
        return {"machine": machine}

    @commands.QueryPowerStates.responder
    def query(self, system_ids: list[str]) -> dict[str, Any]:
        return {"states": {s: self.machines[s]["power_state"] for s in system_ids if s in self.machines}, "errors": {}}


async def connect(stack: RegionStack, uuid: str, name: str, site: FakeSite) -> Any:
    return await stack.connect_cluster(uuid, name, locator=site, capabilities=["maas/1"])


@pytest_twisted.ensureDeferred
async def test_a_cluster_is_synced_as_it_connects_and_a_full_sync_records_every_cluster(region_stack: RegionStack) -> None:
    app = region_stack.app
    one = FakeSite([summary("a1"), summary("a2")])
    await connect(region_stack, C1, "one", one)

    async def synced() -> bool:
        return (await app.machines.list())[1] == 2

    await eventually(synced)
    two = FakeSite([summary("b1")])
    gone = await connect(region_stack, C2, "two", two)
    await eventually(lambda: _total(app, 3))
    gone.transport.loseConnection()
    await eventually(lambda: _connections(region_stack, C2, 0))
    one.machines["a1"]["status"] = "Deployed"
    del one.machines["a2"]
    report = await app.sync.run()
    assert report["clusters"][C1]["outcome"] == "ok" and report["clusters"][C1]["changed"] == 1
    assert report["clusters"][C1]["missing"] == 1
    assert report["clusters"][C2]["outcome"] == "unavailable"
    rows = {r["cluster_uuid"]: r for r in await region_stack.db.fetch("SELECT cluster_uuid::text, outcome FROM maas_syncs")}
    assert rows[C1]["outcome"] == "ok" and rows[C2]["outcome"] == "unavailable"


async def _total(app: Any, n: int) -> bool:
    return (await app.machines.list())[1] == n


async def _connections(stack: RegionStack, uuid: str, n: int) -> bool:
    return stack.registry.connection_count(uuid) == n


@pytest_twisted.ensureDeferred
async def test_concurrent_sync_requests_share_one_run(region_stack: RegionStack) -> None:
    app = region_stack.app
    site = FakeSite([summary("a1")])
    await connect(region_stack, C1, "one", site)
    await eventually(lambda: _total(app, 1))
    first, second = app.sync.run(), app.sync.run()
    assert (await first) is (await second)


@pytest_twisted.ensureDeferred
async def test_a_hanging_cluster_times_out_without_holding_up_the_others(region_stack: RegionStack) -> None:
    app = region_stack.app
    slow = FakeSite([summary("s1")])
    slow.hang = True
    await connect(region_stack, C1, "slow", slow)
    await connect(region_stack, C2, "fast", FakeSite([summary("f1")]))
    app.sync.timeout = 0.3
    report = await app.sync.run()
    assert report["clusters"][C1]["outcome"] == "timeout" and report["clusters"][C2]["outcome"] == "ok"


@pytest_twisted.ensureDeferred
async def test_transitional_machines_are_reread_until_they_settle(region_stack: RegionStack) -> None:
    app = region_stack.app
    site = FakeSite([summary("a1", status="Deploying"), summary("a2")])
    await connect(region_stack, C1, "one", site)
    await eventually(lambda: _total(app, 2))
    site.machines["a1"]["status"] = "Deployed"
    assert await app.sync.poll_transitional() == 1
    assert (await app.machines.get(C1, "a1"))["status"] == "Deployed"
    assert await app.sync.poll_transitional() == 0


@pytest_twisted.ensureDeferred
async def test_power_requests_and_reported_outcomes_become_events(region_stack: RegionStack) -> None:
    app = region_stack.app
    site = FakeSite([summary("a1")])
    cluster = await connect(region_stack, C1, "one", site)
    await eventually(lambda: _total(app, 1))
    started = await app.machine_service.power(C1, "a1", "cycle", "hard", "token:1")
    request_id = started["request_id"]
    assert site.powered == [("a1", "cycle", request_id)]
    await cluster.call(ReportPowerOutcome, system_id="a1", action="cycle", request_id=request_id, outcome="ok", state="on", error="")
    rows = await region_stack.db.fetch(
        "SELECT type, outcome FROM events WHERE data->>'request_id' = %s ORDER BY id", (request_id,)
    )
    assert [(r["type"], r["outcome"]) for r in rows] == [("machine.power.requested", "accepted"), ("machine.power", "ok")]
    assert (await app.machines.get(C1, "a1"))["power_state"] == "on"


@pytest_twisted.ensureDeferred
async def test_reports_from_an_unregistered_connection_are_refused(region_stack: RegionStack) -> None:
    proto = await region_stack.dial()
    try:
        await proto.call(ReportPowerOutcome, system_id="a1", action="on", request_id="r", outcome="ok", state="on", error="")
    except rpc_errors.RegistrationRequired:
        pass
    else:
        raise AssertionError("expected RegistrationRequired")


@pytest_twisted.ensureDeferred
async def test_power_query_fans_out_and_separates_failures(region_stack: RegionStack) -> None:
    app = region_stack.app
    await connect(region_stack, C1, "one", FakeSite([summary("a1", power_state="on"), summary("a2")]))
    await eventually(lambda: _total(app, 2))
    await app.machines.apply_inventory(C1, [summary("a1"), summary("a2")])
    await region_stack.db.execute("INSERT INTO clusters (uuid, name) VALUES (%s, 'absent')", (C2,))
    await app.machines.apply_inventory(C2, [summary("z1")])
    answer = await app.machine_service.power_query(None, timeout=5)
    states = {r["system_id"]: r["state"] for r in answer["results"]}
    assert states == {"a1": "on", "a2": "off"}
    assert answer["failures"] == [{"cluster": C2, "status": "unavailable", "error": answer["failures"][0]["error"], "machines": 1}]
    assert (await app.machines.get(C1, "a1"))["power_state"] == "on"


@pytest_twisted.ensureDeferred
async def test_power_actions_are_interrupted_when_their_cluster_goes(region_stack: RegionStack) -> None:
    app = region_stack.app
    cluster = await connect(region_stack, C1, "one", FakeSite([summary("a1")]))
    await eventually(lambda: _total(app, 1))
    started = await app.machine_service.power(C1, "a1", "off", "hard", "token:1")
    cluster.transport.loseConnection()

    async def interrupted() -> bool:
        rows = await region_stack.db.fetch(
            "SELECT outcome FROM events WHERE type = 'machine.power' AND data->>'request_id' = %s", (started["request_id"],)
        )
        return [r["outcome"] for r in rows] == ["interrupted"]

    await eventually(interrupted)


@pytest_twisted.ensureDeferred
async def test_clusters_without_maas_are_not_synced(region_stack: RegionStack) -> None:
    app = region_stack.app
    await region_stack.connect_cluster(C1, "plain", locator=FakeSite([summary("a1")]))
    report = await app.sync.run()
    assert report["clusters"] == {}
    assert (await app.machines.list())[1] == 0

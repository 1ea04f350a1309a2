"""
The cluster's machine work against a simulated MAAS over loopback: what the
region's commands get back, and how MAAS's errors reach the region.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from clusterd.machines import MachineWork, summarize
from clusterd.maas.client import MAASClient
from clusterd.maas.retry import RetryPolicy
from rpc import errors as rpc_errors
from rpc.region import ReportPowerOutcome
from simulators.maas.faults import Durations
from simulators.maas.web import simulator_url, start_maas_simulator, stop_maas_simulator

API_KEY = "consumer0000:token0000000:secret00000000000000000000"


class RegionRecorder:
    """Stands in for a region client: records the calls made to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.arrived: Deferred[None] = Deferred()

    def __call__(self, command: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        self.calls.append((command, kwargs))
        if not self.arrived.called:
            self.arrived.callback(None)
        return succeed({})


@pytest_twisted.async_yield_fixture
async def site():
    port, simulator = await start_maas_simulator(reactor, api_key=API_KEY, machines=6, seed=7, durations=Durations.fast())
    client = MAASClient(reactor, simulator_url(port), API_KEY, timeout=5, retry=RetryPolicy(attempts=2, base=0.01, cap=0.05))
    region = RegionRecorder()
    work = MachineWork(reactor, client, region=lambda: region)
    yield work, simulator, region
    await client.close()
    await stop_maas_simulator(port, simulator)


@pytest_twisted.ensureDeferred
async def test_list_machines_gives_summaries_of_every_machine(site) -> None:
    work, simulator, _ = site
    answer = await work.list_machines({})
    assert len(answer["machines"]) == 6
    for machine in answer["machines"]:
        assert set(machine) >= {"system_id", "hostname", "status", "power_state", "zone", "pool", "tags", "macs"}
        assert machine["status"] and machine["zone"]
    some = answer["machines"][0]
    filtered = await work.list_machines({"hostname": [some["hostname"]]})
    assert [m["system_id"] for m in filtered["machines"]] == [some["system_id"]]


@pytest_twisted.ensureDeferred
async def test_get_machines_reports_the_missing_separately(site) -> None:
    work, _, _ = site
    some = (await work.list_machines({}))["machines"][0]["system_id"]
    answer = await work.get_machines([some, "nosuch"])
    assert [m["system_id"] for m in answer["machines"]] == [some]
    assert answer["missing"] == ["nosuch"]


@pytest_twisted.ensureDeferred
async def test_maas_errors_become_the_rpc_errors_the_region_maps(site) -> None:
    work, _, _ = site
    with pytest.raises(rpc_errors.NoSuchMachine):
        await work.deploy("nosuch", {})
    ready = next(m for m in (await work.list_machines({}))["machines"] if m["status"] == "Ready")
    await work.deploy(ready["system_id"], {})
    with pytest.raises(rpc_errors.MachineActionConflict):
        await work.deploy(ready["system_id"], {})  # already deploying: MAAS answers 409
    with pytest.raises(rpc_errors.InvalidArgument):
        await work.deploy("x", {"colour": "blue"})
    with pytest.raises(rpc_errors.InvalidArgument):
        await work.deploy("x", {"user_data": "not base64!"})
    with pytest.raises(rpc_errors.InvalidArgument):
        await work.list_machines({"bogus": ["x"]})


@pytest.mark.parametrize("call, message", [
    (lambda w: w.commission("x", {"testing_scripts": False}), "options.testing_scripts must be a script name or a list of them"),
    (lambda w: w.commission("x", {"testing_scripts": ["smartctl", 3]}), "options.testing_scripts must be"),
    (lambda w: w.commission("x", {"enable_ssh": "yes"}), "options.enable_ssh must be true or false, not str"),
    (lambda w: w.deploy("x", {"distro_series": 22}), "options.distro_series must be a string, not int"),
    (lambda w: w.release("x", {"erase": 1}), "options.erase must be true or false, not int"),
    (lambda w: w.list_machines({"hostname": ""}), "filters.hostname must be a non-empty string or a list of them"),
    (lambda w: w.list_machines({"tags": ["virtual", 1]}), "filters.tags must be"),
    (lambda w: w.list_machines({"zone": None}), "filters.zone must be"),
])
@pytest_twisted.ensureDeferred
async def test_option_and_filter_values_of_the_wrong_type_are_invalid_arguments(site, call, message) -> None:
    """Found by tests/test_rpc_cluster_fuzz.py: each was a TypeError in the client, answered UNHANDLED."""
    work, _, _ = site
    with pytest.raises(rpc_errors.InvalidArgument, match=message.replace("(", r"\(")):
        await call(work)
    assert (await work.commission((await work.list_machines({}))["machines"][0]["system_id"], {"enable_ssh": None}))["machine"]


@pytest_twisted.ensureDeferred
async def test_deploy_sends_user_data_and_answers_the_deploying_machine(site) -> None:
    work, simulator, _ = site
    ready = next(m for m in (await work.list_machines({}))["machines"] if m["status"] == "Ready")
    answer = await work.deploy(ready["system_id"], {"distro_series": "jammy", "user_data": "I2Nsb3VkLWNvbmZpZw=="})
    assert answer["machine"]["status"] == "Deploying"


@pytest_twisted.ensureDeferred
async def test_power_outcome_is_reported_to_the_region_with_the_request_id(site) -> None:
    work, simulator, region = site
    ready = next(m for m in (await work.list_machines({}))["machines"] if m["status"] == "Ready")
    assert work.start_power(ready["system_id"], "off", "hard", "req-1") == {"joined": False}
    # The same action again joins; a different one is refused while it runs.
    assert work.start_power(ready["system_id"], "off", "hard", "req-2") == {"joined": True}
    with pytest.raises(rpc_errors.PowerActionInProgress):
        work.start_power(ready["system_id"], "on", "hard", "req-3")
    await region.arrived
    command, report = region.calls[0]
    assert command is ReportPowerOutcome
    assert report["system_id"] == ready["system_id"] and report["request_id"] in ("req-1", "req-2")
    assert report["outcome"] == "ok" and report["state"] == "off"


@pytest_twisted.ensureDeferred
async def test_power_query_answers_every_machine_and_names_bmc_failures(site) -> None:
    work, simulator, _ = site
    ids = [m["system_id"] for m in (await work.list_machines({}))["machines"]]
    simulator.set_faults(bmc_failures={ids[0]})
    answer = await work.query_power_states(ids + ["nosuch"])
    assert set(answer["states"]) == set(ids) | {"nosuch"}
    # A failing BMC is MAAS's own "error" state; a machine MAAS lacks is an error of ours.
    assert answer["states"][ids[0]] == "error" and ids[0] not in answer["errors"]
    assert answer["states"]["nosuch"] == "error" and "not found" in answer["errors"]["nosuch"]


@pytest_twisted.ensureDeferred
async def test_networks_zones_pools_and_the_connection_test(site) -> None:
    work, _, _ = site
    networks = await work.list_networks()
    assert networks["subnets"] and networks["vlans"] and "spaces" in networks
    assert all("fabric" in v for v in networks["vlans"])
    assert (await work.list_zones())["zones"]
    assert (await work.list_pools())["pools"]
    check = await work.test_connection()
    assert check["ok"] and [c["name"] for c in check["checks"]] == ["version", "credentials", "zones"]


@pytest_twisted.ensureDeferred
async def test_a_wrong_api_key_fails_the_connection_test_without_raising(site) -> None:
    work, simulator, _ = site
    bad = MAASClient(reactor, work.client.url, "a:b:c", timeout=5, retry=RetryPolicy(attempts=1, base=0.01, cap=0.01))
    try:
        check = await MachineWork(reactor, bad, region=lambda: None).test_connection()
    finally:
        await bad.close()
    assert not check["ok"]
    assert {c["name"]: c["ok"] for c in check["checks"]} == {"version": True, "credentials": False, "zones": False}


def test_a_cluster_without_maas_says_so_for_every_command() -> None:
    work = MachineWork(Clock(), None, region=lambda: None)
    with pytest.raises(rpc_errors.IntegrationNotConfigured):
        work.start_power("x", "on", "hard", "r")
    failures: list = []
    Deferred.fromCoroutine(work.list_machines({})).addErrback(failures.append)
    assert failures[0].check(rpc_errors.IntegrationNotConfigured)


@given(st.fixed_dictionaries(
    {"system_id": st.text(min_size=1, max_size=10)},
    optional={
        "hostname": st.one_of(st.none(), st.text()),
        "status": st.one_of(st.none(), st.integers(0, 22), st.text()),
        "status_name": st.one_of(st.none(), st.text()),
        "memory": st.one_of(st.none(), st.integers(0, 2**40)),
        "storage": st.one_of(st.none(), st.floats(0, 1e9), st.integers(0, 10**9)),
        "cpu_count": st.one_of(st.none(), st.integers(0, 1024)),
        "zone": st.one_of(st.none(), st.text(), st.fixed_dictionaries({"name": st.text()})),
        "pool": st.one_of(st.none(), st.fixed_dictionaries({"name": st.text()})),
        "tag_names": st.one_of(st.none(), st.lists(st.text())),
        "ip_addresses": st.one_of(st.none(), st.lists(st.text())),
        "interface_set": st.one_of(st.none(), st.lists(st.fixed_dictionaries({"mac_address": st.text()}))),
    },
))
def test_summarize_copes_with_any_subset_of_maas_fields(machine: dict) -> None:
    summary = summarize(machine)
    assert summary["system_id"] == machine["system_id"]
    assert isinstance(summary["tags"], list) and isinstance(summary["memory_mb"], int)
    assert summary["status_code"] is None or isinstance(summary["status_code"], int)

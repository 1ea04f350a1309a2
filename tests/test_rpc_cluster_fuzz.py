"""
Every command the region may send a cluster, with Hypothesis-generated
arguments, to the cluster's real responders (MAAS work on a simulated
MAAS, volume work, infrastructure work) over an in-memory AMP connection:
each is answered, or refused with an error the command declares, never
UNHANDLED, and never left without an answer.  tests/test_rpc_region_fuzz.py
is the other direction.

ConfigureCloudStack is left out: a configuration that passes its checks
would make the cluster call that CloudStack for real.  Without one, the
volume commands show their argument checks and then NOT_CONFIGURED.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.protocols import amp

from clusterd.infrastructure.driver import DriverContext
from clusterd.infrastructure.journal import write_here
from clusterd.infrastructure.registry import DriverRegistry
from clusterd.infrastructure.work import InfrastructureWork
from clusterd.machines import MachineWork
from clusterd.responders import ClusterResponders
from clusterd.volumes import SimulatedMounter
from clusterd.volumes.work import VolumeWork
from rpc import cluster as commands
from rpc.client import RegionClient
from rpc.region import (
    GetTrackedVolumeJobs,
    ReportEvent,
    ReportInfrastructureTask,
    ReportPowerOutcome,
    ReportVolumeJob,
    ReportVolumeState,
)
from simulators.maas import MAASSimulator
from simulators.maas.fake import FakeMAASClient
from tests.rpchelpers import any_text, calls, judge, json_values, make_pair, words

COMMANDS: list[type[amp.Command]] = sorted(
    (c for c in vars(commands).values()
     if isinstance(c, type) and issubclass(c, amp.Command) and c.__module__ == commands.__name__
     and c is not commands.ConfigureCloudStack),
    key=lambda c: c.__name__,
)


class Region(amp.CommandLocator):
    """Takes every report a cluster sends while it works."""

    @ReportPowerOutcome.responder
    def power(self, **_: Any) -> dict[str, Any]:
        return {}

    @ReportEvent.responder
    def event(self, **_: Any) -> dict[str, Any]:
        return {}

    @ReportVolumeState.responder
    def volume_state(self, **_: Any) -> dict[str, Any]:
        return {}

    @ReportVolumeJob.responder
    def volume_job(self, **_: Any) -> dict[str, Any]:
        return {}

    @GetTrackedVolumeJobs.responder
    def tracked(self) -> dict[str, Any]:
        return {"job_ids": [], "busy": {}}

    @ReportInfrastructureTask.responder
    def infrastructure(self, **_: Any) -> dict[str, Any]:
        return {}


def strategies(system_ids: list[str]) -> st.SearchStrategy[tuple[type[amp.Command], dict[str, Any]]]:
    """Calls of every command, with `system_ids` (the simulated MAAS's) among the machine ids."""
    machine_ids = st.one_of(st.sampled_from(system_ids), st.sampled_from(["", "nope", "\x00", "a" * 300]))
    option_words = st.one_of(words, st.sampled_from(["hard", "soft", "jammy", "aGk=", "default", "virtual"]))
    locations = st.fixed_dictionaries(
        {"name": st.one_of(words, json_values), "type": st.one_of(st.sampled_from(["simulated", "maas"]), words)},
        optional={"properties": json_values},
    )
    structures = st.one_of(
        json_values,
        st.lists(st.one_of(machine_ids, json_values), max_size=4),
        st.dictionaries(st.sampled_from(["hostname", "status", "zone", "pool", "tags", "distro_series", "user_data", "erase",
                                         "enable_ssh", "testing_scripts", "stop_mode", "x"]),
                        st.one_of(option_words, st.booleans(), json_values), max_size=3),
        st.lists(st.fixed_dictionaries({"name": st.one_of(words, json_values)}, optional={"size_gb": json_values}), max_size=3),
        st.fixed_dictionaries({"template": st.one_of(words, any_text), "template_type": words, "deployment_location": locations},
                              optional={"system_properties": json_values, "properties": json_values, "instance_name": words}),
        locations,
    )
    text = st.one_of(machine_ids, option_words, any_text)

    return calls(COMMANDS, text, structures)


@attrs.define
class Cluster:
    clock: Clock
    region: Any
    pump: Any
    system_ids: list[str]

    @classmethod
    def build(cls, state: Path) -> "Cluster":
        clock = Clock()
        holder: dict[str, Any] = {}

        def region_client() -> RegionClient:
            return RegionClient(holder["cluster"], ident="region-1")

        sim = MAASSimulator.create(clock, machines=4, seed=3)
        machines = MachineWork(clock, FakeMAASClient(sim), region=region_client)
        volumes = VolumeWork(clock, SimulatedMounter(clock), region=region_client)
        infrastructure = InfrastructureWork(clock, DriverRegistry(DriverContext(clock, {}, state / "drivers")), state / "infrastructure",
                                            region=region_client, write_journal=write_here)
        region, cluster, pump, _ = make_pair(region_locator=Region(), cluster_locator=ClusterResponders(machines, volumes, infrastructure),
                                             clock=clock)
        holder["cluster"] = cluster
        infrastructure.startService()
        return cls(clock, region, pump, sorted(sim.machines))

    def call(self, command: type[amp.Command], kwargs: dict[str, Any]) -> Any:
        """The answer or the Failure, letting simulated time pass (up to 10 minutes) for it."""
        outcome: list[Any] = []
        self.region.call(command, timeout=600, **kwargs).addBoth(outcome.append)
        for _ in range(600):
            self.pump.flush()
            if outcome:
                return outcome[0]
            self.clock.advance(1)
        raise AssertionError(f"{command.__name__}({kwargs!r}) got no answer in 10 simulated minutes")


def test_generated_calls_from_the_region_are_answered_or_refused_with_a_declared_error(tmp_path: Path) -> None:
    cluster = Cluster.build(tmp_path)
    seen: dict[str, set[str]] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(call=strategies(cluster.system_ids))
    def property_(call: tuple[type[amp.Command], dict[str, Any]]) -> None:
        command, kwargs = call
        result = cluster.call(command, kwargs)
        judge(command, kwargs, result, seen)

    property_()
    answered = {name for name, outcomes in seen.items() if "answered" in outcomes}
    assert {c.__name__ for c in COMMANDS if c.arguments and c.__name__ in answered}, f"only the argument-less were answered: {seen}"
    assert len(seen) >= len(COMMANDS) - 2, f"most commands were tried: {sorted(seen)}"

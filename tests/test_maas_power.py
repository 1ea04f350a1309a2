"""PowerOrchestrator on a fake clock: MAAS's wait schedule, joining, refusing, the backstop and reports."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from clusterd.maas import (
    MAASConflict,
    MAASUnavailable,
    PowerActionAlreadyInProgress,
    PowerActionFailed,
    PowerOrchestrator,
)
from simulators.maas import FakeMAASClient, MAASSimulator, Status
from tests.maashelpers import API_KEY, DURATIONS, in_memory_client, owned_off, pick


class Timed(FakeMAASClient):
    """Records when each BMC query happened, and can fail the next few."""

    def __init__(self, sim: MAASSimulator, clock: Clock) -> None:
        super().__init__(sim)
        self.clock = clock
        self.query_times: list[float] = []
        self.fail_queries = 0

    async def query_power_state(self, system_id: str) -> str:
        self.query_times.append(self.clock.seconds())
        if self.fail_queries:
            self.fail_queries -= 1
            raise MAASUnavailable("GET machines/x/?op=query_power_state: HTTP 503", status=503)
        return await super().query_power_state(system_id)


@attrs.define
class Setup:
    clock: Clock
    sim: MAASSimulator
    client: Timed
    reports: list[tuple[Any, ...]]
    power: PowerOrchestrator


@pytest.fixture
def setup() -> Setup:
    clock = Clock()
    sim = MAASSimulator.create(clock, machines=40, seed=7, api_key=API_KEY, durations=attrs.evolve(DURATIONS))
    client = Timed(sim, clock)
    reports: list[tuple[Any, ...]] = []

    async def report(*args: Any) -> None:
        reports.append(args)

    return Setup(clock, sim, client, reports, PowerOrchestrator(clock, client, report=report))


def step(clock: Clock, seconds: float) -> None:
    """Advance in one-second steps, as time really passes (one big advance would skip timers set meanwhile)."""
    whole = int(seconds)
    clock.pump([1.0] * whole)
    if seconds - whole:
        clock.advance(seconds - whole)


def start(s: Setup, system_id: str, action: str, **kw: Any) -> Deferred:
    return Deferred.fromCoroutine(s.power.power(system_id, action, **kw))


def outcome(d: Deferred) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "still running"
    return results[0]


def test_power_on_is_confirmed_on_maas_wait_schedule(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    d = start(setup, system_id, "on")
    assert setup.power.in_progress() == {system_id: "on"}
    step(setup.clock, 1)
    assert not d.called  # the BMC takes 3 s
    step(setup.clock, 2)
    assert outcome(d) == "on"
    assert setup.client.query_times == [1, 3]
    assert setup.power.in_progress() == {}
    assert setup.reports == [(system_id, "on", "ok", "on", None)]


def test_a_machine_that_never_gets_there_fails_at_the_backstop_after_the_full_schedule(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    setup.sim.fail_bmc(system_id)
    d = start(setup, system_id, "on")
    step(setup.clock, 299.9)
    assert not d.called
    step(setup.clock, 0.1)
    failure = outcome(d)
    assert failure.check(PowerActionFailed)
    assert failure.value.state == "error" and "300s" in failure.value.message
    assert setup.client.query_times[:9] == [1, 3, 5, 9, 15, 23, 35, 47, 59]
    assert all(b - a == 12 for a, b in zip(setup.client.query_times[6:], setup.client.query_times[7:]))
    (report,) = setup.reports
    assert report[:4] == (system_id, "on", "failed", "error") and "not confirmed" in report[4]


def test_the_same_action_again_joins_the_running_one(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    first, second = start(setup, system_id, "on"), start(setup, system_id, "on")
    step(setup.clock, 3)
    assert outcome(first) == outcome(second) == "on"
    assert setup.client.calls.count(("power_on", system_id)) == 1
    assert len(setup.reports) == 1


def test_a_different_action_while_one_runs_is_refused(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    running = start(setup, system_id, "on")
    refused = outcome(start(setup, system_id, "off"))
    assert refused.check(PowerActionAlreadyInProgress)
    assert (refused.value.running, refused.value.requested) == ("on", "off")
    step(setup.clock, 3)
    assert outcome(running) == "on"
    afterwards = start(setup, system_id, "off")  # allowed once the first is done
    step(setup.clock, 3)
    assert outcome(afterwards) == "off"


def test_cycle_is_off_verified_then_on_verified(setup: Setup) -> None:
    system_id = pick(setup.sim, Status.DEPLOYED)  # on and owned
    d = start(setup, system_id, "cycle")
    step(setup.clock, 3)  # off confirmed at 3
    assert not d.called and setup.sim.get(system_id).power_state == "off"
    step(setup.clock, 3)  # on sent at 3; queries at 4, 6
    assert outcome(d) == "on"
    assert [c for c, _ in setup.client.calls] == [
        "power_off", "query_power_state", "query_power_state", "power_on", "query_power_state", "query_power_state",
    ]
    assert setup.reports == [(system_id, "cycle", "ok", "on", None)]


def test_soft_power_off_is_passed_to_maas_and_waited_for(setup: Setup) -> None:
    system_id = pick(setup.sim, Status.DEPLOYED)
    d = start(setup, system_id, "off", stop_mode="soft")
    step(setup.clock, 15)
    assert outcome(d) == "off"
    assert setup.client.query_times == [1, 3, 5, 9, 15]  # a soft off takes 10 s


def test_maas_refusing_the_action_fails_it_at_once_and_reports(setup: Setup) -> None:
    system_id = pick(setup.sim, Status.READY)  # not allocated: MAAS will not start it
    failure = outcome(start(setup, system_id, "on"))
    assert failure.check(MAASConflict)
    assert setup.reports[0][:3] == (system_id, "on", "failed") and "allocated" in setup.reports[0][4]
    assert setup.power.in_progress() == {}


def test_failed_queries_are_not_answers(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    setup.client.fail_queries = 2
    d = start(setup, system_id, "on")
    step(setup.clock, 5)
    assert outcome(d) == "on" and setup.client.query_times == [1, 3, 5]


def test_a_failing_report_does_not_fail_the_action(setup: Setup) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("region unreachable")

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        power = PowerOrchestrator(setup.clock, setup.client, report=broken)
        system_id = owned_off(setup.sim)
        d = Deferred.fromCoroutine(power.power(system_id, "on"))
        step(setup.clock, 3)
        assert outcome(d) == "on"
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("Reporting power" in e.get("log_format", "") for e in events)


def test_one_caller_giving_up_stops_nobody_else(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    impatient, patient = start(setup, system_id, "on"), start(setup, system_id, "on")
    impatient.cancel()
    assert outcome(impatient).check(CancelledError)
    step(setup.clock, 3)
    assert outcome(patient) == "on"


def test_a_shorter_backstop_and_bad_arguments(setup: Setup) -> None:
    system_id = owned_off(setup.sim)
    setup.sim.fail_bmc(system_id)
    d = start(setup, system_id, "on", backstop=5)
    step(setup.clock, 5)
    assert outcome(d).check(PowerActionFailed)
    assert outcome(start(setup, system_id, "reboot")).check(ValueError)
    assert outcome(start(setup, system_id, "on", backstop=0)).check(ValueError)
    assert outcome(start(setup, system_id, "off", stop_mode="gentle")).check(ValueError)
    assert setup.power.in_progress() == {}


def test_the_real_client_in_memory_drives_a_cycle_on_the_clock() -> None:
    clock = Clock()
    sim = MAASSimulator.create(clock, machines=40, seed=7, api_key=API_KEY, durations=attrs.evolve(DURATIONS))
    power = PowerOrchestrator(clock, in_memory_client(sim, clock))
    system_id = pick(sim, Status.DEPLOYED)
    d = Deferred.fromCoroutine(power.power(system_id, "cycle"))
    step(clock, 6)
    assert outcome(d) == "on"
    ops = [op for method, _, op in sim.request_log if method == "POST"]
    assert ops == ["power_off", "power_on"]

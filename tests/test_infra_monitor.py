"""
Infrastructure task monitoring on a `Clock`: what each driver answer or
error does to a task, the backoff between polls, and delivery of the end to
the region until it acknowledges (fake driver and fake region; no real time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from clusterd.infrastructure.driver import (
    COMPLETE,
    FAILED,
    IN_PROGRESS,
    INSUFFICIENT_CAPACITY,
    INTERNAL_ERROR,
    Accepted,
    FailureDetails,
    Found,
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InfrastructureTask,
    InvalidInfrastructureRequest,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from clusterd.infrastructure.journal import Journal, Watched
from clusterd.infrastructure.monitor import TaskMonitor, backoff
from rpc import errors as rpc_errors
from rpc.region import ReportInfrastructureTask

LOCATION = {"name": "site-1", "type": "fake", "properties": {}}


# -- fakes shared with tests/test_infra_cluster.py ----------------------------------------


class FakeDriver:
    """
    A driver that answers from a script: `tasks[request_id]` is a list of
    answers for `get_infrastructure_task` (an `InfrastructureTask`, a status
    string, or an exception to raise); the last one repeats.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, list[Any]] = {}
        self.polls: list[tuple[float, str]] = []
        self.clock: Clock | None = None
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.found: dict[str, Found] = {}
        self.fail_with: BaseException | None = None
        self.closed = False
        self._next = 0

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def create_infrastructure(self, template: str, template_type: str, system_properties: Any, properties: Any,
                                    deployment_location: Any) -> Accepted:
        self._check()
        self._next += 1
        self.created.append({"template": template, "template_type": template_type, "system_properties": system_properties,
                             "properties": properties, "deployment_location": deployment_location})
        return Accepted(f"inf-{self._next}", f"req-{self._next}")

    async def delete_infrastructure(self, infrastructure_id: str, deployment_location: Any) -> Accepted:
        self._check()
        self._next += 1
        self.deleted.append(infrastructure_id)
        return Accepted(infrastructure_id, f"req-{self._next}")

    async def find_infrastructure(self, template: str, template_type: str, instance_name: str, deployment_location: Any) -> Found | None:
        self._check()
        return self.found.get(instance_name)

    async def get_infrastructure_task(self, infrastructure_id: str, request_id: str, deployment_location: Any) -> InfrastructureTask:
        self.polls.append((self.clock.seconds() if self.clock else 0.0, request_id))
        script = self.tasks.get(request_id, [IN_PROGRESS])
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, str):
            return InfrastructureTask(infrastructure_id, request_id, answer)
        return answer

    def close(self) -> None:
        self.closed = True


class FakeRegion:
    """
    What `region()` is: calling it gives a client, or raises
    `NoConnectionsAvailable` while `down`.  A client's call fails while
    `refuse` and never answers while `hang`; the calls answered are in `reports`.
    """

    def __init__(self) -> None:
        self.down = False
        self.refuse = False
        self.hang = False
        self.reports: list[dict[str, Any]] = []
        self.attempts = 0

    def __call__(self) -> "FakeRegionClient":
        self.attempts += 1
        if self.down:
            raise rpc_errors.NoConnectionsAvailable("not connected to any region")
        return FakeRegionClient(self)

    def answer(self, command: Any, kwargs: dict[str, Any]) -> Deferred[dict[str, Any]]:
        assert command is ReportInfrastructureTask
        assert set(kwargs) == {"task", "operation", "deployment_location"}
        if self.refuse:
            return fail(rpc_errors.ConnectionClosed("connection lost"))
        if self.hang:
            return Deferred()
        self.reports.append(kwargs)
        return succeed({})


class FakeRegionClient:
    def __init__(self, region: FakeRegion) -> None:
        self.region = region

    def __call__(self, command: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        assert timeout is not None, "reports are sent with a timeout"
        return self.region.answer(command, kwargs)


# -- helpers --------------------------------------------------------------------------------


def make_monitor(tmp_path: Path, driver: FakeDriver | None = None, region: FakeRegion | None = None,
                 **kwargs: Any) -> tuple[TaskMonitor, FakeDriver, FakeRegion, Clock]:
    clock = Clock()
    driver = driver or FakeDriver()
    driver.clock = clock
    region = region or FakeRegion()

    def driver_for(kind: str) -> FakeDriver:
        if kind != "fake":
            raise InvalidInfrastructureRequest(f"no driver for {kind!r} (known types: fake)")
        return driver

    monitor = TaskMonitor(clock, Journal.open(tmp_path), driver_for, region, **kwargs)
    monitor.start()
    return monitor, driver, region, clock


def watch(monitor: TaskMonitor, request_id: str = "req-1", operation: str = "create", location: Any = None) -> Watched:
    task = Watched(request_id, "inf-" + request_id.removeprefix("req-"), operation, dict(location or LOCATION))
    monitor.journal.watch(task)
    monitor.watch(task)
    return task


def step(clock: Clock, seconds: float, by: float = 0.5) -> None:
    """Advance `clock` in small steps so every timer due on the way fires in order."""
    for _ in range(int(seconds / by)):
        clock.advance(by)


# -- polling ----------------------------------------------------------------------------------


def test_backoff_doubles_from_the_interval_up_to_the_cap() -> None:
    following = backoff(1.0, 30.0)
    delays = [1.0]
    for _ in range(7):
        delays.append(following(delays[-1]))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff(0.5, 3.0)(2.0) == 3.0


def test_a_task_in_progress_is_polled_on_the_backoff_schedule(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    watch(monitor)
    step(clock, 100)
    # First poll after 1 s, then 2, 4, 8, 16, and every 30 s from then on.
    assert [t for t, _ in driver.polls] == [1, 3, 7, 15, 31, 61, 91]
    assert monitor.polling == {"req-1"} and region.reports == []
    assert monitor.journal.is_watched("req-1")


def test_the_cap_and_first_interval_are_configurable(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path, interval=0.5, max_interval=2.0)
    watch(monitor)
    step(clock, 10)
    assert [t for t, _ in driver.polls] == [0.5, 1.5, 3.5, 5.5, 7.5, 9.5]


def test_outputs_that_are_not_json_end_the_task_failed_rather_than_poison_the_journal(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-1"] = [InfrastructureTask("inf-1", "req-1", COMPLETE, outputs={"when": object(), "n": float("nan")})]
    watch(monitor)
    step(clock, 3)
    [report] = region.reports
    assert report["task"]["status"] == "FAILED" and report["task"]["failureDetails"]["failureCode"] == "INTERNAL_ERROR"
    assert "outputs that are not JSON" in report["task"]["failureDetails"]["description"]
    assert Journal.open(tmp_path).undelivered == (), "written, and acknowledged"


def test_a_completed_task_is_reported_with_its_outputs_and_leaves_the_journal_when_acknowledged(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-1"] = [IN_PROGRESS, InfrastructureTask("inf-1", "req-1", COMPLETE, outputs={"ip": "10.0.0.5"})]
    watch(monitor)
    step(clock, 3)
    assert region.reports == [{
        "task": {"requestId": "req-1", "infrastructureId": "inf-1", "status": COMPLETE, "outputs": {"ip": "10.0.0.5"}},
        "operation": "create",
        "deployment_location": LOCATION,
    }]
    assert monitor.journal.watched == () and monitor.journal.undelivered == ()
    assert monitor.polling == frozenset() and monitor.delivering == frozenset()
    step(clock, 120)
    assert len(driver.polls) == 2 and len(region.reports) == 1, "an ended, acknowledged task is left alone"


def test_a_failed_task_is_reported_with_the_drivers_failure_details(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-7"] = [InfrastructureTask("inf-7", "req-7", FAILED, FailureDetails(INSUFFICIENT_CAPACITY, "no room"))]
    watch(monitor, "req-7", operation="delete")
    step(clock, 1)
    [report] = region.reports
    assert report["operation"] == "delete"
    assert report["task"] == {"requestId": "req-7", "infrastructureId": "inf-7", "status": FAILED,
                              "failureDetails": {"failureCode": INSUFFICIENT_CAPACITY, "description": "no room"}}


@pytest.mark.parametrize("error", [
    TemporaryInfrastructureError("VIM busy"),
    UnreachableDeploymentLocation("no route to site-1"),
], ids=["temporary", "unreachable"])
def test_temporary_and_unreachable_errors_requeue_the_task(tmp_path: Path, error: Exception) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-1"] = [error, error, error, COMPLETE]
    watch(monitor)
    step(clock, 7)
    assert [t for t, _ in driver.polls] == [1, 3, 7], "requeued on the same backoff"
    assert region.reports == [] and monitor.journal.is_watched("req-1")
    step(clock, 8)
    assert [r["task"]["status"] for r in region.reports] == [COMPLETE]


@pytest.mark.parametrize(("error", "description"), [
    (InfrastructureNotFound("no infrastructure inf-1"), "no infrastructure inf-1"),
    (InfrastructureRequestNotFound("no request req-1"), "no request req-1"),
    (InfrastructureError("VIM said 500"), "VIM said 500"),
    (InfrastructureError(), "InfrastructureError"),
    (KeyError("stack"), "KeyError: 'stack'"),
    (RuntimeError("driver bug"), "RuntimeError: driver bug"),
    (rpc_errors.IntegrationUnavailable("MAAS down"), "IntegrationUnavailable: MAAS down"),
], ids=["not-found", "request-not-found", "infrastructure-error", "no-message", "key-error", "runtime-error", "rpc-error"])
def test_any_other_error_ends_the_task_failed_with_internal_error(tmp_path: Path, error: Exception, description: str) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-1"] = [IN_PROGRESS, error]
    watch(monitor)
    step(clock, 3)
    assert [r["task"] for r in region.reports] == [{
        "requestId": "req-1", "infrastructureId": "inf-1", "status": FAILED,
        "failureDetails": {"failureCode": INTERNAL_ERROR, "description": description},
    }]
    step(clock, 60)
    assert len(driver.polls) == 2, "no more polls after the error"


def test_a_task_at_a_location_type_no_driver_handles_ends_failed(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    watch(monitor, location={"name": "elsewhere", "type": "gone"})
    step(clock, 1)
    [report] = region.reports
    assert report["task"]["failureDetails"]["failureCode"] == INTERNAL_ERROR
    assert "'gone'" in report["task"]["failureDetails"]["description"]
    assert driver.polls == []


def test_a_driver_answer_that_is_not_a_task_ends_it_failed(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-1"] = [{"status": "COMPLETE"}]
    watch(monitor)
    step(clock, 1)
    assert region.reports[0]["task"]["failureDetails"] == {
        "failureCode": INTERNAL_ERROR, "description": "the driver answered dict, not an InfrastructureTask"}


def test_the_report_carries_the_ids_the_region_was_given(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    driver.tasks["req-1"] = [InfrastructureTask("other-inf", "other-req", COMPLETE)]
    watch(monitor)
    step(clock, 1)
    assert region.reports[0]["task"]["requestId"] == "req-1"
    assert region.reports[0]["task"]["infrastructureId"] == "inf-1"


def test_watching_a_task_twice_polls_it_once(tmp_path: Path) -> None:
    monitor, driver, region, clock = make_monitor(tmp_path)
    task = watch(monitor)
    monitor.watch(task)
    step(clock, 1)
    assert len(driver.polls) == 1


# -- delivery -------------------------------------------------------------------------------


def test_a_report_is_retried_with_backoff_until_a_region_acknowledges_it(tmp_path: Path) -> None:
    region = FakeRegion()
    region.down = True
    monitor, driver, region, clock = make_monitor(tmp_path, region=region)
    driver.tasks["req-1"] = [COMPLETE]
    watch(monitor)
    step(clock, 1)
    assert region.attempts == 1 and region.reports == []
    assert [c.request_id for c in monitor.journal.undelivered] == ["req-1"]
    assert monitor.journal.watched == (), "an ended task is no longer polled"
    step(clock, 15)  # retries after 1, 2, 4, 8 s
    assert region.attempts == 5
    region.down = False
    region.refuse = True  # connected, but the call fails
    step(clock, 16)
    assert region.attempts == 6 and region.reports == []
    assert monitor.journal.undelivered_count == 1
    region.refuse = False
    step(clock, 30)
    assert region.attempts == 7 and len(region.reports) == 1
    assert monitor.journal.undelivered_count == 0 and monitor.delivering == frozenset()
    assert Journal.open(tmp_path).undelivered == (), "the acknowledgement is on disk"
    step(clock, 120)
    assert len(region.reports) == 1


def test_a_report_waiting_out_its_backoff_goes_at_once_when_a_region_connects(tmp_path: Path) -> None:
    region = FakeRegion()
    region.down = True
    monitor, driver, region, clock = make_monitor(tmp_path, region=region, max_interval=600)
    driver.tasks["req-1"] = [COMPLETE]
    watch(monitor)
    step(clock, 64)  # attempts after 1, 2, 4, 8, 16, 32 s: the next waits 64 s
    attempts = region.attempts
    region.down = False
    monitor.retry_now()
    assert region.attempts == attempts + 1 and len(region.reports) == 1
    assert monitor.journal.undelivered_count == 0
    monitor.retry_now()  # nothing is waiting: nothing is sent
    step(clock, 700)
    assert len(region.reports) == 1 and clock.getDelayedCalls() == []


def test_a_report_that_gets_no_answer_times_out_and_is_sent_again(tmp_path: Path) -> None:
    region = FakeRegion()
    region.hang = True
    monitor, driver, region, clock = make_monitor(tmp_path, region=region, report_timeout=10.0)
    driver.tasks["req-1"] = [COMPLETE]
    watch(monitor)
    step(clock, 1)
    assert region.attempts == 1
    step(clock, 10)
    assert region.attempts == 1, "still waiting for the answer"
    step(clock, 1.5)  # timed out at 11 s, retried 1 s later
    assert region.attempts == 2
    region.hang = False
    step(clock, 13)
    assert len(region.reports) == 1 and monitor.journal.undelivered_count == 0


# -- stopping -------------------------------------------------------------------------------


def test_stopping_ends_polling_and_delivery_but_keeps_the_journal(tmp_path: Path) -> None:
    region = FakeRegion()
    region.down = True
    monitor, driver, region, clock = make_monitor(tmp_path, region=region)
    driver.tasks["req-2"] = [COMPLETE]
    watch(monitor, "req-1")
    watch(monitor, "req-2")
    step(clock, 1)
    assert monitor.polling == {"req-1"} and monitor.delivering == {"req-2"}
    monitor.stop()
    polls, attempts = len(driver.polls), region.attempts
    step(clock, 120)
    assert (len(driver.polls), region.attempts) == (polls, attempts)
    assert clock.getDelayedCalls() == []
    reread = Journal.open(tmp_path)
    assert [w.request_id for w in reread.watched] == ["req-1"]
    assert [c.request_id for c in reread.undelivered] == ["req-2"]
    # Stopped, it takes nothing new on (the journal has it for the next start).
    watch(monitor, "req-3")
    assert monitor.polling == frozenset()


def test_a_driver_that_turns_the_cancellation_into_an_error_does_not_fail_the_task(tmp_path: Path) -> None:
    class Stubborn(FakeDriver):
        async def get_infrastructure_task(self, infrastructure_id: str, request_id: str, deployment_location: Any) -> InfrastructureTask:
            try:
                await Deferred()  # a call to the VIM, cancelled by stop()
            except Exception as e:
                raise InfrastructureError(f"call failed: {e!r}") from None
            raise AssertionError("not reached")

    monitor, driver, region, clock = make_monitor(tmp_path, driver=Stubborn())
    watch(monitor)
    step(clock, 1)
    monitor.stop()
    assert region.reports == []
    assert [w.request_id for w in Journal.open(tmp_path).watched] == ["req-1"]
    assert Journal.open(tmp_path).undelivered == ()


def test_start_resumes_what_the_journal_holds(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.watch(Watched("req-1", "inf-1", "create", LOCATION))
    journal.watch(Watched("req-2", "inf-2", "delete", LOCATION))
    from clusterd.infrastructure.journal import Completion

    journal.complete(Completion("req-2", "inf-2", "delete", LOCATION, {"requestId": "req-2", "infrastructureId": "inf-2",
                                                                        "status": COMPLETE}))
    monitor, driver, region, clock = make_monitor(tmp_path)
    assert monitor.polling == {"req-1"}
    assert [r["task"]["requestId"] for r in region.reports] == ["req-2"], "sent at once on start"
    driver.tasks["req-1"] = [COMPLETE]
    step(clock, 1)
    assert [r["task"]["requestId"] for r in region.reports] == ["req-2", "req-1"]
    assert Journal.open(tmp_path).watched == () and Journal.open(tmp_path).undelivered == ()

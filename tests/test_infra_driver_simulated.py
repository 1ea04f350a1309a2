"""
The ``simulated`` infrastructure driver: the driver contract against the VIM
simulator served on a real 127.0.0.1 port (its requests end on a
`task.Clock` that `settle` advances), plus what only this driver does: every
failure code, the VIM's errors mapped to Ignition's, timeouts, metrics and
configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock

from clusterd.infrastructure.driver import (
    COMPLETE,
    FAILED,
    FAILURE_CODES,
    IN_PROGRESS,
    DriverContext,
    Found,
    InfrastructureError,
    InfrastructureNotFound,
    InvalidInfrastructureRequest,
    InvalidInfrastructureTemplate,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from clusterd.infrastructure.simulated import (
    CONFIG_PATH,
    SimulatedDriver,
    SimulatedDriverConfigError,
    flatten_properties,
    make_driver,
)
from outpost.config import ConfigError
from outpost.metrics import ExternalCallMetrics
from simulators._serve import unserve
from simulators.vim import VimSimulator, simulator_url, start_vim_simulator, stop_vim_simulator
from tests.infracontract import DriverContract, new_name, system_properties

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

CREATE_DURATION = 5.0
DELETE_DURATION = 2.0
LOCATION = {"name": "site-a", "type": "simulated", "properties": {}}

TEMPLATE_FOR = """
description: a server for {name}
parameters:
  flavor: {{default: small}}
resources:
  server:
    type: Simulated::Server
    properties: {{flavor: {{get_param: flavor}}}}
outputs:
  server_ip: {{value: {{get_attr: [server, ip]}}}}
  flavor: {{get_attr: [server, flavor]}}
"""
TEMPLATE = TEMPLATE_FOR.format(name="any")


def failing(code: str, delete: bool = False, description: str | None = None) -> str:
    knob = "fail_delete" if delete else "fail_create"
    extra = f"\n  failure_description: {description}" if description else ""
    return f"resources:\n  s: {{type: Simulated::Server}}\nsimulation:\n  {knob}: {code}{extra}\n"


@attrs.define(eq=False)
class SimulatedHarness:
    driver: SimulatedDriver
    location: dict[str, Any]
    port: IListeningPort
    sim: VimSimulator
    clock: Clock
    metrics: ExternalCallMetrics
    registry: CollectorRegistry
    serving: bool = True

    @classmethod
    async def start(cls, state_dir: Path) -> "SimulatedHarness":
        clock = Clock()
        port, sim = await start_vim_simulator(
            reactor, create_duration=CREATE_DURATION, delete_duration=DELETE_DURATION, clock=clock, seed=7
        )
        registry = CollectorRegistry()
        metrics = ExternalCallMetrics(registry)
        context = DriverContext(reactor, {"url": simulator_url(port), "timeout": 10}, state_dir, metrics=metrics)
        driver = make_driver(context)
        return cls(driver, dict(LOCATION), port, sim, clock, metrics, registry)

    def template(self, name: str) -> tuple[str, str]:
        return TEMPLATE_FOR.format(name=name), "simulated"

    def invalid_template(self) -> tuple[str, str]:
        return "resources: [not, a, mapping]\n", "simulated"

    def failing_template(self, name: str) -> tuple[str, str, str]:
        return failing("INFRASTRUCTURE_ERROR"), "simulated", "INFRASTRUCTURE_ERROR"

    async def settle(self) -> None:
        while self.clock.getDelayedCalls():
            due = max(call.getTime() for call in self.clock.getDelayedCalls())
            self.clock.advance(max(0.0, due - self.clock.seconds()))

    async def unreachable(self) -> None:
        if self.serving:
            self.serving = False
            await unserve(self.port, self.sim.listeners)

    async def close(self) -> None:
        await self.driver.close()
        if self.serving:
            await stop_vim_simulator(self.port, self.sim)
        self.sim.stop()

    def calls(self, operation: str, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "outpost_external_calls_total", {"service": "vim", "operation": operation, "outcome": outcome}
        )
        return value or 0.0


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[SimulatedHarness]:
    h = await SimulatedHarness.start(tmp_path)
    try:
        yield h
    finally:
        await h.close()


class TestSimulatedDriver(DriverContract):
    """The driver contract (tests/infracontract.py), simulated."""


async def create(h: SimulatedHarness, template: str, name: str | None = None, properties: Any = None) -> Any:
    return await h.driver.create_infrastructure(
        template, "simulated", system_properties(name or new_name()), properties or {}, h.location
    )


async def task(h: SimulatedHarness, accepted: Any) -> Any:
    return await h.driver.get_infrastructure_task(accepted.infrastructure_id, accepted.request_id, h.location)


# -- task outcomes ---------------------------------------------------------------


@pytest.mark.parametrize("code", FAILURE_CODES)
@pytest_twisted.ensureDeferred
async def test_a_create_can_end_failed_with_every_failure_code_and_its_description(harness: SimulatedHarness, code: str) -> None:
    accepted = await create(harness, failing(code, description=f"simulated {code.lower()}"))
    assert (await task(harness, accepted)).status == IN_PROGRESS
    await harness.settle()
    done = await task(harness, accepted)
    assert done.status == FAILED and done.outputs is None
    assert (done.failure_details.failure_code, done.failure_details.description) == (code, f"simulated {code.lower()}")


@pytest.mark.parametrize("code", FAILURE_CODES)
@pytest_twisted.ensureDeferred
async def test_a_delete_can_end_failed_with_every_failure_code(harness: SimulatedHarness, code: str) -> None:
    created = await create(harness, failing(code, delete=True))
    await harness.settle()
    assert (await task(harness, created)).status == COMPLETE
    deleting = await harness.driver.delete_infrastructure(created.infrastructure_id, harness.location)
    await harness.settle()
    done = await task(harness, deleting)
    assert done.status == FAILED and done.failure_details.failure_code == code


@pytest_twisted.ensureDeferred
async def test_a_second_infrastructure_with_a_live_name_fails_resource_already_exists(harness: SimulatedHarness) -> None:
    name = new_name()
    first = await create(harness, TEMPLATE_FOR.format(name=name), name)
    second = await create(harness, TEMPLATE_FOR.format(name=name), name)
    assert second.infrastructure_id != first.infrastructure_id
    clash = await task(harness, second)
    assert clash.status == FAILED and clash.failure_details.failure_code == "RESOURCE_ALREADY_EXISTS"
    await harness.settle()
    found = await harness.driver.find_infrastructure(TEMPLATE, "simulated", name, harness.location)
    assert found is not None and found.infrastructure_id == first.infrastructure_id


@pytest_twisted.ensureDeferred
async def test_creates_beyond_the_vims_capacity_fail_insufficient_capacity(harness: SimulatedHarness) -> None:
    harness.sim.capacity = 1
    kept = await create(harness, TEMPLATE)
    refused = await create(harness, TEMPLATE)
    done = await task(harness, refused)
    assert done.status == FAILED and done.failure_details.failure_code == "INSUFFICIENT_CAPACITY"
    await harness.settle()
    await harness.driver.delete_infrastructure(kept.infrastructure_id, harness.location)
    await harness.settle()
    assert (await task(harness, await create(harness, TEMPLATE))).status == IN_PROGRESS


@pytest_twisted.ensureDeferred
async def test_deleting_while_creating_fails_the_create_and_completes_the_delete(harness: SimulatedHarness) -> None:
    created = await create(harness, TEMPLATE)
    deleting = await harness.driver.delete_infrastructure(created.infrastructure_id, harness.location)
    cancelled = await task(harness, created)
    assert cancelled.status == FAILED and cancelled.failure_details.failure_code == "INFRASTRUCTURE_ERROR"
    await harness.settle()
    assert (await task(harness, deleting)).status == COMPLETE
    with pytest.raises(InfrastructureNotFound):
        await harness.driver.delete_infrastructure(created.infrastructure_id, harness.location)


@pytest_twisted.ensureDeferred
async def test_outputs_carry_property_values_sent_in_ignitions_type_value_form(harness: SimulatedHarness) -> None:
    name = new_name()
    properties = {"flavor": {"type": "string", "value": "large"}, "unused": "x"}
    accepted = await create(harness, TEMPLATE, name, properties)
    await harness.settle()
    done = await task(harness, accepted)
    assert done.outputs["flavor"] == "large" and done.outputs["server_ip"].startswith("10.")
    found = await harness.driver.find_infrastructure(TEMPLATE, "simulated", name, harness.location)
    assert found == Found(accepted.infrastructure_id, done.outputs)


@pytest_twisted.ensureDeferred
async def test_infrastructure_still_being_created_is_not_found(harness: SimulatedHarness) -> None:
    name = new_name()
    await create(harness, TEMPLATE, name)
    assert await harness.driver.find_infrastructure(TEMPLATE, "simulated", name, harness.location) is None


def test_property_values_are_flattened_from_ignitions_forms() -> None:
    assert flatten_properties({
        "a": "plain", "b": {"type": "integer", "value": 3}, "c": {"type": "key", "privateKey": "PRIV", "publicKey": "PUB"},
        "d": {"type": "key", "privateKey": "PRIV"}, "e": {"no": "type"}, "f": {"type": "string"},
    }) == {"a": "plain", "b": 3, "c": "PRIV\n---\nPUB", "d": "PRIV", "e": {"no": "type"}, "f": None}  # fmt: skip
    assert flatten_properties(None) == {}


# -- requests the VIM refuses ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_without_a_resource_name_or_id_the_create_is_an_invalid_request(harness: SimulatedHarness) -> None:
    with pytest.raises(InvalidInfrastructureRequest, match="resourceName"):
        await harness.driver.create_infrastructure(TEMPLATE, "simulated", {"requestId": "r"}, {}, harness.location)
    accepted = await harness.driver.create_infrastructure(TEMPLATE, "simulated", {"resourceId": "rid-1"}, {}, harness.location)
    assert harness.sim.infrastructures[accepted.infrastructure_id].name == "rid-1"


@pytest_twisted.ensureDeferred
async def test_a_name_the_vim_refuses_is_an_invalid_request_not_a_template_error(harness: SimulatedHarness) -> None:
    with pytest.raises(InvalidInfrastructureRequest) as raised:
        await create(harness, TEMPLATE, "x" * 300)
    assert not isinstance(raised.value, InvalidInfrastructureTemplate)


@pytest.mark.parametrize(
    "template, kind, message",
    [
        (TEMPLATE, "TOSCA", "template type"),
        ("resources: {", "simulated", "not valid YAML"),
        ("parameters: {image: {}}\nresources: {}\noutputs: {i: {get_param: image}}", "simulated", "image"),
        ("resources: {}\noutputs: {o: {get_attr: [nope, ip]}}", "simulated", "unknown resource"),
    ],
    ids=["type", "yaml", "missing-parameter", "bad-reference"],
)
@pytest_twisted.ensureDeferred
async def test_templates_the_vim_rejects_are_invalid_templates_with_its_reason(
    harness: SimulatedHarness, template: str, kind: str, message: str
) -> None:
    with pytest.raises(InvalidInfrastructureTemplate, match=message):
        await harness.driver.create_infrastructure(template, kind, system_properties(new_name()), {}, harness.location)


# -- the VIM unavailable -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_503_is_a_temporary_error_on_every_call_and_counts_as_unavailable(harness: SimulatedHarness) -> None:
    accepted = await create(harness, TEMPLATE)
    harness.sim.set_faults(script=["error"] * 4)
    with pytest.raises(TemporaryInfrastructureError):
        await create(harness, TEMPLATE)
    with pytest.raises(TemporaryInfrastructureError):
        await task(harness, accepted)
    with pytest.raises(TemporaryInfrastructureError):
        await harness.driver.find_infrastructure(TEMPLATE, "simulated", "x", harness.location)
    with pytest.raises(TemporaryInfrastructureError):
        await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
    assert (await task(harness, accepted)).status == IN_PROGRESS  # the faults are used up
    assert harness.calls("POST infrastructures", "unavailable") == 1
    assert harness.calls("GET infrastructures/{id}/requests/{request_id}", "unavailable") == 1
    assert harness.calls("POST templates/validate", "unavailable") == 1
    assert harness.calls("DELETE infrastructures/{id}", "unavailable") == 1


@pytest.mark.parametrize("status", [429, 502, 504])
@pytest_twisted.ensureDeferred
async def test_other_come_back_later_statuses_are_temporary_too(harness: SimulatedHarness, status: int) -> None:
    harness.sim.set_faults(error_status=status, script=["error"])
    with pytest.raises(TemporaryInfrastructureError):
        await create(harness, TEMPLATE)


@pytest_twisted.ensureDeferred
async def test_a_500_is_an_infrastructure_error_that_is_not_temporary(harness: SimulatedHarness) -> None:
    harness.sim.set_faults(error_status=500, script=["error"])
    with pytest.raises(InfrastructureError) as raised:
        await create(harness, TEMPLATE)
    assert not isinstance(raised.value, (TemporaryInfrastructureError, UnreachableDeploymentLocation))
    assert harness.calls("POST infrastructures", "error") == 1


@pytest_twisted.ensureDeferred
async def test_a_connection_dropped_without_an_answer_is_unreachable(harness: SimulatedHarness) -> None:
    harness.sim.set_faults(script=["drop"])
    with pytest.raises(UnreachableDeploymentLocation):
        await create(harness, TEMPLATE)
    assert not harness.sim.infrastructures


@pytest_twisted.ensureDeferred
async def test_a_wrong_path_in_the_url_is_an_error_that_names_the_setting(harness: SimulatedHarness) -> None:
    driver = SimulatedDriver(reactor, simulator_url(harness.port) + "/not-the-api")
    try:
        with pytest.raises(InfrastructureError, match=f"{CONFIG_PATH}.url"):
            await driver.delete_infrastructure("x", LOCATION)
    finally:
        await driver.close()


class NeverAnswers:
    """An HTTP client whose requests never get an answer (until cancelled)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.requests.append((method, url))
        return Deferred()


def test_no_answer_within_the_timeout_is_unreachable_and_recorded() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    driver = SimulatedDriver(clock, "http://vim.test:8090", timeout=5, http=NeverAnswers(), metrics=ExternalCallMetrics(registry))
    d = Deferred.fromCoroutine(driver.get_infrastructure_task("i", "r", LOCATION))
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.check(UnreachableDeploymentLocation) and "within 5s" in str(failure.value)
    assert registry.get_sample_value(
        "outpost_external_calls_total",
        {"service": "vim", "operation": "GET infrastructures/{id}/requests/{request_id}", "outcome": "unavailable"},
    ) == 1
    assert registry.get_sample_value(
        "outpost_external_call_duration_seconds_sum", {"service": "vim", "operation": "GET infrastructures/{id}/requests/{request_id}"}
    ) == 5


def test_a_caller_giving_up_is_a_cancellation_not_an_unreachable_location() -> None:
    clock = Clock()
    http = NeverAnswers()
    driver = SimulatedDriver(clock, "http://vim.test:8090/prefix/", timeout=5, http=http)
    d = Deferred.fromCoroutine(driver.delete_infrastructure("a/b", LOCATION))
    assert http.requests == [("DELETE", "http://vim.test:8090/prefix/v1/infrastructures/a%2Fb")]
    d.cancel()
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.check(CancelledError)
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_names_the_host_but_never_credentials_in_the_url(harness: SimulatedHarness) -> None:
    url = simulator_url(harness.port).replace("http://", "http://user:hunter2@")
    driver = SimulatedDriver(reactor, url, timeout=10)
    await harness.unreachable()
    try:
        with pytest.raises(UnreachableDeploymentLocation) as raised:
            await driver.find_infrastructure(TEMPLATE, "simulated", "x", LOCATION)
    finally:
        await driver.close()
    assert "127.0.0.1" in str(raised.value) and "hunter2" not in str(raised.value) and "user" not in str(raised.value)


# -- metrics and configuration -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_call_is_recorded_under_the_vim_service_by_operation_and_outcome(harness: SimulatedHarness) -> None:
    accepted = await create(harness, TEMPLATE)
    await task(harness, accepted)
    with pytest.raises(InfrastructureNotFound):
        await harness.driver.delete_infrastructure("nope", harness.location)
    assert await harness.driver.find_infrastructure(TEMPLATE, "simulated", "nope", harness.location) is None
    assert harness.calls("POST infrastructures", "ok") == 1
    assert harness.calls("GET infrastructures/{id}/requests/{request_id}", "ok") == 1
    assert harness.calls("DELETE infrastructures/{id}", "error") == 1
    assert harness.calls("POST templates/validate", "ok") == 1
    assert harness.calls("GET infrastructures?name", "ok") == 1


@pytest_twisted.ensureDeferred
async def test_the_url_comes_from_configuration_never_from_the_deployment_location(harness: SimulatedHarness) -> None:
    location = {"name": "site-a", "type": "simulated", "properties": {"url": "http://127.0.0.1:1", "host": "evil.example"}}
    before = len(harness.sim.request_log)
    accepted = await harness.driver.create_infrastructure(TEMPLATE, "simulated", system_properties(new_name()), {}, location)
    assert accepted.infrastructure_id in harness.sim.infrastructures
    assert len(harness.sim.request_log) == before + 1


@pytest.mark.parametrize(
    "config, problems",
    [
        ({}, [f"{CONFIG_PATH}.url: required"]),
        ({"url": "ftp://vim.test"}, [f"{CONFIG_PATH}.url: must be an http:// or https:// URL"]),
        ({"url": "http://vim.test", "timeout": 0}, [f"{CONFIG_PATH}.timeout: must be a number above 0"]),
        ({"url": "http://vim.test", "urls": []}, [f"{CONFIG_PATH}.urls: unknown key"]),
        ({"timeout": "soon"}, [f"{CONFIG_PATH}.url: required", f"{CONFIG_PATH}.timeout: must be a number"]),
    ],
    ids=["missing", "scheme", "timeout", "unknown-key", "every-problem"],
)
def test_bad_configuration_is_refused_when_the_driver_is_made(tmp_path: Path, config: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(SimulatedDriverConfigError) as raised:
        make_driver(DriverContext(Clock(), config, tmp_path))
    assert isinstance(raised.value, ConfigError) and isinstance(raised.value, ValueError)
    assert len(raised.value.problems) == len(problems)
    for found, expected in zip(raised.value.problems, problems):
        assert found.startswith(expected)


def test_a_good_configuration_makes_a_driver_with_its_timeout(tmp_path: Path) -> None:
    driver = make_driver(DriverContext(Clock(), {"url": "https://vim.test:8443/base/", "timeout": 2.5}, tmp_path))
    assert isinstance(driver, SimulatedDriver) and driver.timeout == 2.5 and driver.url == "https://vim.test:8443/base/"
    assert make_driver(DriverContext(Clock(), {"url": "http://vim.test"}, tmp_path)).timeout == 30.0

"""
The infrastructure driver contract (Ignition's InfrastructureDriver, seed
003), as one test suite every driver runs.

A driver's behaviour is what the cluster's task monitor and the region's
Infrastructure API rely on, whatever the driver talks to: these cases pin
it down once, so that a fake and a real driver cannot drift apart.

How a driver plugs in
=====================

In the driver's test module, define a ``harness`` fixture that yields an
object with the `DriverHarness` shape, and a test class that inherits
`DriverContract`::

    import pytest_twisted
    from tests.infracontract import DriverContract, DriverHarness

    @pytest_twisted.async_yield_fixture
    async def harness() -> AsyncIterator[DriverHarness]:
        h = await MyHarness.start()        # a driver against its (simulated) backend
        try:
            yield h
        finally:
            await h.close()

    class TestMyDriver(DriverContract):
        pass

pytest collects the inherited ``test_*`` methods for ``TestMyDriver`` (this
module's `DriverContract` is not collected itself: its name does not start
with ``Test``).  The fixture must be function-scoped (a case may make the
location unreachable) and must not sleep on real time: `settle` advances
whatever clocks the backend runs on.

The harness:

- ``driver``: the `InfrastructureDriver` under test;
- ``location``: a reachable ``deploymentLocation`` ``{"name", "type",
  "properties"}`` to pass to every call;
- ``template(name)``: ``(template, template_type)`` whose create completes
  (with outputs, possibly empty) for infrastructure named `name`;
- ``invalid_template()``: ``(template, template_type)`` the driver rejects
  with InvalidInfrastructureTemplate, on create and on find;
- ``failing_template(name)``: ``(template, template_type, failure_code)``:
  the create is accepted, and its task ends FAILED with that code;
- ``settle()``: let every task in flight finish;
- ``unreachable()``: from now on the location cannot be reached.

Infrastructure is named through ``systemProperties.resourceName`` (with
``resourceId`` too), as Ignition sends it; `find_infrastructure` is asked for
that name.  Every case uses fresh names, so a harness may share one backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import pytest
import pytest_twisted

from clusterd.infrastructure.driver import (
    COMPLETE,
    FAILED,
    FAILURE_CODES,
    IN_PROGRESS,
    Accepted,
    Found,
    InfrastructureDriver,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InfrastructureTask,
    InvalidInfrastructureTemplate,
    UnreachableDeploymentLocation,
)

__all__ = ["DriverHarness", "DriverContract", "new_name", "system_properties", "UNKNOWN_ID"]

#: An id no backend has handed out (well formed, so drivers that check the form still look it up).
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


class DriverHarness(Protocol):
    driver: InfrastructureDriver
    #: A reachable deploymentLocation {"name", "type", "properties"}.
    location: dict[str, Any]

    def template(self, name: str) -> tuple[str, str]:
        """(template, templateType) that creates OK."""

    def invalid_template(self) -> tuple[str, str]:
        """Rejected: InvalidInfrastructureTemplate."""

    def failing_template(self, name: str) -> tuple[str, str, str]:
        """Creates, then the task ends FAILED with this code."""

    async def settle(self) -> None:
        """Let in-flight tasks finish (advance clocks)."""

    async def unreachable(self) -> None:
        """Make the location unreachable from now on."""


def new_name(prefix: str = "contract") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def system_properties(name: str) -> dict[str, Any]:
    """What Ignition's systemProperties carry for a resource named `name`."""
    return {
        "resourceId": str(uuid.uuid4()),
        "resourceName": name,
        "requestId": str(uuid.uuid4()),
        "resourceManagerId": "brent",
        "resourceType": "resource::contract::1.0",
    }


async def create(harness: DriverHarness, name: str, template: tuple[str, str] | None = None) -> Accepted:
    text, kind = template if template is not None else harness.template(name)
    return await harness.driver.create_infrastructure(text, kind, system_properties(name), {}, harness.location)


async def task(harness: DriverHarness, accepted: Accepted) -> InfrastructureTask:
    return await harness.driver.get_infrastructure_task(accepted.infrastructure_id, accepted.request_id, harness.location)


class DriverContract:
    """The cases; a driver's test module subclasses this as ``Test<Driver>`` with a ``harness`` fixture."""

    @pytest_twisted.ensureDeferred
    async def test_create_is_accepted_with_an_infrastructure_id_and_a_request_id(self, harness: DriverHarness) -> None:
        accepted = await create(harness, new_name())
        assert isinstance(accepted, Accepted)
        assert isinstance(accepted.infrastructure_id, str) and accepted.infrastructure_id
        assert isinstance(accepted.request_id, str) and accepted.request_id

    @pytest_twisted.ensureDeferred
    async def test_a_new_create_task_is_in_progress_or_complete_and_names_its_ids(self, harness: DriverHarness) -> None:
        accepted = await create(harness, new_name())
        first = await task(harness, accepted)
        assert first.status in (IN_PROGRESS, COMPLETE)
        assert (first.infrastructure_id, first.request_id) == (accepted.infrastructure_id, accepted.request_id)
        assert first.failure_details is None

    @pytest_twisted.ensureDeferred
    async def test_a_settled_create_is_complete_with_outputs(self, harness: DriverHarness) -> None:
        accepted = await create(harness, new_name())
        await harness.settle()
        done = await task(harness, accepted)
        assert done.status == COMPLETE and done.done
        assert isinstance(done.outputs, Mapping)
        assert done.failure_details is None
        event = done.to_event()
        assert event["status"] == COMPLETE and event["infrastructureId"] == accepted.infrastructure_id

    @pytest_twisted.ensureDeferred
    async def test_created_infrastructure_is_found_by_its_instance_name(self, harness: DriverHarness) -> None:
        name = new_name()
        accepted = await create(harness, name)
        await harness.settle()
        text, kind = harness.template(name)
        found = await harness.driver.find_infrastructure(text, kind, name, harness.location)
        assert isinstance(found, Found)
        assert found.infrastructure_id == accepted.infrastructure_id
        assert isinstance(found.outputs, Mapping)

    @pytest_twisted.ensureDeferred
    async def test_an_unknown_instance_name_is_not_found(self, harness: DriverHarness) -> None:
        name = new_name("never-created")
        text, kind = harness.template(name)
        assert await harness.driver.find_infrastructure(text, kind, name, harness.location) is None

    @pytest_twisted.ensureDeferred
    async def test_delete_starts_a_new_request_that_completes_and_the_infrastructure_is_gone(self, harness: DriverHarness) -> None:
        name = new_name()
        created = await create(harness, name)
        await harness.settle()
        deleting = await harness.driver.delete_infrastructure(created.infrastructure_id, harness.location)
        assert isinstance(deleting, Accepted)
        assert deleting.infrastructure_id == created.infrastructure_id
        assert deleting.request_id and deleting.request_id != created.request_id
        assert (await task(harness, deleting)).status in (IN_PROGRESS, COMPLETE)
        await harness.settle()
        done = await task(harness, deleting)
        assert done.status == COMPLETE and done.failure_details is None
        text, kind = harness.template(name)
        assert await harness.driver.find_infrastructure(text, kind, name, harness.location) is None

    @pytest_twisted.ensureDeferred
    async def test_the_task_of_unknown_infrastructure_is_infrastructure_not_found(self, harness: DriverHarness) -> None:
        with pytest.raises(InfrastructureNotFound):
            await harness.driver.get_infrastructure_task(UNKNOWN_ID, UNKNOWN_ID, harness.location)

    @pytest_twisted.ensureDeferred
    async def test_an_unknown_request_of_known_infrastructure_is_request_not_found(self, harness: DriverHarness) -> None:
        accepted = await create(harness, new_name())
        with pytest.raises(InfrastructureRequestNotFound):
            await harness.driver.get_infrastructure_task(accepted.infrastructure_id, UNKNOWN_ID, harness.location)

    @pytest_twisted.ensureDeferred
    async def test_deleting_unknown_infrastructure_is_infrastructure_not_found(self, harness: DriverHarness) -> None:
        with pytest.raises(InfrastructureNotFound):
            await harness.driver.delete_infrastructure(UNKNOWN_ID, harness.location)

    @pytest_twisted.ensureDeferred
    async def test_an_invalid_template_is_rejected_on_create_and_on_find(self, harness: DriverHarness) -> None:
        name = new_name()
        text, kind = harness.invalid_template()
        with pytest.raises(InvalidInfrastructureTemplate):
            await harness.driver.create_infrastructure(text, kind, system_properties(name), {}, harness.location)
        with pytest.raises(InvalidInfrastructureTemplate):
            await harness.driver.find_infrastructure(text, kind, name, harness.location)

    @pytest_twisted.ensureDeferred
    async def test_a_failing_template_ends_failed_with_its_failure_code(self, harness: DriverHarness) -> None:
        name = new_name()
        text, kind, code = harness.failing_template(name)
        assert code in FAILURE_CODES
        accepted = await create(harness, name, (text, kind))
        await harness.settle()
        done = await task(harness, accepted)
        assert done.status == FAILED and done.done
        assert done.failure_details is not None and done.failure_details.failure_code == code
        assert done.to_event()["failureDetails"]["failureCode"] == code

    @pytest_twisted.ensureDeferred
    async def test_an_unreachable_location_is_unreachable_for_every_call(self, harness: DriverHarness) -> None:
        name = new_name()
        accepted = await create(harness, name)
        await harness.unreachable()
        text, kind = harness.template(name)
        with pytest.raises(UnreachableDeploymentLocation):
            await harness.driver.create_infrastructure(text, kind, system_properties(new_name()), {}, harness.location)
        with pytest.raises(UnreachableDeploymentLocation):
            await task(harness, accepted)
        with pytest.raises(UnreachableDeploymentLocation):
            await harness.driver.delete_infrastructure(accepted.infrastructure_id, harness.location)
        with pytest.raises(UnreachableDeploymentLocation):
            await harness.driver.find_infrastructure(text, kind, name, harness.location)

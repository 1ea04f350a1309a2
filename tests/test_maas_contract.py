"""
One contract, two implementations: `FakeMAASClient` (in memory) and
`MAASClient` talking HTTP to the simulator must behave the same.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from clusterd.maas import IMAASClient, MAASConflict, MAASNotFound, MAASValidationError
from simulators.maas import FakeMAASClient, MAASSimulator, Status
from tests.maashelpers import API_KEY, DURATIONS, owned_off, pick, serve


@attrs.define
class Subject:
    client: Any
    sim: MAASSimulator
    clock: Clock


@pytest_twisted.async_yield_fixture(params=["fake", "http"])
async def subject(request: Any) -> AsyncIterator[Subject]:
    if request.param == "fake":
        clock = Clock()
        sim = MAASSimulator.create(clock, machines=40, seed=7, api_key=API_KEY, durations=attrs.evolve(DURATIONS))
        yield Subject(FakeMAASClient(sim), sim, clock)
        return
    site = await serve()
    try:
        yield Subject(site.client(), site.sim, site.clock)
    finally:
        await site.close()


@pytest_twisted.ensureDeferred
async def test_it_provides_the_interface_and_reads_maas(subject: Subject) -> None:
    client = subject.client
    assert verifyObject(IMAASClient, client)
    assert "authenticate-api" in (await client.version())["capabilities"]
    assert (await client.whoami())["username"] == "admin"
    assert [s["cidr"] for s in await client.subnets()] == ["10.0.0.0/16", "10.1.0.0/16"]
    assert len(await client.fabrics()) == 2 and len(await client.spaces()) == 2
    assert [v["vid"] for v in await client.vlans(0)] == [0]
    assert {z["name"] for z in await client.zones()} == {"default", "az1", "az2", "az3"}
    assert {p["name"] for p in await client.resource_pools()} == {"default", "compute", "storage"}
    with pytest.raises(MAASNotFound):
        await client.vlans(42)


@pytest_twisted.ensureDeferred
async def test_listing_filters_alike(subject: Subject) -> None:
    client, sim = subject.client, subject.sim
    ready = await client.list_machines(status="ready")
    assert [m["system_id"] for m in ready] == [m.system_id for m in sim.find(status=Status.READY)]
    both = await client.list_machines(status=["ready", "broken"], zone=["az1", "default"])
    expected = [m.system_id for m in sim.machines.values() if m.status in (Status.READY, Status.BROKEN) and m.zone in ("az1", "default")]
    assert [m["system_id"] for m in both] == expected
    assert await client.list_machines(hostname="no-such-host") == []
    with pytest.raises(MAASValidationError):
        await client.list_machines(status="asleep")
    with pytest.raises(TypeError):
        await client.list_machines(status=[4])  # type: ignore[list-item]


@pytest_twisted.ensureDeferred
async def test_machine_lifecycle_alike(subject: Subject) -> None:
    client, sim, clock = subject.client, subject.sim, subject.clock
    with pytest.raises(MAASNotFound):
        await client.get_machine("nosuch")
    system_id = pick(sim, Status.READY)
    with pytest.raises(MAASConflict):
        await client.power_on(system_id)
    with pytest.raises(MAASValidationError) as bad:
        await client.deploy(system_id, distro_series="bogus")
    assert list(bad.value.fields) == ["distro_series"]
    deployed = await client.deploy(system_id, user_data=b"#!/bin/sh\n", hostname="contract-1")
    assert (deployed["status"], deployed["owner"], deployed["hostname"]) == (Status.DEPLOYING, "admin", "contract-1")
    assert sim.get(system_id).user_data == b"#!/bin/sh\n"
    with pytest.raises(MAASConflict):
        await client.deploy(system_id)
    clock.advance(60)
    assert (await client.get_machine(system_id))["status_name"] == "Deployed"
    assert (await client.release(system_id))["status_name"] == "Releasing"
    assert (await client.release(system_id))["status_name"] == "Releasing"  # idempotent
    clock.advance(5)
    assert (await client.get_machine(system_id))["status_name"] == "Ready"
    new = pick(sim, Status.NEW)
    assert (await client.commission(new, testing_scripts="none"))["status_name"] == "Commissioning"


@pytest_twisted.ensureDeferred
async def test_power_alike(subject: Subject) -> None:
    client, sim, clock = subject.client, subject.sim, subject.clock
    system_id = owned_off(sim)
    assert (await client.power_on(system_id))["system_id"] == system_id
    assert await client.query_power_state(system_id) == "off"
    clock.advance(3)
    assert await client.query_power_state(system_id) == "on"
    await client.power_off(system_id)
    clock.advance(3)
    assert await client.query_power_state(system_id) == "off"
    sim.fail_bmc(system_id)
    assert await client.query_power_state(system_id) == "error"
    manual = pick(sim, Status.ALLOCATED, power_type="manual")
    assert await client.query_power_state(manual) == "unknown"
    assert (await client.power_off(manual))["system_id"] == manual

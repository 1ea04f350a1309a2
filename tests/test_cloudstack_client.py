"""CloudStackClient against the CloudStack simulator over real loopback: every operation, every error, retries."""

from __future__ import annotations

import socket
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from clusterd.cloudstack import (
    CloudStackAuthError,
    CloudStackCapacityError,
    CloudStackClient,
    CloudStackError,
    CloudStackInternalError,
    CloudStackJobFailed,
    CloudStackJobTimeout,
    CloudStackNotFound,
    CloudStackParameterError,
    CloudStackResourceInUse,
    CloudStackUnavailable,
    ICloudStackClient,
    RetryPolicy,
)
from simulators.cloudstack import GIB, Limits
from tests.cloudstackhelpers import API_KEY, SECRET_KEY, CloudStackSite, serving

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

NO_SUCH = "00000000-0000-4000-8000-000000000000"


@pytest_twisted.async_yield_fixture
async def cs_site() -> AsyncIterator[CloudStackSite]:
    async with serving() as site:
        yield site


async def new_volume(site: CloudStackSite, client: CloudStackClient, name: str = "migration-1-disk-0", size_gb: int = 10, **kw: Any) -> dict[str, Any]:
    return await client.create_volume(name, site.sim.zone.id, site.sim.offering("Custom").id, size_gb=size_gb, **kw)


def test_the_keys_never_appear_in_the_clients_repr() -> None:
    client = CloudStackClient(reactor, "http://cs.test/client/api", API_KEY, SECRET_KEY, http=object())
    assert API_KEY not in repr(client) and SECRET_KEY not in repr(client)
    assert verifyObject(ICloudStackClient, client)


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError):
        CloudStackClient(reactor, "ftp://cs.test/client/api", API_KEY, SECRET_KEY, http=object())


@pytest_twisted.ensureDeferred
async def test_zones_vms_and_offerings_are_listed_and_read(cs_site: CloudStackSite) -> None:
    client = cs_site.client()
    zones = await client.list_zones()
    assert [z["name"] for z in zones] == ["OSSEA-Zone"]
    assert (await client.get_zone(zones[0]["id"]))["id"] == zones[0]["id"]
    vms = await client.list_virtual_machines()
    assert [vm["name"] for vm in vms] == ["oma-appliance"]
    assert (await client.list_virtual_machines(id=vms[0]["id"]))[0]["state"] == "Running"
    offerings = {o["name"]: o for o in await client.list_disk_offerings()}
    assert offerings["Custom"]["iscustomized"] is True and offerings["Small"]["disksize"] == 5
    assert (await client.list_capabilities())["cloudstackversion"]


@pytest_twisted.ensureDeferred
async def test_unknown_ids_raise_not_found_which_is_a_parameter_error(cs_site: CloudStackSite) -> None:
    client = cs_site.client()
    with pytest.raises(CloudStackNotFound) as info:
        await client.get_zone(NO_SUCH)
    assert info.value.status == 431 and "entity does not exist" in info.value.errortext
    assert isinstance(info.value, CloudStackParameterError)
    with pytest.raises(CloudStackNotFound):
        await client.attach_volume(NO_SUCH, cs_site.sim.appliance.id)
    with pytest.raises(CloudStackNotFound):
        await client.delete_volume(NO_SUCH)
    with pytest.raises(CloudStackNotFound):
        await client.list_virtual_machines(id=NO_SUCH)


@pytest_twisted.ensureDeferred
async def test_a_volume_goes_through_create_attach_detach_delete(cs_site: CloudStackSite) -> None:
    client, sim = cs_site.client(), cs_site.sim
    attached: list[tuple[str, str, int]] = []
    detached: list[tuple[str, str]] = []
    sim.on_attach.append(lambda volume, vm, device: attached.append((volume["id"], vm["id"], device)))
    sim.on_detach.append(lambda volume, vm: detached.append((volume["id"], vm["id"])))

    volume = await new_volume(cs_site, client, tags={"job": "42", "disk": "0"})
    assert volume["state"] == "Allocated" and volume["size"] == 10 * GIB and volume["type"] == "DATADISK"
    assert "deviceid" not in volume and "virtualmachineid" not in volume
    assert {(t["key"], t["value"]) for t in volume["tags"]} == {("job", "42"), ("disk", "0")}

    volume = await client.attach_volume(volume["id"], sim.appliance.id)
    assert volume["state"] == "Ready" and volume["deviceid"] == 1 and volume["virtualmachineid"] == sim.appliance.id
    assert attached == [(volume["id"], sim.appliance.id, 1)]

    with pytest.raises(CloudStackResourceInUse) as info:
        await client.delete_volume(volume["id"])
    assert info.value.status == 536

    volume = await client.detach_volume(volume["id"])
    assert volume["state"] == "Ready" and "deviceid" not in volume and "virtualmachineid" not in volume
    assert detached == [(volume["id"], sim.appliance.id)]

    await client.delete_volume(volume["id"])
    with pytest.raises(CloudStackNotFound):
        await client.get_volume(volume["id"])
    assert await client.list_tags(resourceid=volume["id"]) == []


@pytest_twisted.ensureDeferred
async def test_attach_without_deviceid_takes_the_next_free_device_skipping_the_cdrom(cs_site: CloudStackSite) -> None:
    client, vm = cs_site.client(), cs_site.sim.appliance.id
    devices = []
    for n in range(4):
        volume = await new_volume(cs_site, client, f"d{n}", size_gb=1)
        devices.append((await client.attach_volume(volume["id"], vm))["deviceid"])
    assert devices == [1, 2, 4, 5]
    spare = await new_volume(cs_site, client, "spare", size_gb=1)
    assert (await client.attach_volume(spare["id"], vm, device_id=9))["deviceid"] == 9


@pytest_twisted.ensureDeferred
async def test_a_failing_job_raises_job_failed_with_cloudstacks_code_and_text(cs_site: CloudStackSite) -> None:
    client = cs_site.client()
    volume = await new_volume(cs_site, client)
    await client.attach_volume(volume["id"], cs_site.sim.appliance.id)
    with pytest.raises(CloudStackJobFailed) as info:
        await client.attach_volume(volume["id"], cs_site.sim.appliance.id)
    assert info.value.jobresultcode == 431 and "already attached" in info.value.errortext
    cs_site.sim.set_faults(fail_jobs=["detachVolume"])
    with pytest.raises(CloudStackJobFailed) as info:
        await client.detach_volume(volume["id"])
    assert info.value.jobresultcode == 530 and info.value.command == "detachVolume"
    assert (await client.get_volume(volume["id"]))["deviceid"] == 1  # the failed job changed nothing


@pytest_twisted.ensureDeferred
async def test_a_stuck_job_raises_job_timeout_after_job_timeout(cs_site: CloudStackSite) -> None:
    client = cs_site.client(job_timeout=0.2)
    cs_site.sim.set_faults(stuck_jobs=["createVolume"])
    with pytest.raises(CloudStackJobTimeout) as info:
        await new_volume(cs_site, client)
    assert info.value.command == "createVolume" and info.value.jobid in cs_site.sim.jobs


@pytest_twisted.ensureDeferred
async def test_list_volumes_filters_by_tags_name_vm_and_type(cs_site: CloudStackSite) -> None:
    client, sim = cs_site.client(), cs_site.sim
    a = await new_volume(cs_site, client, "a", tags={"job": "1"})
    b = await new_volume(cs_site, client, "b", tags={"job": "2"})
    await client.attach_volume(b["id"], sim.appliance.id)
    assert [v["id"] for v in await client.list_volumes(tags={"job": "1"})] == [a["id"]]
    assert [v["id"] for v in await client.list_volumes(name="b")] == [b["id"]]
    on_vm = await client.list_volumes(virtualmachineid=sim.appliance.id)
    assert {v["type"] for v in on_vm} == {"ROOT", "DATADISK"} and b["id"] in {v["id"] for v in on_vm}
    assert await client.list_volumes(tags={"job": "nope"}) == []
    await client.delete_tags([a["id"]], "Volume", {"job": None})
    assert (await client.get_volume(a["id"]))["tags"] == []
    await client.create_tags([a["id"]], "Volume", {"owner": "outpost"})
    assert [t["key"] for t in await client.list_tags(resourceid=a["id"])] == ["owner"]


@pytest_twisted.ensureDeferred
async def test_lists_are_fetched_page_by_page_until_a_short_page(cs_site: CloudStackSite) -> None:
    for n in range(5):
        cs_site.sim.handle("createVolume", {"zoneid": cs_site.sim.zone.id, "diskofferingid": cs_site.sim.offering("Small").id, "name": f"p{n}"})
    client = cs_site.client(page_size=2)
    volumes = await client.list_volumes(type="DATADISK")
    assert sorted(v["name"] for v in volumes) == [f"p{n}" for n in range(5)]
    assert cs_site.commands("listVolumes") == 3


@pytest_twisted.ensureDeferred
async def test_parameter_and_capacity_errors_are_typed(cs_site: CloudStackSite) -> None:
    client, sim = cs_site.client(), cs_site.sim
    with pytest.raises(CloudStackParameterError) as info:
        await client.create_volume("x", sim.zone.id, sim.offering("Custom").id)
    assert not isinstance(info.value, CloudStackNotFound) and "custom size" in info.value.message
    sim.limits = Limits(capacity_gb=15)
    await new_volume(cs_site, client, "fits", size_gb=10)
    with pytest.raises(CloudStackCapacityError) as info:
        await new_volume(cs_site, client, "too-big", size_gb=10)
    assert info.value.status == 533
    sim.limits = Limits(max_volumes=1)
    with pytest.raises(CloudStackCapacityError) as info:
        await new_volume(cs_site, client, "one-too-many", size_gb=1)
    assert info.value.status == 532


@pytest_twisted.ensureDeferred
async def test_a_wrong_secret_or_an_expired_request_is_an_auth_error(cs_site: CloudStackSite) -> None:
    with pytest.raises(CloudStackAuthError) as info:
        await cs_site.client(secret_key="wrong").list_zones()
    assert info.value.status == 401 and SECRET_KEY not in info.value.message
    late = cs_site.client(wall_clock=lambda: 1_000_000_000.0)
    with pytest.raises(CloudStackAuthError):
        await late.list_zones()


@pytest_twisted.ensureDeferred
async def test_idempotent_calls_are_retried_on_5xx_and_dropped_connections(cs_site: CloudStackSite) -> None:
    client = cs_site.client()
    cs_site.sim.set_faults(script=["error", "drop"])
    assert len(await client.list_zones()) == 1
    assert cs_site.commands("listZones") == 3
    cs_site.sim.set_faults(script=["error", "error", "error"])
    with pytest.raises(CloudStackUnavailable) as info:
        await client.list_zones()
    assert info.value.status == 503


@pytest_twisted.ensureDeferred
async def test_a_cloudstack_internal_error_is_not_retried(cs_site: CloudStackSite) -> None:
    client = cs_site.client()
    cs_site.sim.set_faults(script=["error"], error_status=530)
    with pytest.raises(CloudStackInternalError) as info:
        await client.list_zones()
    assert info.value.status == 530 and cs_site.commands("listZones") == 1


@pytest_twisted.ensureDeferred
async def test_create_and_attach_are_never_sent_twice_when_the_outcome_is_unknown(cs_site: CloudStackSite) -> None:
    client, sim = cs_site.client(), cs_site.sim
    sim.set_faults(script=["error"])
    with pytest.raises(CloudStackUnavailable):
        await new_volume(cs_site, client, "a")
    sim.set_faults(script=["lose_response"])
    with pytest.raises(CloudStackUnavailable):
        await new_volume(cs_site, client, "b")
    assert cs_site.commands("createVolume") == 2
    assert [v.name for v in sim.data_volumes()] == ["b"]  # CloudStack acted although the answer was lost
    volume = await new_volume(cs_site, client, "c")
    sim.set_faults(script=["drop"])
    with pytest.raises(CloudStackUnavailable):
        await client.attach_volume(volume["id"], sim.appliance.id)
    assert cs_site.commands("attachVolume") == 1


@pytest_twisted.ensureDeferred
async def test_polling_survives_a_failed_poll(cs_site: CloudStackSite) -> None:
    client = cs_site.client(retry=RetryPolicy(attempts=1))
    volume = await new_volume(cs_site, client)
    cs_site.sim.set_faults(script=["ok", "error"])  # attachVolume goes through, the first poll fails
    volume = await client.attach_volume(volume["id"], cs_site.sim.appliance.id)
    assert volume["deviceid"] == 1


@pytest_twisted.ensureDeferred
async def test_nothing_listening_is_unavailable_after_the_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = CloudStackSite(None, None, f"http://127.0.0.1:{port}/client/api")  # type: ignore[arg-type]
    client = site.client()
    try:
        with pytest.raises(CloudStackUnavailable):
            await client.list_zones()
        with pytest.raises(CloudStackUnavailable):
            await client.delete_volume(NO_SUCH)
    finally:
        await client.close()


def test_every_error_is_a_cloudstack_error() -> None:
    for cls in (CloudStackAuthError, CloudStackNotFound, CloudStackCapacityError, CloudStackResourceInUse,
                CloudStackInternalError, CloudStackUnavailable, CloudStackJobFailed, CloudStackJobTimeout):
        assert issubclass(cls, CloudStackError)

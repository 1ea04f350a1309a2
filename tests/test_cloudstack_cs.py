"""
The `cs` package (the reference CloudStack client) works against the simulator.

`cs` is synchronous (requests), so it runs in a thread (deferToThread)
against a simulator served by this test's reactor, and the test can look at
what the simulator saw.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cloudstackhelpers import API_KEY, SECRET_KEY, CloudStackSite, serving

cs = pytest.importorskip("cs", reason="the cs package is not installed (pip install cs)")


@pytest_twisted.async_yield_fixture
async def cs_site() -> AsyncIterator[CloudStackSite]:
    async with serving() as site:
        yield site


def lifecycle(url: str, method: str) -> dict[str, Any]:
    api = cs.CloudStack(endpoint=url, key=API_KEY, secret=SECRET_KEY, method=method, poll_interval=0.02, job_timeout=10, fetch_result=True)
    out: dict[str, Any] = {}
    zone = api.listZones(name="OSSEA-Zone")["zone"][0]
    vm = api.listVirtualMachines(name="oma-appliance", listall=True)["virtualmachine"][0]
    offering = api.listDiskOfferings(name="Custom")["diskoffering"][0]
    volume = api.createVolume(name="migration-9-disk-0", zoneid=zone["id"], diskofferingid=offering["id"], size=4)["volume"]
    out["created"] = (volume["state"], volume["size"])
    api.createTags(resourceids=[volume["id"]], resourcetype="Volume", tags={"key": "job", "value": "9"})
    out["tagged"] = [v["id"] for v in api.listVolumes(tags={"key": "job", "value": "9"}, fetch_list=True)] == [volume["id"]]
    attached = api.attachVolume(id=volume["id"], virtualmachineid=vm["id"])["volume"]
    out["attached"] = (attached["state"], attached["deviceid"], attached["virtualmachineid"] == vm["id"])
    try:
        api.deleteVolume(id=volume["id"])
    except cs.CloudStackApiException as e:
        out["delete_attached"] = (e.response.status_code, e.error["errorcode"])
    detached = api.detachVolume(id=volume["id"])["volume"]
    out["detached"] = "deviceid" in detached or "virtualmachineid" in detached
    out["deleted"] = api.deleteVolume(id=volume["id"])
    out["left"] = api.listVolumes(type="DATADISK", fetch_list=True)
    bad = cs.CloudStack(endpoint=url, key=API_KEY, secret="wrong")
    try:
        bad.listZones()
    except cs.CloudStackApiException as e:
        out["bad_secret"] = e.response.status_code
    return out


@pytest.mark.parametrize("method", ["get", "post"])
@pytest_twisted.ensureDeferred
async def test_the_cs_package_runs_a_volume_lifecycle_against_the_simulator(cs_site: CloudStackSite, method: str) -> None:
    out = await deferToThread(lifecycle, cs_site.url, method)
    assert out["created"] == ("Allocated", 4 * 1024**3)
    assert out["tagged"] is True
    assert out["attached"] == ("Ready", 1, True)
    assert out["delete_attached"] == (536, 536)
    assert out["detached"] is False
    assert out["deleted"] == {"success": True}
    assert out["left"] == []
    assert out["bad_secret"] == 401
    assert cs_site.commands("queryAsyncJobResult") >= 4

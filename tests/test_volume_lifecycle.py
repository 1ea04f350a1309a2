"""
A migration job's volumes through the lifecycle, against the CloudStack
simulator and the simulated mounter wired by their attach hooks: the happy
path both ways, idempotent re-runs, and a failure injected at every step
with the undo proven.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from clusterd.cloudstack.client import CloudStackClient
from clusterd.cloudstack.retry import PollPolicy
from clusterd.site import plug_devices
from clusterd.volumes import SimulatedMounter
from clusterd.volumes.lifecycle import INFRASTRUCTURE_JOB_PREFIX, TAG_JOB, Settings, VolumeLifecycle
from simulators.cloudstack import Limits, simulator_url, start_cloudstack_simulator, stop_cloudstack_simulator

KEY, SECRET = "lifecycle-api-key", "lifecycle-secret-key"
DISKS = [{"name": f"disk-{i}", "size_gb": 5 + i} for i in range(4)]


class Recorder:
    def __init__(self) -> None:
        self.states: list[tuple[str, str, str, dict[str, Any]]] = []

    async def __call__(self, job: str, disk: str, state: str, details: dict[str, Any]) -> None:
        self.states.append((job, disk, state, details))

    def last(self, disk: str) -> str:
        return [s for _, d, s, _ in self.states if d == disk][-1]


@pytest_twisted.async_yield_fixture
async def site():
    port, sim = await start_cloudstack_simulator(reactor, api_key=KEY, secret_key=SECRET, job_duration=0.01, limits=Limits())
    client = CloudStackClient(reactor, simulator_url(port), KEY, SECRET, poll=PollPolicy(initial=0.02, factor=1.5, cap=0.1))
    mounter = SimulatedMounter(reactor)
    plug_devices(sim, mounter)
    zone = (await client.list_zones())[0]["id"]
    offering = next(o["id"] for o in await client.list_disk_offerings() if o.get("iscustomized"))
    report = Recorder()
    lifecycle = VolumeLifecycle(client, mounter, Settings(zone, sim.appliance.id, offering, "/mnt/migration"), report, device_timeout=2.0)
    yield lifecycle, sim, mounter, report
    await client.close()
    await stop_cloudstack_simulator(port, sim)


async def job_volumes(lifecycle: VolumeLifecycle, job: str) -> list[dict[str, Any]]:
    return await lifecycle.volumes_of(job)


@pytest_twisted.ensureDeferred
async def test_prepare_mounts_every_disk_and_cleanup_takes_it_all_away(site) -> None:
    lifecycle, sim, mounter, report = site
    result = await lifecycle.prepare("job-1", DISKS)
    assert result == {"outcome": "ok", "undone": [], "error": ""}
    volumes = await job_volumes(lifecycle, "job-1")
    assert sorted(v["name"] for v in volumes) == [f"migration-job-1-disk-{i}" for i in range(4)]
    assert all(v["virtualmachineid"] == sim.appliance.id and v["state"] == "Ready" for v in volumes)
    for disk in DISKS:
        assert await mounter.is_mounted(f"/mnt/migration/job-1/{disk['name']}")
        assert report.last(disk["name"]) == "Mounted"
    # Sizes are what was asked.
    assert sorted(v["size"] for v in volumes) == [d["size_gb"] * 1024**3 for d in DISKS]

    result = await lifecycle.cleanup("job-1", delete=True)
    assert result["outcome"] == "ok", result
    assert await job_volumes(lifecycle, "job-1") == []
    assert mounter.device_names == frozenset()
    for disk in DISKS:
        assert not await mounter.is_mounted(f"/mnt/migration/job-1/{disk['name']}")
        assert report.last(disk["name"]) == "Deleted"


@pytest_twisted.ensureDeferred
async def test_cleanup_can_keep_the_volumes_detached(site) -> None:
    lifecycle, sim, mounter, report = site
    await lifecycle.prepare("job-2", DISKS[:2])
    assert (await lifecycle.cleanup("job-2", delete=False))["outcome"] == "ok"
    volumes = await job_volumes(lifecycle, "job-2")
    assert len(volumes) == 2 and not any(v.get("virtualmachineid") for v in volumes)
    assert report.last("disk-0") == "Detached"


@pytest_twisted.ensureDeferred
async def test_running_prepare_again_changes_nothing(site) -> None:
    lifecycle, sim, mounter, report = site
    await lifecycle.prepare("job-3", DISKS[:2])
    before = sorted(v["id"] for v in await job_volumes(lifecycle, "job-3"))
    again = await lifecycle.prepare("job-3", DISKS[:2])
    assert again["outcome"] == "ok"
    assert sorted(v["id"] for v in await job_volumes(lifecycle, "job-3")) == before
    assert len(mounter.device_names) == 2


@pytest.mark.parametrize("fault", ["create", "attach", "mount"])
@pytest_twisted.ensureDeferred
async def test_a_failure_at_any_step_undoes_every_completed_step(site, fault: str) -> None:
    lifecycle, sim, mounter, report = site
    if fault == "create":
        sim.limits = Limits(max_volumes=len(sim.data_volumes()) + 3)  # the fourth disk finds no room
    elif fault == "attach":
        sim.set_faults(fail_jobs=["attachVolume"])
    else:
        mounter.fail_next("mount")
    result = await lifecycle.prepare("job-4", DISKS)
    assert result["outcome"] == "failed" and result["error"]
    # Everything done was undone, newest first: nothing of the job is left anywhere.
    assert result["undone"] and all("error" not in step for step in result["undone"])
    steps = [s["step"] for s in result["undone"]]
    assert steps.index("create") > max((i for i, s in enumerate(steps) if s != "create"), default=-1)
    assert await job_volumes(lifecycle, "job-4") == []
    assert mounter.device_names == frozenset()
    for disk in DISKS:
        assert not await mounter.is_mounted(f"/mnt/migration/job-4/{disk['name']}")
        assert report.last(disk["name"]) == "Failed"


@pytest_twisted.ensureDeferred
async def test_reconcile_finds_and_cleans_volumes_of_untracked_jobs(site) -> None:
    lifecycle, sim, mounter, report = site
    await lifecycle.prepare("kept", DISKS[:1])
    await lifecycle.prepare("lost", DISKS[:2])
    # An infrastructure driver's volumes are the cluster's own, never the region's orphans.
    await lifecycle.prepare(INFRASTRUCTURE_JOB_PREFIX + "cafe", DISKS[:1])
    found = await lifecycle.reconcile(["kept"], clean=False)
    assert sorted(o["job_id"] for o in found["orphans"]) == ["lost", "lost"] and found["cleaned"] == []
    cleaned = await lifecycle.reconcile(["kept"], clean=True)
    assert len(cleaned["cleaned"]) == 2
    assert await job_volumes(lifecycle, "lost") == []
    assert len(await job_volumes(lifecycle, "kept")) == 1
    assert len(await job_volumes(lifecycle, INFRASTRUCTURE_JOB_PREFIX + "cafe")) == 1
    assert all(any(t["key"] == TAG_JOB for t in v.get("tags", [])) for v in await job_volumes(lifecycle, "kept"))


@pytest_twisted.ensureDeferred
async def test_the_connection_test_reports_each_check(site) -> None:
    lifecycle, sim, mounter, report = site
    ok = await lifecycle.test_connection()
    assert ok["ok"] and [c["name"] for c in ok["checks"]] == ["credentials", "zone", "appliance_vm"]
    wrong = VolumeLifecycle(lifecycle.client, mounter, Settings(lifecycle.settings.zone_id, "00000000-0000-4000-8000-000000000000"), report)

    answer = await wrong.test_connection()
    assert not answer["ok"] and {c["name"]: c["ok"] for c in answer["checks"]} == {"credentials": True, "zone": True, "appliance_vm": False}

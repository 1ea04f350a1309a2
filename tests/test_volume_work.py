"""The cluster's volume work: configuration from the region, and what it does at start with half-done jobs and orphans."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed

from clusterd.cloudstack.client import CloudStackClient
from clusterd.cloudstack.retry import PollPolicy
from clusterd.site import plug_devices
from clusterd.volumes import SimulatedMounter
from clusterd.volumes.work import VolumeWork
from rpc import errors as rpc_errors
from rpc.region import GetTrackedVolumeJobs, ReportEvent, ReportVolumeJob
from simulators.cloudstack import simulator_url, start_cloudstack_simulator, stop_cloudstack_simulator
from tests.regionstack import eventually

KEY, SECRET = "work-api-key-0123456789", "work-secret-key-0123456789"


class Region:
    """A region stand-in: answers GetTrackedVolumeJobs from a script, records reports."""

    def __init__(self, tracked: list[str], busy: dict[str, str]) -> None:
        self.tracked, self.busy = tracked, busy
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, command: Any, timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        self.calls.append((command, kwargs))
        if command is GetTrackedVolumeJobs:
            return succeed({"job_ids": self.tracked, "busy": self.busy})
        return succeed({})

    def sent(self, command: Any) -> list[dict[str, Any]]:
        return [kw for c, kw in self.calls if c is command]


@pytest_twisted.async_yield_fixture
async def site():
    port, sim = await start_cloudstack_simulator(reactor, api_key=KEY, secret_key=SECRET, job_duration=0.01)
    mounter = SimulatedMounter(reactor)
    plug_devices(sim, mounter)
    config = {"name": "cs", "api_url": simulator_url(port), "api_key": KEY, "secret_key": SECRET, "zone": "OSSEA-Zone",
              "disk_offering": "", "oma_vm_id": sim.appliance.id, "revision": 1}
    fast = lambda c: CloudStackClient(reactor, c["api_url"], c["api_key"], c["secret_key"], poll=PollPolicy(initial=0.02, cap=0.1))  # noqa: E731
    yield sim, mounter, config, fast
    await stop_cloudstack_simulator(port, sim)


def work_for(mounter: Any, region: Region, fast: Any, orphans: str = "report") -> VolumeWork:
    return VolumeWork(reactor, mounter, region=lambda: region, client_factory=fast, orphans=orphans)


@pytest_twisted.ensureDeferred
async def test_without_configuration_every_command_says_not_configured(site) -> None:
    sim, mounter, config, fast = site
    work = work_for(mounter, Region([], {}), fast)
    with pytest.raises(rpc_errors.IntegrationNotConfigured):
        work.prepare("job-1", [{"name": "d", "size_gb": 1}])
    with pytest.raises(rpc_errors.InvalidArgument):
        work.prepare("bad id", [{"name": "d", "size_gb": 1}])


@pytest_twisted.ensureDeferred
async def test_a_job_half_done_by_a_previous_run_is_ended_and_its_volumes_removed(site) -> None:
    sim, mounter, config, fast = site
    # A first run prepares, then "dies" (its work object is simply dropped).
    first = work_for(mounter, Region(["job-1"], {}), fast)
    await first.configure(config)
    first.prepare("job-1", [{"name": "d0", "size_gb": 1}, {"name": "d1", "size_gb": 2}])
    await eventually(lambda: _done(first, "job-1"))
    assert len(sim.data_volumes()) == 2
    # The restarted cluster learns the region still thinks job-1 is being prepared.
    region = Region(["job-1"], {"job-1": "prepare"})
    second = work_for(mounter, region, fast)
    await second.configure(config)

    async def ended() -> bool:
        return bool(region.sent(ReportVolumeJob))

    await eventually(ended, timeout=10)
    [report] = region.sent(ReportVolumeJob)
    assert report["job_id"] == "job-1" and report["outcome"] == "failed" and "interrupted" in report["error"]
    assert sim.data_volumes() == []
    assert mounter.device_names == frozenset()


async def _done(work: VolumeWork, job: str) -> bool:
    return job not in work.running


@pytest_twisted.ensureDeferred
async def test_orphans_found_at_start_are_reported_or_cleaned_by_policy(site) -> None:
    sim, mounter, config, fast = site
    first = work_for(mounter, Region([], {}), fast)
    await first.configure(config)
    first.prepare("gone-job", [{"name": "d0", "size_gb": 1}])
    await eventually(lambda: _done(first, "gone-job"))
    reporter = Region([], {})
    await work_for(mounter, reporter, fast).configure(config)
    await eventually(lambda: _sent(reporter, ReportEvent), timeout=10)
    event = reporter.sent(ReportEvent)[0]
    assert event["type"] == "volumes.orphans" and event["outcome"] == "found"
    assert [o["job_id"] for o in event["data"]["orphans"]] == ["gone-job"]
    assert len(sim.data_volumes()) == 1
    cleaner = Region([], {})
    await work_for(mounter, cleaner, fast, orphans="clean").configure(config)
    await eventually(lambda: _sent(cleaner, ReportEvent), timeout=10)
    assert cleaner.sent(ReportEvent)[0]["outcome"] == "cleaned"
    assert sim.data_volumes() == []


async def _sent(region: Region, command: Any) -> bool:
    return bool(region.sent(command))

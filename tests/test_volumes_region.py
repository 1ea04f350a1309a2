"""The region's volume side: CloudStack configuration (write-only secrets, pushed to the cluster) and volume jobs."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import pytest_twisted
from twisted.protocols import amp

from rpc import cluster as commands
from rpc.region import GetTrackedVolumeJobs, ReportVolumeJob, ReportVolumeState
from tests.regionstack import RegionStack, eventually, region_stack  # noqa: F401

C1 = "dddddddd-0000-4000-8000-000000000001"
SECRET_KEY = "very-secret-key-0123456789"
API_KEY = "api-key-abcdefghijklmnop"


def config(**overrides: Any) -> dict[str, Any]:
    return {"name": "site-cs", "api_url": "http://cs.example:8080/client/api", "api_key": API_KEY, "secret_key": SECRET_KEY,
            "zone": "zone-1", "oma_vm_id": "f47ac10b-58cc-4372-a567-0e02b2c3d479", **overrides}


class VolumeSite(amp.CommandLocator):
    def __init__(self) -> None:
        self.configurations: list[Any] = []
        self.prepared: list[tuple[str, Any]] = []
        self.cleaned: list[tuple[str, bool]] = []
        self.reconciled: list[Any] = []

    @commands.ConfigureCloudStack.responder
    def configure(self, configuration: Any) -> dict[str, Any]:
        self.configurations.append(configuration)
        return {}

    @commands.PrepareVolumes.responder
    def prepare(self, job_id: str, disks: Any) -> dict[str, Any]:
        self.prepared.append((job_id, disks))
        return {}

    @commands.CleanupVolumes.responder
    def cleanup(self, job_id: str, delete: bool) -> dict[str, Any]:
        self.cleaned.append((job_id, delete))
        return {}

    @commands.ReconcileVolumes.responder
    def reconcile(self, tracked: Any, clean: bool) -> dict[str, Any]:
        self.reconciled.append(tracked)
        return {"orphans": [{"job_id": "lost-1", "volume_id": "v9", "name": "migration-lost-1-disk-0", "state": "Ready"}], "cleaned": []}


async def connect(stack: RegionStack, site: VolumeSite) -> Any:
    return await stack.connect_cluster(C1, "site-1", locator=site, capabilities=["cloudstack/1"])


@pytest_twisted.ensureDeferred
async def test_secrets_are_write_only_encrypted_at_rest_and_reach_the_cluster(region_stack: RegionStack) -> None:
    site = VolumeSite()
    await connect(region_stack, site)
    result = await region_stack.request("POST", "/api/v1/ossea/config", token=region_stack.admin_token,
                                        json={"action": "create", "configuration": {"cluster": "site-1", **config()}})
    assert result.status == 201, result.raw
    assert SECRET_KEY.encode() not in result.raw and API_KEY.encode() not in result.raw
    assert result.json()["applied"] is True
    assert site.configurations[-1]["secret_key"] == SECRET_KEY and site.configurations[-1]["zone"] == "zone-1"
    stored = await region_stack.db.fetchone("SELECT credentials FROM cloudstack_configs")
    assert SECRET_KEY.encode() not in bytes(stored["credentials"])
    for body in ({"action": "get", "configuration": {"name": "site-cs"}}, {"action": "list"}):
        answer = await region_stack.request("POST", "/api/v1/ossea/config", token=region_stack.read_token, json=body)
        assert answer.status == 200 and SECRET_KEY.encode() not in answer.raw and API_KEY.encode() not in answer.raw
    # A change reaches the cluster; removing it sends None.
    updated = await region_stack.request("PUT", f"/api/v1/clusters/{C1}/cloudstack", token=region_stack.admin_token, json={"zone": "zone-2"})
    assert updated.status == 200 and updated.json()["configuration"]["revision"] == 2
    assert site.configurations[-1]["zone"] == "zone-2" and site.configurations[-1]["secret_key"] == SECRET_KEY
    deleted = await region_stack.request("DELETE", f"/api/v1/clusters/{C1}/cloudstack", token=region_stack.admin_token)
    assert deleted.status == 200 and site.configurations[-1] is None


@pytest_twisted.ensureDeferred
async def test_a_reconnecting_cluster_gets_its_configuration(region_stack: RegionStack) -> None:
    first = VolumeSite()
    proto = await connect(region_stack, first)
    await region_stack.request("PUT", f"/api/v1/clusters/{C1}/cloudstack", token=region_stack.admin_token, json=config())
    proto.transport.loseConnection()
    await eventually(lambda: _gone(region_stack))
    second = VolumeSite()
    await connect(region_stack, second)

    async def delivered() -> bool:
        return bool(second.configurations) and second.configurations[-1]["name"] == "site-cs"

    await eventually(delivered)


async def _gone(stack: RegionStack) -> bool:
    return stack.registry.connection_count(C1) == 0


@pytest_twisted.ensureDeferred
async def test_every_configuration_problem_is_reported_by_field(region_stack: RegionStack) -> None:
    await connect(region_stack, VolumeSite())
    result = await region_stack.request("POST", "/api/v1/ossea/config", token=region_stack.admin_token, json={
        "action": "create", "configuration": {"cluster": C1, "name": "", "api_url": "ftp://x", "oma_vm_id": "nope", "colour": 1}})
    assert result.status == 400
    details = result.json()["error"]["details"]
    assert set(details) >= {"name", "api_url", "oma_vm_id", "colour", "api_key", "secret_key", "zone"}


@pytest_twisted.ensureDeferred
async def test_a_volume_job_goes_through_prepare_and_cleanup_as_the_cluster_reports(region_stack: RegionStack) -> None:
    site = VolumeSite()
    cluster = await connect(region_stack, site)
    disks = [{"name": "disk-0", "size_gb": 10}, {"name": "disk-1", "size_gb": 20}]
    reserved = await region_stack.request("POST", "/api/v1/volume-jobs", token=region_stack.admin_token,
                                          json={"cluster": "site-1", "job_id": "infra-7", "disks": disks})
    assert reserved.status == 400 and "infra-" in reserved.json()["error"]["details"]["job_id"] and site.prepared == []
    created = await region_stack.request("POST", "/api/v1/volume-jobs", token=region_stack.admin_token,
                                         json={"cluster": "site-1", "job_id": "job-7", "disks": disks})
    assert created.status == 202 and created.json()["state"] == "preparing"
    assert site.prepared == [("job-7", disks)]
    for disk in ("disk-0", "disk-1"):
        await cluster.call(ReportVolumeState, job_id="job-7", disk_name=disk, state="Mounted",
                           details={"volume_id": f"vol-{disk}", "device": "/dev/vdb", "mount_point": f"/mnt/migration/job-7/{disk}"})
    await cluster.call(ReportVolumeJob, job_id="job-7", operation="prepare", outcome="ok", undone=[], error="")
    job = (await region_stack.request("GET", "/api/v1/volume-jobs/job-7", token=region_stack.read_token)).json()
    assert job["state"] == "prepared"
    assert [(d["disk_name"], d["state"], d["mount_point"]) for d in job["disks"]] == [
        ("disk-0", "Mounted", "/mnt/migration/job-7/disk-0"), ("disk-1", "Mounted", "/mnt/migration/job-7/disk-1")]
    assert (await cluster.call(GetTrackedVolumeJobs))["job_ids"] == ["job-7"]
    # Cleanup, keeping the volumes.
    busy = await region_stack.request("POST", "/api/v1/volume-jobs", token=region_stack.admin_token,
                                      json={"cluster": C1, "job_id": "job-7", "disks": disks})
    assert busy.status == 409
    cleaning = await region_stack.request("DELETE", "/api/v1/volume-jobs/job-7?keep=true", token=region_stack.admin_token)
    assert cleaning.status == 202 and cleaning.json()["state"] == "cleaning" and site.cleaned == [("job-7", False)]
    again = await region_stack.request("DELETE", "/api/v1/volume-jobs/job-7", token=region_stack.admin_token)
    assert again.status == 409
    await cluster.call(ReportVolumeJob, job_id="job-7", operation="cleanup", outcome="ok", undone=[], error="")
    job = (await region_stack.request("GET", "/api/v1/volume-jobs/job-7", token=region_stack.read_token)).json()
    assert job["state"] == "cleaned" and job["keep"] is True
    assert (await cluster.call(GetTrackedVolumeJobs))["job_ids"] == []
    kinds = [r["type"] for r in await region_stack.db.fetch("SELECT type FROM events WHERE subject LIKE 'job-7%%' ORDER BY id")]
    assert kinds[0] == "volumes.prepare.requested" and "volume.state" in kinds and kinds[-1] == "volumes.cleanup"


@pytest_twisted.ensureDeferred
async def test_a_failed_prepare_records_what_was_undone(region_stack: RegionStack) -> None:
    cluster = await connect(region_stack, VolumeSite())
    await region_stack.request("POST", "/api/v1/volume-jobs", token=region_stack.admin_token,
                               json={"cluster": C1, "job_id": "job-8", "disks": [{"name": "d", "size_gb": 1}]})
    undone = [{"disk": "d", "step": "attach", "volume_id": "v1"}, {"disk": "d", "step": "create", "volume_id": "v1"}]
    await cluster.call(ReportVolumeJob, job_id="job-8", operation="prepare", outcome="failed", undone=undone, error="mount failed: no fs")
    job = (await region_stack.request("GET", "/api/v1/volume-jobs/job-8", token=region_stack.read_token)).json()
    assert job["state"] == "failed" and job["undone"] == undone and "mount failed" in job["error"]


@pytest_twisted.ensureDeferred
async def test_reconcile_sends_the_tracked_jobs_and_returns_orphans(region_stack: RegionStack) -> None:
    site = VolumeSite()
    await connect(region_stack, site)
    await region_stack.request("POST", "/api/v1/volume-jobs", token=region_stack.admin_token,
                               json={"cluster": C1, "job_id": "job-9", "disks": [{"name": "d", "size_gb": 1}]})
    result = await region_stack.request("POST", f"/api/v1/clusters/{C1}/cloudstack/reconcile", token=region_stack.admin_token, json={})
    assert result.status == 200 and result.json()["orphans"][0]["job_id"] == "lost-1"
    assert site.reconciled == [["job-9"]]

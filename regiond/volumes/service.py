"""
What the region does for volumes: keeps each cluster's CloudStack
configuration in step with the region's record, routes volume jobs to the
cluster, and records what the cluster reports back.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.logger import Logger

from regiond.rpc.registry import ConnectionRegistry
from regiond.volumes.config import CloudStackConfigStore
from regiond.volumes.store import BUSY_STATES, VolumeJobStore
from rpc import cluster as commands
from rpc.errors import NoConnectionsAvailable, RPCError

#: Volume jobs named so are the clusters' own (infrastructure drivers'); the
#: cluster never reports them as orphans (clusterd.volumes.lifecycle).
INFRASTRUCTURE_JOB_PREFIX = "infra-"

__all__ = ["VolumeService", "check_disks", "check_job_id", "JobNotFound", "JobBusy"]

log = Logger()

CALL_TIMEOUT = 60.0
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DISK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
MAX_DISKS = 32
MAX_DISK_GB = 16384


class JobNotFound(Exception):
    pass


class JobBusy(Exception):
    pass


def check_job_id(value: Any) -> str:
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if value.startswith(INFRASTRUCTURE_JOB_PREFIX):
        raise ValueError(f"must not start with {INFRASTRUCTURE_JOB_PREFIX!r}: those are the clusters' infrastructure volumes")
    return value


def check_disks(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_DISKS:
        raise ValueError(f"must be a list of 1 to {MAX_DISKS} disks")
    disks, names = [], set()
    for index, disk in enumerate(value):
        if not isinstance(disk, dict) or set(disk) != {"name", "size_gb"}:
            raise ValueError(f"disk {index}: must be {{\"name\": str, \"size_gb\": int}}")
        name, size = disk["name"], disk["size_gb"]
        if not isinstance(name, str) or not _DISK.fullmatch(name):
            raise ValueError(f"disk {index}: name must be 1-32 letters, digits, '_' or '-'")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_DISK_GB:
            raise ValueError(f"disk {index}: size_gb must be a whole number from 1 to {MAX_DISK_GB}")
        if name in names:
            raise ValueError(f"disk {index}: name {name!r} is used twice")
        names.add(name)
        disks.append({"name": name, "size_gb": size})
    return disks


@attrs.frozen
class VolumeService:
    registry: ConnectionRegistry
    configs: CloudStackConfigStore
    jobs: VolumeJobStore

    async def push_config(self, cluster_uuid: str) -> bool:
        """Send the cluster its configuration (or its removal) now; False if it is not connected."""
        try:
            client = await self.registry.getClientFor(cluster_uuid, timeout=0)
            await client(commands.ConfigureCloudStack, configuration=await self.configs.for_cluster(cluster_uuid), timeout=CALL_TIMEOUT)
        except (NoConnectionsAvailable, RPCError) as e:
            log.info("CloudStack configuration for {uuid} not delivered now ({error}); it goes on reconnect", uuid=cluster_uuid, error=str(e))
            return False
        return True

    async def test(self, cluster_uuid: str) -> dict[str, Any]:
        client = await self.registry.getClientFor(cluster_uuid, timeout=0)
        return dict(await client(commands.TestCloudStackConnection, timeout=CALL_TIMEOUT))

    async def prepare(self, cluster_uuid: str, job_id: str, disks: list[dict[str, Any]], actor: str) -> dict[str, Any]:
        client = await self.registry.getClientFor(cluster_uuid, timeout=0)
        job = await self.jobs.create(job_id, cluster_uuid, disks, actor)
        try:
            await client(commands.PrepareVolumes, job_id=job_id, disks=disks, timeout=CALL_TIMEOUT)
        except RPCError as e:
            await self.jobs.fail(job_id, f"the cluster did not accept the job: {e}")
            raise
        return job

    async def cleanup(self, job_id: str, keep: bool, actor: str) -> dict[str, Any]:
        job = await self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job["state"] in BUSY_STATES or job["state"] == "cleaned":
            raise JobBusy(f"job {job_id} is {job['state']}")
        client = await self.registry.getClientFor(job["cluster"], timeout=0)
        before = await self.jobs.transition(job_id, "cleaning", allowed_from=("prepared", "failed", "cleanup_failed"), keep=keep)
        if before in BUSY_STATES or before == "cleaned":
            raise JobBusy(f"job {job_id} is {before}")
        try:
            await client(commands.CleanupVolumes, job_id=job_id, delete=not keep, timeout=CALL_TIMEOUT)
        except RPCError as e:
            await self.jobs.transition(job_id, str(before), allowed_from=("cleaning",))
            raise e
        refreshed = await self.jobs.get(job_id)
        assert refreshed is not None
        return refreshed

    async def reconcile(self, cluster_uuid: str, clean: bool) -> dict[str, Any]:
        client = await self.registry.getClientFor(cluster_uuid, timeout=0)
        return dict(await client(commands.ReconcileVolumes, tracked=await self.jobs.tracked(cluster_uuid), clean=clean, timeout=300.0))

    # -- reports from clusters ---------------------------------------------

    async def volume_state(self, cluster_uuid: str, job_id: str, disk_name: str, state: str, details: Any) -> None:
        await self.jobs.volume_state(cluster_uuid, job_id, disk_name, state, details if isinstance(details, dict) else {})

    async def volume_job(self, cluster_uuid: str, job_id: str, operation: str, outcome: str, undone: Any, error: str) -> None:
        await self.jobs.finish(job_id, cluster_uuid, operation, outcome, undone if isinstance(undone, list) else [], error)

    async def tracked_jobs(self, cluster_uuid: str) -> list[str]:
        return await self.jobs.tracked(cluster_uuid)

    async def busy_jobs(self, cluster_uuid: str) -> dict[str, str]:
        return await self.jobs.busy(cluster_uuid)


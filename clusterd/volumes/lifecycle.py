"""
A migration job's volumes, from nothing to mounted and back.

prepare: for every disk at once, create the volume (named
``migration-<job>-disk-<n>``, tagged with the job and disk), attach it to
the appliance VM, find the block device that appeared, mount it at
``<mount_root>/<job>/<disk>``.  Every completed step is pushed on an undo
stack; if any disk fails, the stack is unwound in reverse (unmount, detach,
delete) and the job's outcome lists exactly what was undone.

cleanup: unmount, detach (done only when CloudStack shows no VM and the
local device has gone), then delete or keep.

Every step is idempotent: a volume already tagged for the disk is reused, an
attached one is not re-attached, a mounted one not re-mounted.  Each state
change is reported (``Allocated``, ``Attached``, ``Mounted``, ``Unmounted``,
``Detached``, ``Deleted``, ``Failed``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, cast

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from clusterd.cloudstack.errors import CloudStackError, CloudStackNotFound
from clusterd.cloudstack.interfaces import ICloudStackClient
from clusterd.volumes.errors import MountError
from clusterd.volumes.mount import IMounter

__all__ = ["VolumeLifecycle", "Settings", "TAG_JOB", "TAG_DISK", "INFRASTRUCTURE_JOB_PREFIX", "volume_name"]

log = Logger()

#: Jobs named so belong to the cluster's infrastructure drivers, which keep
#: their own records: never orphans of the region's job list.  The region
#: refuses job ids with this prefix.
INFRASTRUCTURE_JOB_PREFIX = "infra-"
TAG_JOB = "outpost-job"
TAG_DISK = "outpost-disk"
DEVICE_TIMEOUT = 120.0

Report = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


def volume_name(job_id: str, index: int) -> str:
    return f"migration-{job_id}-disk-{index}"


@attrs.frozen
class Settings:
    zone_id: str
    oma_vm_id: str
    disk_offering_id: str | None = None
    mount_root: str = "/mnt/migration"


@attrs.frozen
class _Undo:
    disk: str
    step: str
    volume_id: str
    action: Callable[[], Awaitable[Any]]


@attrs.define(eq=False)
class VolumeLifecycle:
    client: ICloudStackClient = attrs.field(repr=False)
    mounter: IMounter = attrs.field(repr=False)
    settings: Settings
    report: Report = attrs.field(repr=False)
    device_timeout: float = DEVICE_TIMEOUT

    def mountpoint(self, job_id: str, disk: str) -> str:
        return f"{self.settings.mount_root.rstrip('/')}/{job_id}/{disk}"

    async def _report(self, job_id: str, disk: str, state: str, details: dict[str, Any]) -> None:
        try:
            await self.report(job_id, disk, state, details)
        except Exception:
            log.failure("Reporting {state} of {job}/{disk} failed", state=state, job=job_id, disk=disk)

    # -- prepare -----------------------------------------------------------

    async def prepare(self, job_id: str, disks: list[dict[str, Any]]) -> dict[str, Any]:
        undo: list[_Undo] = []
        runs = [Deferred.fromCoroutine(self._prepare_disk(job_id, index, disk, undo)) for index, disk in enumerate(disks)]
        results = await DeferredList(runs, consumeErrors=True)
        # Twisted types each result as (bool, the Deferred's result); when not ok it is the Failure.
        failures = [(disks[i]["name"], cast(Failure, r)) for i, (ok, r) in enumerate(results) if not ok]
        if not failures:
            return {"outcome": "ok", "undone": [], "error": ""}
        error = "; ".join(f"{name}: {f.getErrorMessage()}" for name, f in failures)
        log.warn("Preparing volumes of {job} failed ({error}); undoing {n} steps", job=job_id, error=error, n=len(undo))
        undone = []
        for step in reversed(undo):
            entry: dict[str, Any] = {"disk": step.disk, "step": step.step, "volume_id": step.volume_id}
            try:
                await step.action()
            except Exception as e:
                entry["error"] = str(e)
                log.warn("Undoing {step} of {job}/{disk} failed: {error}", step=step.step, job=job_id, disk=step.disk, error=str(e))
            undone.append(entry)
        failed = {name: f.getErrorMessage() for name, f in failures}
        for disk in disks:
            await self._report(job_id, disk["name"], "Failed", {"error": failed.get(disk["name"], "undone after another disk failed")})
        return {"outcome": "failed", "undone": undone, "error": error}

    async def _prepare_disk(self, job_id: str, index: int, disk: dict[str, Any], undo: list[_Undo]) -> None:
        name, client, mounter, settings = disk["name"], self.client, self.mounter, self.settings
        tags = {TAG_JOB: job_id, TAG_DISK: name}
        found = await client.list_volumes(tags=tags)
        if found:
            volume = found[0]
        else:
            volume = await client.create_volume(volume_name(job_id, index), settings.zone_id, settings.disk_offering_id, disk["size_gb"], tags)
            undo.append(_Undo(name, "create", volume["id"], lambda: self._delete(job_id, name, volume["id"])))
        volume_id = volume["id"]
        await self._report(job_id, name, "Allocated", {"volume_id": volume_id})

        before = None
        if volume.get("virtualmachineid") != settings.oma_vm_id:
            before = await mounter.list_devices()
            volume = await client.attach_volume(volume_id, settings.oma_vm_id)
        device = await mounter.find_device(volume_id, before=before, timeout=self.device_timeout)
        if before is not None:
            undo.append(_Undo(name, "attach", volume_id, lambda: self._detach(job_id, name, volume_id, device)))
        await self._report(job_id, name, "Attached", {"volume_id": volume_id, "device": device})

        mountpoint = self.mountpoint(job_id, name)
        mounted = await mounter.mounted_at(mountpoint)
        if mounted is None:
            # mkfs only formats a blank device: a volume holding anything is never reformatted.
            await mounter.mount(device, mountpoint, mkfs=True)
            undo.append(_Undo(name, "mount", volume_id, lambda: self._unmount(job_id, name, mountpoint, volume_id)))
        await self._report(job_id, name, "Mounted", {"volume_id": volume_id, "device": device, "mount_point": mountpoint})

    # -- the undo steps, also cleanup's steps --------------------------------

    async def _unmount(self, job_id: str, disk: str, mountpoint: str, volume_id: str) -> None:
        await self.mounter.unmount(mountpoint)
        await self._report(job_id, disk, "Unmounted", {"volume_id": volume_id, "mount_point": ""})

    async def _detach(self, job_id: str, disk: str, volume_id: str, device: str | None) -> None:
        try:
            volume = await self.client.detach_volume(volume_id)
        except CloudStackNotFound:
            volume = {}
        if volume.get("virtualmachineid"):
            raise CloudStackError(f"volume {volume_id} still shows VM {volume['virtualmachineid']} after detach")
        if device is not None:
            await self.mounter.wait_until_gone(device, timeout=self.device_timeout)
        await self._report(job_id, disk, "Detached", {"volume_id": volume_id, "device": ""})

    async def _delete(self, job_id: str, disk: str, volume_id: str) -> None:
        try:
            await self.client.delete_volume(volume_id)
        except CloudStackNotFound:
            pass  # already gone: deleting is idempotent
        await self._report(job_id, disk, "Deleted", {"volume_id": volume_id})

    # -- cleanup -------------------------------------------------------------

    async def volumes_of(self, job_id: str) -> list[dict[str, Any]]:
        return list(await self.client.list_volumes(tags={TAG_JOB: job_id}))

    async def cleanup(self, job_id: str, delete: bool) -> dict[str, Any]:
        volumes = await self.volumes_of(job_id)
        runs = [Deferred.fromCoroutine(self._cleanup_volume(job_id, v, delete)) for v in volumes]
        results = await DeferredList(runs, consumeErrors=True)
        failures = [cast(Failure, f).getErrorMessage() for ok, f in results if not ok]  # not ok: f is the Failure
        if failures:
            return {"outcome": "failed", "undone": [], "error": "; ".join(failures)}
        return {"outcome": "ok", "undone": [], "error": ""}

    async def _cleanup_volume(self, job_id: str, volume: dict[str, Any], delete: bool) -> None:
        disk = _tag(volume, TAG_DISK) or volume["name"]
        volume_id = volume["id"]
        await self._unmount(job_id, disk, self.mountpoint(job_id, disk), volume_id)
        if volume.get("virtualmachineid"):
            try:
                device: str | None = await self.mounter.find_device(volume_id, timeout=0.0)
            except MountError:
                device = None
            await self._detach(job_id, disk, volume_id, device)
        if delete:
            await self._delete(job_id, disk, volume_id)

    # -- reconcile and test ----------------------------------------------------

    async def reconcile(self, tracked: list[str], clean: bool) -> dict[str, Any]:
        """Volumes tagged for jobs not in `tracked`; with `clean`, cleaned up and deleted."""
        orphans = []
        for volume in await self.client.list_volumes():
            job = _tag(volume, TAG_JOB)
            if job is not None and job not in tracked and not job.startswith(INFRASTRUCTURE_JOB_PREFIX):
                orphans.append({"job_id": job, "volume_id": volume["id"], "name": volume.get("name", ""), "state": volume.get("state", "")})
        cleaned: list[str] = []
        if clean:
            for job in sorted({o["job_id"] for o in orphans}):
                outcome = await self.cleanup(job, delete=True)
                if outcome["outcome"] == "ok":
                    cleaned += [o["volume_id"] for o in orphans if o["job_id"] == job]
        return {"orphans": orphans, "cleaned": cleaned}

    async def test_connection(self) -> dict[str, Any]:
        checks = []

        async def check(name: str, work: Callable[[], Awaitable[str]]) -> None:
            try:
                checks.append({"name": name, "ok": True, "detail": await work()})
            except Exception as e:
                checks.append({"name": name, "ok": False, "detail": str(e)})

        async def credentials() -> str:
            capabilities = await self.client.list_capabilities()
            return f"CloudStack {capabilities.get('cloudstackversion', '?')}"

        async def zone() -> str:
            found = await self.client.get_zone(self.settings.zone_id)
            return str(found.get("name", self.settings.zone_id))

        async def vm() -> str:
            found = await self.client.list_virtual_machines(id=self.settings.oma_vm_id)
            if not found:
                raise CloudStackNotFound(f"no VM {self.settings.oma_vm_id}")
            return str(found[0].get("name", self.settings.oma_vm_id))

        await check("credentials", credentials)
        await check("zone", zone)
        await check("appliance_vm", vm)
        return {"ok": all(c["ok"] for c in checks), "checks": checks}


def _tag(volume: dict[str, Any], key: str) -> str | None:
    for tag in volume.get("tags") or []:
        if tag.get("key") == key:
            return str(tag.get("value"))
    return None

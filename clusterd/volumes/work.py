"""
The cluster's volume work: the region's CloudStack configuration turned
into a client and a lifecycle, and the region's volume commands run on it
in the background with their progress and outcome reported back.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Any, Awaitable, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from clusterd.cloudstack.client import CloudStackClient
from clusterd.cloudstack.errors import CloudStackAuthError, CloudStackError, CloudStackParameterError
from clusterd.cloudstack.interfaces import ICloudStackClient
from clusterd.volumes.lifecycle import Settings, VolumeLifecycle
from clusterd.volumes.mount import IMounter
from rpc import errors as rpc_errors
from rpc.region import GetTrackedVolumeJobs, ReportEvent, ReportVolumeJob, ReportVolumeState

__all__ = ["VolumeWork"]

log = Logger()

REPORT_PATIENCE = 300.0
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DISK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


@attrs.define(eq=False)
class VolumeWork:
    reactor: Any = attrs.field(repr=False)
    mounter: IMounter = attrs.field(repr=False)
    region: Callable[[], Any] = attrs.field(repr=False)
    mount_root: str = "/mnt/migration"
    #: Makes the CloudStack client for a configuration (tests and simulators swap it).
    client_factory: Callable[[dict[str, Any]], ICloudStackClient] | None = attrs.field(default=None, repr=False)
    _configuration: dict[str, Any] | None = attrs.field(init=False, default=None, repr=False)
    _client: ICloudStackClient | None = attrs.field(init=False, default=None, repr=False)
    _lifecycle: VolumeLifecycle | None = attrs.field(init=False, default=None, repr=False)
    running: dict[str, str] = attrs.field(init=False, factory=dict)
    #: What to do with orphaned volumes found at start: "report" or "clean".
    orphans: str = "report"
    _reconciled: bool = attrs.field(init=False, default=False)

    # -- configuration -------------------------------------------------------

    @property
    def configuration(self) -> dict[str, Any] | None:
        return self._configuration

    @property
    def client(self) -> ICloudStackClient | None:
        return self._client

    async def configure(self, configuration: dict[str, Any] | None) -> None:
        old, self._client, self._lifecycle = self._client, None, None
        self._configuration = configuration
        if old is not None:
            await old.close()
        if configuration is None:
            log.info("CloudStack configuration removed")
            return
        make = self.client_factory or (lambda c: CloudStackClient(self.reactor, c["api_url"], c["api_key"], c["secret_key"]))
        self._client = make(configuration)
        if not self._reconciled:
            # Once per process: jobs the region thinks we are working on were
            # interrupted by our restart, and volumes of jobs nobody tracks are orphans.
            self._reconciled = True
            Deferred.fromCoroutine(self.reconcile_on_start()).addErrback(
                lambda f: log.failure("Reconciling volumes at start failed", f)
            )
        log.info("CloudStack configuration {name} (revision {revision}) at {url}", name=configuration.get("name"),
                 revision=configuration.get("revision"), url=configuration.get("api_url"))

    async def lifecycle(self) -> VolumeLifecycle:
        if self._configuration is None or self._client is None:
            raise rpc_errors.IntegrationNotConfigured("this cluster has no CloudStack configuration from the region")
        if self._lifecycle is None:
            config = self._configuration
            try:
                zone_id = await self._resolve(config["zone"], self._client.list_zones)
                offering = config.get("disk_offering") or ""
                if offering:
                    offering_id: str | None = await self._resolve(offering, self._client.list_disk_offerings)
                else:
                    # Volumes are made to the source disks' sizes: that needs a custom-size offering.
                    custom = [o for o in await self._client.list_disk_offerings() if o.get("iscustomized")]
                    if not custom:
                        raise CloudStackParameterError("no disk_offering configured and CloudStack has no custom-size offering")
                    offering_id = str(custom[0]["id"])
            except CloudStackError as e:
                raise _rpc_error(e) from None
            self._lifecycle = VolumeLifecycle(
                self._client, self.mounter, Settings(zone_id, config["oma_vm_id"], offering_id, self.mount_root), self._report_state
            )
        return self._lifecycle

    @staticmethod
    async def _resolve(ref: str, listing: Callable[[], Awaitable[list[dict[str, Any]]]]) -> str:
        if _is_uuid(ref):
            return ref
        for item in await listing():
            if item.get("name") == ref:
                return str(item["id"])
        raise CloudStackParameterError(f"no zone or disk offering named {ref!r}")

    # -- commands ------------------------------------------------------------

    def start(self, job_id: str, operation: str, work: Callable[[VolumeLifecycle], Any]) -> None:
        """Run `work` for the job in the background; conflict if the job is already being worked on."""
        if job_id in self.running:
            raise rpc_errors.VolumeJobConflict(f"job {job_id} is already being {self.running[job_id]}")
        if self._configuration is None:
            raise rpc_errors.IntegrationNotConfigured("this cluster has no CloudStack configuration from the region")
        self.running[job_id] = "prepared" if operation == "prepare" else "cleaned up"

        async def run() -> None:
            try:
                lifecycle = await self.lifecycle()
                result = await work(lifecycle)
            except Exception as e:
                log.failure("Volume {operation} of {job} failed", job=job_id, operation=operation)
                result = {"outcome": "failed", "undone": [], "error": str(e)}
            finally:
                self.running.pop(job_id, None)
            await self._report_job(job_id, operation, result)

        Deferred.fromCoroutine(run())

    def prepare(self, job_id: str, disks: list[dict[str, Any]]) -> dict[str, Any]:
        if not isinstance(job_id, str) or not _JOB.fullmatch(job_id):
            raise rpc_errors.InvalidArgument("job_id must be 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(disks, list) or not disks or not all(
            isinstance(d, dict) and isinstance(d.get("name"), str) and _DISK.fullmatch(d["name"])
            and isinstance(d.get("size_gb"), int) and not isinstance(d.get("size_gb"), bool) and d["size_gb"] > 0
            for d in disks
        ) or len({d["name"] for d in disks}) != len(disks):
            raise rpc_errors.InvalidArgument("disks must be a list of {name, size_gb} with distinct names")
        self.start(job_id, "prepare", lambda lc: lc.prepare(job_id, disks))
        return {}

    def cleanup(self, job_id: str, delete: bool) -> dict[str, Any]:
        self.start(job_id, "cleanup", lambda lc: lc.cleanup(job_id, delete))
        return {}

    async def reconcile(self, tracked: list[str], clean: bool) -> dict[str, Any]:
        lifecycle = await self.lifecycle()
        try:
            return await lifecycle.reconcile([t for t in tracked if isinstance(t, str)] + list(self.running), clean)
        except CloudStackError as e:
            raise _rpc_error(e) from None

    async def reconcile_on_start(self) -> dict[str, Any]:
        """
        End the jobs a previous run of this cluster left half done (the
        region still thinks they are being worked on): their volumes are
        cleaned up and the job reported failed.  Then report (or clean, by
        policy) volumes of jobs the region does not track.
        """
        answer = await self.region()(GetTrackedVolumeJobs, timeout=30)
        for job_id, operation in sorted(answer["busy"].items()):
            if job_id in self.running:
                continue

            async def end(lifecycle: VolumeLifecycle, job_id: str = job_id, operation: str = operation) -> dict[str, Any]:
                cleaned = await lifecycle.cleanup(job_id, delete=operation == "prepare")
                return {"outcome": "failed", "undone": [{"step": "cleanup", "outcome": cleaned["outcome"]}],
                        "error": f"interrupted by a restart of the cluster; {'volumes removed' if operation == 'prepare' else 'run the cleanup again'}"
                                 + (f" ({cleaned['error']})" if cleaned["error"] else "")}

            self.start(job_id, operation, end)
        found = await self.reconcile(list(answer["job_ids"]), clean=self.orphans == "clean")
        if found["orphans"]:
            await self._offer(ReportEvent, type="volumes.orphans", subject="", outcome="cleaned" if found["cleaned"] else "found",
                              data=found)
        return found

    async def test_connection(self) -> dict[str, Any]:
        if self._configuration is None:
            raise rpc_errors.IntegrationNotConfigured("this cluster has no CloudStack configuration from the region")
        try:
            lifecycle = await self.lifecycle()
        except rpc_errors.RPCError as e:
            return {"ok": False, "checks": [{"name": "zone", "ok": False, "detail": str(e)}]}
        return await lifecycle.test_connection()

    # -- reports -------------------------------------------------------------

    async def _report_state(self, job_id: str, disk: str, state: str, details: dict[str, Any]) -> None:
        await self._offer(ReportVolumeState, job_id=job_id, disk_name=disk, state=state, details=details)

    async def _report_job(self, job_id: str, operation: str, result: dict[str, Any]) -> None:
        await self._offer(ReportVolumeJob, job_id=job_id, operation=operation, outcome=result["outcome"],
                          undone=result["undone"], error=result["error"])

    async def _offer(self, command: Any, **kwargs: Any) -> None:
        """Send a report to some region process, retrying while none is reachable."""
        deadline = self.reactor.seconds() + REPORT_PATIENCE
        delay = 1.0
        while True:
            try:
                await self.region()(command, timeout=30, **kwargs)
                return
            except rpc_errors.RPCError as e:
                if self.reactor.seconds() + delay > deadline:
                    log.warn("Gave up sending {command} for {job}: {error}", command=command.__name__, job=kwargs.get("job_id"), error=str(e))
                    return
            await deferLater(self.reactor, delay, lambda: None)
            delay = min(delay * 2, 30.0)


def _rpc_error(e: CloudStackError) -> Exception:
    if isinstance(e, CloudStackAuthError):
        return rpc_errors.IntegrationAuthFailed(str(e))
    if isinstance(e, CloudStackParameterError):
        return rpc_errors.InvalidArgument(str(e))
    return rpc_errors.IntegrationUnavailable(str(e))

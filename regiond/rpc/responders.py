"""The region's responders: a few lines each, calling the registrar or the callbacks."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Protocol

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from regiond.rpc.registrar import ClusterRegistrar
from rpc.errors import InvalidArgument
from rpc.protocol import RPCProtocol
from rpc.region import (
    GetRegionEndpoints,
    GetTrackedVolumeJobs,
    RegisterCluster,
    ReportEvent,
    ReportInfrastructureTask,
    ReportPowerOutcome,
    ReportVolumeJob,
    ReportVolumeState,
)

__all__ = ["RegionResponders", "IRegionCallbacks"]


class IRegionCallbacks(Protocol):
    """What the region does with reports from clusters."""

    def power_outcome(
        self, cluster_uuid: str, system_id: str, action: str, request_id: str, outcome: str, state: str, error: str
    ) -> Awaitable[None]: ...

    def cluster_event(self, cluster_uuid: str, type: str, subject: str, outcome: str, data: Any) -> Awaitable[None]: ...


class IVolumeCallbacks(Protocol):
    """What the region does with volume reports from clusters."""

    def volume_state(self, cluster_uuid: str, job_id: str, disk_name: str, state: str, details: Any) -> Awaitable[None]: ...

    def volume_job(self, cluster_uuid: str, job_id: str, operation: str, outcome: str, undone: Any, error: str) -> Awaitable[None]: ...

    def tracked_jobs(self, cluster_uuid: str) -> Awaitable[list[str]]: ...

    def busy_jobs(self, cluster_uuid: str) -> Awaitable[dict[str, str]]: ...


class IInfrastructureCallbacks(Protocol):
    """What the region does with infrastructure reports from clusters."""

    def task_completed(self, cluster_uuid: str, task: Any, operation: str, location: Any) -> Awaitable[None]: ...


def _refuse_nul(**arguments: Any) -> None:
    """
    PostgreSQL text and jsonb cannot hold NUL, and no name, id or report of
    ours has one: a cluster sending one gets INVALID_ARGUMENT, not a failed
    statement answered as UNHANDLED.
    """
    for name, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if "\x00" in text or "\\u0000" in text:
            raise InvalidArgument(f"{name} must not contain NUL")


class RegionResponders(amp.CommandLocator):
    def __init__(
        self,
        connection: RPCProtocol,
        registrar: ClusterRegistrar,
        callbacks: IRegionCallbacks | None = None,
        volumes: IVolumeCallbacks | None = None,
        infrastructure: IInfrastructureCallbacks | None = None,
    ) -> None:
        self._connection = connection
        self._registrar = registrar
        self._callbacks = callbacks
        self._volumes = volumes
        self._infrastructure = infrastructure

    def _reporting(self, work: Any) -> Deferred[dict[str, Any]]:
        """Run `work(cluster_uuid)` for the cluster registered on this connection; answer {}."""

        async def run() -> dict[str, Any]:
            result = await work(self._registrar.cluster_of(self._connection))
            return result if isinstance(result, dict) else {}

        return Deferred.fromCoroutine(run())

    @ReportVolumeState.responder
    def report_volume_state(self, job_id: str, disk_name: str, state: str, details: Any) -> Deferred[dict[str, Any]]:
        _refuse_nul(job_id=job_id, disk_name=disk_name, state=state, details=details)
        return self._reporting(lambda uuid: self._volumes.volume_state(uuid, job_id, disk_name, state, details) if self._volumes else _nothing())

    @ReportVolumeJob.responder
    def report_volume_job(self, job_id: str, operation: str, outcome: str, undone: Any, error: str) -> Deferred[dict[str, Any]]:
        _refuse_nul(job_id=job_id, operation=operation, outcome=outcome, undone=undone, error=error)
        return self._reporting(lambda uuid: self._volumes.volume_job(uuid, job_id, operation, outcome, undone, error) if self._volumes else _nothing())

    @ReportInfrastructureTask.responder
    def report_infrastructure_task(self, task: Any, operation: str, deployment_location: Any) -> Deferred[dict[str, Any]]:
        _refuse_nul(task=task, operation=operation, deployment_location=deployment_location)
        async def completed(uuid: str) -> None:
            if self._infrastructure is None:
                # Not acknowledged: the cluster keeps the report and sends it again.
                raise RuntimeError("this region process does not take infrastructure reports")
            await self._infrastructure.task_completed(uuid, task, operation, deployment_location)

        return self._reporting(completed)

    @GetTrackedVolumeJobs.responder
    def get_tracked_volume_jobs(self) -> Deferred[dict[str, Any]]:
        async def tracked(uuid: str) -> dict[str, Any]:
            if self._volumes is None:
                return {"job_ids": [], "busy": {}}
            return {"job_ids": await self._volumes.tracked_jobs(uuid), "busy": await self._volumes.busy_jobs(uuid)}

        return self._reporting(tracked)

    @RegisterCluster.responder
    def register_cluster(self, uuid: str, name: str, version: str, capabilities: Any) -> Deferred[dict[str, Any]]:
        _refuse_nul(name=name, version=version, capabilities=capabilities)
        return Deferred.fromCoroutine(self._registrar.register(self._connection, uuid, name, version, capabilities))

    @GetRegionEndpoints.responder
    def get_region_endpoints(self) -> Deferred[dict[str, Any]]:
        async def endpoints() -> dict[str, Any]:
            return {"endpoints": await self._registrar.endpoints()}

        return Deferred.fromCoroutine(endpoints())

    @ReportPowerOutcome.responder
    def report_power_outcome(self, system_id: str, action: str, request_id: str, outcome: str, state: str, error: str) -> Deferred[dict[str, Any]]:
        _refuse_nul(system_id=system_id, action=action, request_id=request_id, outcome=outcome, state=state, error=error)
        async def report() -> dict[str, Any]:
            cluster = self._registrar.cluster_of(self._connection)
            if self._callbacks is not None:
                await self._callbacks.power_outcome(cluster, system_id, action, request_id, outcome, state, error)
            return {}

        return Deferred.fromCoroutine(report())

    @ReportEvent.responder
    def report_event(self, type: str, subject: str, outcome: str, data: Any) -> Deferred[dict[str, Any]]:
        _refuse_nul(type=type, subject=subject, outcome=outcome, data=data)
        async def report() -> dict[str, Any]:
            cluster = self._registrar.cluster_of(self._connection)
            if self._callbacks is not None:
                await self._callbacks.cluster_event(cluster, type, subject, outcome, data)
            return {}

        return Deferred.fromCoroutine(report())


async def _nothing() -> None:
    return None

"""
The infrastructure driver contract (seed 003, Ignition's InfrastructureDriver).

A driver does the site-local work for one kind of deployment location
(``deploymentLocation.type``).  Its four methods keep Ignition's names and
meaning; they are coroutines because every driver talks to something over
the network.

- `create_infrastructure` and `delete_infrastructure` answer as soon as the
  work is accepted, with an infrastructure id and a request id; the cluster's
  task monitor then polls `get_infrastructure_task` until COMPLETE or FAILED.
- `find_infrastructure` answers at once: the infrastructure with that
  instance name, or None.

Errors are Ignition's classes (defined in `rpc.errors` so they cross the wire
unchanged).  The monitor requeues on `TemporaryInfrastructureError` and
`UnreachableDeploymentLocation`; any other error from
`get_infrastructure_task` ends monitoring with FAILED/INTERNAL_ERROR.

Drivers are found by name through the ``outpost.infrastructure_drivers``
entry point group (`clusterd.infrastructure.registry`); each entry point is a
`DriverFactory`, called once per cluster with a `DriverContext`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

import attrs

from rpc.errors import (
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InvalidInfrastructureRequest,
    InvalidInfrastructureTemplate,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)

if TYPE_CHECKING:  # the cluster's work modules import the drivers' registry, which imports this
    from clusterd.machines import MachineWork
    from clusterd.volumes.work import VolumeWork

__all__ = [
    "IN_PROGRESS", "COMPLETE", "FAILED", "STATUSES", "FAILURE_CODES",
    "RESOURCE_ALREADY_EXISTS", "RESOURCE_NOT_FOUND", "INFRASTRUCTURE_ERROR", "INSUFFICIENT_CAPACITY", "INTERNAL_ERROR",
    "FailureDetails", "InfrastructureTask", "Accepted", "Found",
    "InfrastructureDriver", "DriverContext", "DriverFactory", "ENTRY_POINT_GROUP",
    "InfrastructureError", "InfrastructureNotFound", "InfrastructureRequestNotFound", "InvalidInfrastructureRequest",
    "InvalidInfrastructureTemplate", "TemporaryInfrastructureError", "UnreachableDeploymentLocation",
]

IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"
STATUSES = (IN_PROGRESS, COMPLETE, FAILED)

RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
INFRASTRUCTURE_ERROR = "INFRASTRUCTURE_ERROR"
INSUFFICIENT_CAPACITY = "INSUFFICIENT_CAPACITY"
INTERNAL_ERROR = "INTERNAL_ERROR"
FAILURE_CODES = (RESOURCE_ALREADY_EXISTS, RESOURCE_NOT_FOUND, INFRASTRUCTURE_ERROR, INSUFFICIENT_CAPACITY, INTERNAL_ERROR)

#: The entry point group drivers are registered under (name = location type).
ENTRY_POINT_GROUP = "outpost.infrastructure_drivers"


@attrs.frozen
class FailureDetails:
    failure_code: str = attrs.field(validator=attrs.validators.in_(FAILURE_CODES))
    description: str = ""


@attrs.frozen
class InfrastructureTask:
    """Where a create or delete request stands."""

    infrastructure_id: str
    request_id: str
    status: str = attrs.field(validator=attrs.validators.in_(STATUSES))
    failure_details: FailureDetails | None = None
    outputs: Mapping[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status != IN_PROGRESS

    def to_event(self) -> dict[str, Any]:
        """Ignition's task event: ``{requestId, infrastructureId, status, failureDetails?, outputs?}``."""
        event: dict[str, Any] = {"requestId": self.request_id, "infrastructureId": self.infrastructure_id, "status": self.status}
        if self.failure_details is not None:
            event["failureDetails"] = {"failureCode": self.failure_details.failure_code, "description": self.failure_details.description}
        if self.outputs is not None:
            event["outputs"] = dict(self.outputs)
        return event


@attrs.frozen
class Accepted:
    """A create or delete request the driver took on (Ignition's Create/DeleteInfrastructureResponse)."""

    infrastructure_id: str
    request_id: str


@attrs.frozen
class Found:
    """Infrastructure `find_infrastructure` located, with its outputs."""

    infrastructure_id: str
    outputs: Mapping[str, Any] = attrs.field(factory=dict)


class InfrastructureDriver(Protocol):
    async def create_infrastructure(
        self,
        template: str,
        template_type: str,
        system_properties: Mapping[str, Any],
        properties: Mapping[str, Any],
        deployment_location: Mapping[str, Any],
    ) -> Accepted:
        """Start creating; raises InvalidInfrastructureTemplate, TemporaryInfrastructureError,
        UnreachableDeploymentLocation or InfrastructureError."""

    async def get_infrastructure_task(
        self, infrastructure_id: str, request_id: str, deployment_location: Mapping[str, Any]
    ) -> InfrastructureTask:
        """Where a request stands; raises InfrastructureNotFound, InfrastructureRequestNotFound,
        UnreachableDeploymentLocation, TemporaryInfrastructureError or InfrastructureError."""

    async def delete_infrastructure(self, infrastructure_id: str, deployment_location: Mapping[str, Any]) -> Accepted:
        """Start deleting; raises InfrastructureNotFound, UnreachableDeploymentLocation,
        TemporaryInfrastructureError or InfrastructureError."""

    async def find_infrastructure(
        self, template: str, template_type: str, instance_name: str, deployment_location: Mapping[str, Any]
    ) -> Found | None:
        """The infrastructure named `instance_name`, or None; raises InvalidInfrastructureTemplate,
        UnreachableDeploymentLocation, TemporaryInfrastructureError or InfrastructureError."""


@attrs.frozen
class DriverContext:
    """What a driver factory gets from the cluster."""

    reactor: Any
    #: The cluster configuration's ``infrastructure.drivers.<type>`` mapping ({} when absent).
    config: Mapping[str, Any]
    #: A directory this driver may keep state in (created by the cluster).
    state_dir: Path
    #: The cluster's MAAS work, or None without MAAS.
    machines: MachineWork | None = None
    #: The cluster's volume work, or None.
    volumes: VolumeWork | None = None
    #: `outpost.metrics.ExternalCallMetrics` for calls to external systems, or None.
    metrics: Any = None


DriverFactory = Callable[[DriverContext], InfrastructureDriver]

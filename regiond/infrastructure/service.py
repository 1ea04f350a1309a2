"""
What the region does for the Ignition-compatible infrastructure API.

A request names its deployment location; the location's name is the name
(or uuid) of the cluster that runs the driver, so the region routes create,
delete and find to that cluster and records what the cluster accepted.
Query is answered from the region's records, so it works while the cluster
is away; the records follow the completions clusters report
(`task_completed`).

Failures are Ignition's error classes (`rpc.errors.InfrastructureError` and
its subclasses), whatever their cause, so the API maps one set of classes to
Ignition's statuses:

- an unknown location name, or a cluster that is not connected (after a
  short wait for it to reconnect): `UnreachableDeploymentLocation`;
- no answer within the call timeout, or the connection lost during the
  call: `TemporaryInfrastructureError` (the cluster may have accepted the
  request; its completion report then records it anyway);
- a cluster that does not know the commands (too old) or refuses the
  arguments: `InvalidInfrastructureRequest`;
- any other failure of the cluster: `InfrastructureError`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import attrs
from twisted.logger import Logger
from twisted.protocols import amp

from regiond.clusters import ClusterStore
from regiond.infrastructure.store import (
    COMPLETE,
    FAILED,
    OPERATIONS,
    InfrastructureStore,
    Location,
    ReportMismatch,
    TaskReport,
)
from regiond.rpc.registry import ConnectionRegistry
from rpc import cluster as commands
from rpc.errors import (
    CallTimedOut,
    ConnectionClosed,
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InvalidArgument,
    InvalidInfrastructureRequest,
    NoConnectionsAvailable,
    NotAuthenticated,
    RemoteUnhandledError,
    RPCError,
    TemporaryInfrastructureError,
    UnknownCommand,
    UnreachableDeploymentLocation,
)

__all__ = [
    "InfrastructureService", "CreateRequest", "FindRequest", "check_report", "instance_name_of", "as_infrastructure_error",
    "CALL_TIMEOUT", "CONNECT_WAIT", "FAILURE_CODES",
]

log = Logger()

#: Seconds the region waits for a cluster to accept (or answer) a request.
CALL_TIMEOUT = 30.0
#: Seconds the region waits for a disconnected cluster to come back before calling it unreachable.
CONNECT_WAIT = 1.0
#: Ignition's failure codes.
FAILURE_CODES = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_NOT_FOUND", "INFRASTRUCTURE_ERROR", "INSUFFICIENT_CAPACITY", "INTERNAL_ERROR")
#: Longest id (infrastructure or request) the region records.
MAX_ID = 1024


@attrs.frozen
class CreateRequest:
    """An Ignition create body, checked."""

    template: str
    template_type: str
    deployment_location: Mapping[str, Any]
    system_properties: Mapping[str, Any] = attrs.field(factory=dict)
    properties: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class FindRequest:
    """An Ignition find body, checked."""

    template: str
    template_type: str
    instance_name: str
    deployment_location: Mapping[str, Any]


def instance_name_of(system_properties: Mapping[str, Any]) -> str:
    """
    The ``resourceName`` system property, plain or in Ignition's ``{"type",
    "value"}`` form ("" if absent), as text PostgreSQL can store.
    """
    value = system_properties.get("resourceName")
    if isinstance(value, Mapping):
        value = value.get("value")
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _location(value: Mapping[str, Any]) -> Location:
    kind = value.get("type")
    return Location(str(value["name"]), kind if isinstance(kind, str) else "")


def _text(value: Any, what: str, max_length: int = MAX_ID) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidArgument(f"{what} must be a string of 1 to {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid Unicode text") from None
    if "\x00" in value:
        raise InvalidArgument(f"{what} must not contain NUL")
    return value


def _storable(value: Any) -> bool:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError):
        return False
    return "\\u0000" not in text


def check_report(task: Any, operation: Any, location: Any) -> tuple[TaskReport, str, Location]:
    """A cluster's completion report, checked; `InvalidArgument` naming the first problem."""
    if operation not in OPERATIONS:
        raise InvalidArgument(f"operation must be one of {', '.join(OPERATIONS)}")
    if not isinstance(location, dict):
        raise InvalidArgument("deployment_location must be an object")
    name = _text(location.get("name"), "deployment_location.name")
    kind = location.get("type")
    kind = "" if kind is None or kind == "" else _text(kind, "deployment_location.type")
    if not isinstance(task, dict):
        raise InvalidArgument("task must be an object")
    request_id = _text(task.get("requestId"), "task.requestId")
    infrastructure_id = _text(task.get("infrastructureId"), "task.infrastructureId")
    status = task.get("status")
    if status not in (COMPLETE, FAILED):
        raise InvalidArgument(f"task.status must be {COMPLETE} or {FAILED} in a completion report")
    code = description = None
    failure = task.get("failureDetails")
    if failure is not None:
        if not isinstance(failure, dict) or failure.get("failureCode") not in FAILURE_CODES:
            raise InvalidArgument(f"task.failureDetails must be an object whose failureCode is one of {', '.join(FAILURE_CODES)}")
        description = failure.get("description")
        description = "" if description is None or description == "" else _text(description, "task.failureDetails.description", 64 * 1024)
        code = failure["failureCode"]
    outputs = task.get("outputs")
    if outputs is not None and not isinstance(outputs, dict):
        raise InvalidArgument("task.outputs must be an object")
    if outputs is not None and not _storable(outputs):
        raise InvalidArgument("task.outputs must be JSON PostgreSQL can store (no NUL, no lone surrogates, finite numbers)")
    return TaskReport(request_id, infrastructure_id, status, code, description, outputs), operation, Location(name, kind)


def as_infrastructure_error(e: RPCError, uuid: str, name: str) -> InfrastructureError:
    """What a failed call to cluster `uuid` (location `name`) is, in Ignition's classes."""
    if isinstance(e, InfrastructureError):
        return e
    if isinstance(e, NoConnectionsAvailable):
        return UnreachableDeploymentLocation(f"deployment location {name!r} (cluster {uuid}) is not connected to the region")
    if isinstance(e, CallTimedOut):
        return TemporaryInfrastructureError(
            f"deployment location {name!r} (cluster {uuid}) did not answer within {e.timeout:g}s; try again later"
        )
    if isinstance(e, (ConnectionClosed, NotAuthenticated)):
        return TemporaryInfrastructureError(f"the connection to deployment location {name!r} (cluster {uuid}) was lost; try again later")
    if isinstance(e, UnknownCommand):
        return InvalidInfrastructureRequest(f"deployment location {name!r} (cluster {uuid}) does not support infrastructure requests")
    if isinstance(e, InvalidArgument):
        return InvalidInfrastructureRequest(f"the request could not be handled by deployment location {name!r}: {e}")
    if isinstance(e, RemoteUnhandledError):
        return InfrastructureError(f"deployment location {name!r} (cluster {uuid}) failed unexpectedly (reference {e.reference})")
    return InfrastructureError(f"the call to deployment location {name!r} (cluster {uuid}) failed: {e}")


@attrs.define
class InfrastructureService:
    registry: ConnectionRegistry
    clusters: ClusterStore
    store: InfrastructureStore
    #: Seconds to wait for a disconnected cluster (tests shorten it).
    connect_wait: float = CONNECT_WAIT
    #: Seconds to wait for a cluster's answer.
    call_timeout: float = CALL_TIMEOUT

    async def locate(self, location: Mapping[str, Any]) -> str:
        """The uuid of the cluster the location names; `UnreachableDeploymentLocation` if none, `InvalidInfrastructureRequest` if ambiguous."""
        name = str(location["name"])
        found = await self.clusters.resolve(name) if 0 < len(name) <= 255 else []
        if not found:
            raise UnreachableDeploymentLocation(f"deployment location {name!r} is not a cluster known to the region")
        if len(found) > 1:
            raise InvalidInfrastructureRequest(f"deployment location name {name!r} is used by {len(found)} clusters; use the cluster's uuid")
        return str(found[0])

    async def _call(self, uuid: str, location: Mapping[str, Any], command: type[amp.Command], **kwargs: Any) -> dict[str, Any]:
        name = str(location["name"])
        try:
            client = await self.registry.getClientFor(uuid, timeout=self.connect_wait)
            return dict(await client(command, timeout=self.call_timeout, **kwargs))
        except RPCError as e:
            raise as_infrastructure_error(e, uuid, name) from None

    @staticmethod
    def _accepted(answer: Mapping[str, Any], uuid: str) -> tuple[str, str]:
        ids = answer.get("infrastructure_id"), answer.get("request_id")
        if not all(isinstance(i, str) and 0 < len(i) <= MAX_ID and "\x00" not in i for i in ids):
            raise InfrastructureError(f"cluster {uuid} accepted the request but answered without usable ids")
        return str(ids[0]), str(ids[1])

    async def create(self, request: CreateRequest, actor: str) -> dict[str, str]:
        """Have the location's cluster start creating; record what it accepted."""
        uuid = await self.locate(request.deployment_location)
        answer = await self._call(uuid, request.deployment_location, commands.CreateInfrastructure, request={
            "template": request.template,
            "template_type": request.template_type,
            "system_properties": dict(request.system_properties),
            "properties": dict(request.properties),
            "deployment_location": dict(request.deployment_location),
        })
        infrastructure_id, request_id = self._accepted(answer, uuid)
        await self.store.create_accepted(
            uuid, infrastructure_id, request_id, _location(request.deployment_location),
            instance_name=instance_name_of(request.system_properties),
            template_type=request.template_type,
            template_sha256=hashlib.sha256(request.template.encode("utf-8")).hexdigest(),
            actor=actor,
        )
        return {"infrastructureId": infrastructure_id, "requestId": request_id}

    async def delete(self, infrastructure_id: str, deployment_location: Mapping[str, Any], actor: str) -> dict[str, str]:
        """
        Have the location's cluster start deleting.  Infrastructure the
        region knows to be deleted already is not found; infrastructure it
        has no record of is left to the driver to judge.
        """
        uuid = await self.locate(deployment_location)
        if await self.store.state(uuid, infrastructure_id) == "deleted":
            raise InfrastructureNotFound(f"infrastructure {infrastructure_id!r} at {deployment_location['name']!r} has been deleted")
        answer = await self._call(uuid, deployment_location, commands.DeleteInfrastructure,
                                  infrastructure_id=infrastructure_id, deployment_location=dict(deployment_location))
        deleted_id, request_id = self._accepted(answer, uuid)
        await self.store.delete_accepted(uuid, deleted_id, request_id, _location(deployment_location), actor)
        return {"infrastructureId": deleted_id, "requestId": request_id}

    async def query(self, infrastructure_id: str, request_id: str, deployment_location: Mapping[str, Any]) -> dict[str, Any]:
        """The request as the region last heard of it (no call to the cluster)."""
        name = str(deployment_location["name"])
        found = await self.store.task(name, infrastructure_id, request_id)
        if found is not None:
            return found.to_event()
        if not await self.store.known_at(name, infrastructure_id):
            raise InfrastructureNotFound(f"no infrastructure {infrastructure_id!r} at deployment location {name!r}")
        raise InfrastructureRequestNotFound(f"infrastructure {infrastructure_id!r} has no request {request_id!r}")

    async def find(self, request: FindRequest) -> dict[str, Any]:
        """Ask the location's cluster for infrastructure by instance name: ``{"result": {...} | None}``."""
        uuid = await self.locate(request.deployment_location)
        answer = await self._call(uuid, request.deployment_location, commands.FindInfrastructure, request={
            "template": request.template,
            "template_type": request.template_type,
            "instance_name": request.instance_name,
            "deployment_location": dict(request.deployment_location),
        })
        result = answer.get("result")
        if result is None:
            return {"result": None}
        if not isinstance(result, dict) or not isinstance(result.get("infrastructureId"), str) or not isinstance(result.get("outputs", {}), (dict, type(None))):
            raise InfrastructureError(f"cluster {uuid} answered find with something that is not a result")
        return {"result": {"infrastructureId": result["infrastructureId"], "outputs": result.get("outputs")}}

    # -- reports from clusters ---------------------------------------------

    async def task_completed(self, cluster_uuid: str, task: Any, operation: Any, location: Any) -> None:
        """Record a completion report (de-duplicated); `InvalidArgument` if it is malformed or contradicts the record."""
        report, op, where = check_report(task, operation, location)
        try:
            recorded = await self.store.complete(cluster_uuid, report, op, where)
        except ReportMismatch as e:
            raise InvalidArgument(str(e)) from None
        if not recorded:
            log.debug("Repeated report of {request} from {uuid} acknowledged", request=report.request_id, uuid=cluster_uuid)

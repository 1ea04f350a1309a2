"""
The infrastructure API: Ignition's ``/api/infrastructure/{create,query,delete,find}``
and the region's own records under ``/api/v1/infrastructures``.

The Ignition routes keep their peer's bodies, statuses and error shape
(``{"localizedMessage", "status"}``, on every error of those routes,
authentication and body limits included), so a Brent/LM resource manager
can use the region as a VIM driver.  Bodies are checked against Ignition's
``vim_infrastructure.yaml`` schemas: required fields and their types, with
every problem named in the message; unknown extra fields are accepted, as
Ignition accepts them.  Beyond the schema, find needs ``instanceName`` (the
driver contract searches by it; Ignition's controller insists on it too),
while create takes a missing ``systemProperties`` or ``properties`` as empty.

Create and delete need an admin token; query and find a read token.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, TypedDict

import attrs

from regiond.api import errors
from regiond.api.params import pagination, resolve_cluster
from regiond.api.router import ApiRequest, ErrorBody, Response, Route, parse_query
from regiond.api.rpcerrors import RETRY_AFTER
from regiond.clusters import ClusterStore
from regiond.infrastructure.service import (
    MAX_ID,
    CreateRequest,
    FindRequest,
    InfrastructureService,
)
from regiond.infrastructure.store import STATES
from regiond.tokens import ADMIN, READ
from rpc.errors import (
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InvalidInfrastructureRequest,
    InvalidInfrastructureTemplate,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)

__all__ = ["InfrastructureAPI", "ignition_error_body", "http_error"]


def ignition_error_body(status: int, message: str, details: Any) -> dict[str, Any]:
    """Ignition's error body; field details (from shared checks) are folded into the message."""
    if isinstance(details, Mapping) and details and all(isinstance(v, str) for v in details.values()):
        message = f"{message} ({'; '.join(f'{k}: {v}' for k, v in details.items())})"
    return {"localizedMessage": message, "status": status}


#: The OpenAPI schema of `ignition_error_body` (Ignition's ErrorResponse).
IGNITION_ERROR_SCHEMA = {
    "type": "object", "required": ["localizedMessage", "status"],
    "properties": {"localizedMessage": {"type": "string"}, "status": {"type": "integer"}},
}


class _IgnitionRoute(TypedDict):
    """The `Route` fields every Ignition route shares (passed as ``**``)."""

    tags: Sequence[str]
    error_body: ErrorBody
    error_schema: Mapping[str, Any]


class InfrastructureFailed(errors.ApiError):
    status, code = 500, "infrastructure_error"


#: Ignition's classes that are the client's to fix (HTTP 400).
_BAD_REQUEST = (InvalidInfrastructureTemplate, InvalidInfrastructureRequest, InfrastructureNotFound,
                InfrastructureRequestNotFound, UnreachableDeploymentLocation)


def http_error(e: InfrastructureError) -> errors.ApiError:
    """Ignition's status for each of its error classes: 400 the client's, 503 temporary, 500 any other."""
    message = str(e) or type(e).__name__
    if isinstance(e, _BAD_REQUEST):
        return errors.BadRequest(message)
    if isinstance(e, TemporaryInfrastructureError):
        return errors.ServiceUnavailable(message, headers={"Retry-After": RETRY_AFTER})
    return InfrastructureFailed(message)


# -- checking bodies -----------------------------------------------------------


class _Body:
    """One request body being checked: values read, problems collected as "field.path: problem"."""

    def __init__(self, request: ApiRequest) -> None:
        body = request.json()
        if not isinstance(body, dict):
            raise errors.BadRequest("invalid request: the body must be a JSON object")
        self.body = body
        self.problems: list[str] = []

    def string(self, key: str, container: Mapping[str, Any] | None = None, path: str = "") -> str:
        """A required string field ("" and a problem noted if it is missing or is not one)."""
        source, path = (self.body if container is None else container), path or key
        if key not in source:
            self.problems.append(f"{path}: required")
            return ""
        value = source[key]
        if not isinstance(value, str):
            self.problems.append(f"{path}: must be a string")
            return ""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.problems.append(f"{path}: must be valid Unicode text")
            return ""
        return value

    def ident(self, key: str) -> str:
        """A required id field: a string of 1 to `MAX_ID` characters."""
        noted = len(self.problems)
        value = self.string(key)
        if len(self.problems) == noted and not 0 < len(value) <= MAX_ID:
            self.problems.append(f"{key}: must be 1 to {MAX_ID} characters")
        return value

    def obj(self, key: str, required: bool = False, container: Mapping[str, Any] | None = None, path: str = "") -> dict[str, Any]:
        """An object field ({} when absent)."""
        source, path = (self.body if container is None else container), path or key
        if key not in source:
            if required:
                self.problems.append(f"{path}: required")
            return {}
        value = source[key]
        if not isinstance(value, dict):
            self.problems.append(f"{path}: must be an object")
            return {}
        return value

    def location(self) -> dict[str, Any]:
        location = self.obj("deploymentLocation", required=True)
        if isinstance(self.body.get("deploymentLocation"), dict):
            self.string("name", container=location, path="deploymentLocation.name")
            if "type" in location:
                self.string("type", container=location, path="deploymentLocation.type")
            self.obj("properties", container=location, path="deploymentLocation.properties")
        return location

    def done(self) -> None:
        if self.problems:
            raise errors.BadRequest("invalid request: " + "; ".join(self.problems))


def create_body(request: ApiRequest) -> CreateRequest:
    body = _Body(request)
    location = body.location()
    template, template_type = body.string("template"), body.string("templateType")
    system_properties, properties = body.obj("systemProperties"), body.obj("properties")
    body.done()
    return CreateRequest(template, template_type, location, system_properties, properties)


def delete_body(request: ApiRequest) -> tuple[str, dict[str, Any]]:
    body = _Body(request)
    location = body.location()
    infrastructure_id = body.ident("infrastructureId")
    body.done()
    return infrastructure_id, location


def query_body(request: ApiRequest) -> tuple[str, str, dict[str, Any]]:
    body = _Body(request)
    location = body.location()
    infrastructure_id, request_id = body.ident("infrastructureId"), body.ident("requestId")
    body.done()
    return infrastructure_id, request_id, location


def find_body(request: ApiRequest) -> FindRequest:
    body = _Body(request)
    location = body.location()
    template, template_type, instance_name = body.string("template"), body.string("templateType"), body.string("instanceName")
    body.done()
    return FindRequest(template, template_type, instance_name, location)


# -- OpenAPI -------------------------------------------------------------------------

_PROPERTIES = {"type": "object", "additionalProperties": True, "description": "Property name → value (plain, or Ignition's {type, value})"}
_LOCATION = {
    "type": "object", "required": ["name"],
    "description": "Where to act: name is the name (or uuid) of the cluster that runs the driver; type picks the driver",
    "properties": {"name": {"type": "string"}, "type": {"type": "string"}, "properties": {"type": "object"}},
}
_ACCEPTED = {"type": "object", "required": ["infrastructureId", "requestId"],
             "properties": {"infrastructureId": {"type": "string"}, "requestId": {"type": "string"}}}
_TASK = {
    "type": "object", "required": ["infrastructureId", "requestId", "status"],
    "properties": {
        "infrastructureId": {"type": "string"}, "requestId": {"type": "string"},
        "status": {"enum": ["IN_PROGRESS", "COMPLETE", "FAILED"]},
        "failureDetails": {"type": "object", "properties": {
            "failureCode": {"enum": ["RESOURCE_ALREADY_EXISTS", "RESOURCE_NOT_FOUND", "INFRASTRUCTURE_ERROR", "INSUFFICIENT_CAPACITY", "INTERNAL_ERROR"]},
            "description": {"type": "string"}}},
        "outputs": {"type": "object"},
    },
}
_FOUND = {"type": "object", "required": ["result"], "properties": {"result": {
    "type": "object", "nullable": True, "properties": {"infrastructureId": {"type": "string"}, "outputs": {"type": "object", "nullable": True}}}}}
_ERRORS = {
    400: 'Invalid body, invalid template, infrastructure or request not found, unreachable deployment location, or invalid request'
         ' (body {"localizedMessage", "status"}, as every error here)',
    415: "Body is not JSON",
    500: "The driver failed (InfrastructureError)",
    503: "Temporary: the driver or the cluster cannot take it now, or did not answer in time (see Retry-After)",
}
_INFRASTRUCTURE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "cluster": {"type": "string", "format": "uuid"}, "cluster_name": {"type": "string"},
        "infrastructure_id": {"type": "string"},
        "location": {"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}},
        "instance_name": {"type": "string"}, "template_type": {"type": "string"}, "template_sha256": {"type": "string"},
        "state": {"enum": list(STATES)}, "outputs": {"type": "object", "nullable": True}, "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
    },
}
_REQUEST = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"}, "operation": {"enum": ["create", "delete"]},
        "status": {"enum": ["IN_PROGRESS", "COMPLETE", "FAILED"]}, "failure_code": {"type": "string", "nullable": True},
        "failure_description": {"type": "string", "nullable": True}, "outputs": {"type": "object", "nullable": True},
        "actor": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
        "completed_at": {"type": "string", "format": "date-time", "nullable": True},
    },
}


def _state(value: str) -> str:
    if value not in STATES:
        raise ValueError(f"must be one of {', '.join(STATES)}")
    return value


def _location_name(value: str) -> str:
    if not 0 < len(value) <= 255:
        raise ValueError("must be 1 to 255 characters")
    return value


@attrs.frozen
class InfrastructureAPI:
    clusters: ClusterStore
    service: InfrastructureService

    async def _run(self, work: Any) -> Any:
        try:
            return await work
        except InfrastructureError as e:
            raise http_error(e) from None

    # -- Ignition's routes -------------------------------------------------

    async def create(self, request: ApiRequest) -> Response:
        checked = create_body(request)
        return Response(await self._run(self.service.create(checked, request.actor)), 202)

    async def delete(self, request: ApiRequest) -> Response:
        infrastructure_id, location = delete_body(request)
        return Response(await self._run(self.service.delete(infrastructure_id, location, request.actor)), 202)

    async def query(self, request: ApiRequest) -> dict[str, Any]:
        infrastructure_id, request_id, location = query_body(request)
        return dict(await self._run(self.service.query(infrastructure_id, request_id, location)))

    async def find(self, request: ApiRequest) -> dict[str, Any]:
        return dict(await self._run(self.service.find(find_body(request))))

    # -- the region's records ---------------------------------------------

    async def list_infrastructures(self, request: ApiRequest) -> dict[str, Any]:
        cluster = request.arg("cluster")
        uuid = await resolve_cluster(self.clusters, cluster) if cluster is not None else None
        state = parse_query(request, "state", _state, None)
        location = parse_query(request, "location", _location_name, None)
        page, page_size = pagination(request)
        items, total = await self.service.store.list(
            cluster_uuid=uuid, state=state, location=location, limit=page_size, offset=(page - 1) * page_size
        )
        return {"items": items, "page": page, "page_size": page_size, "total": total}

    async def get_infrastructure(self, request: ApiRequest) -> dict[str, Any]:
        if "\x00" in request.params["cluster"]:  # a percent-encoded NUL; PostgreSQL text cannot hold it
            raise errors.BadRequest("invalid cluster", details={"cluster": "give the cluster's uuid or name"})
        uuid = await resolve_cluster(self.clusters, request.params["cluster"])
        infrastructure_id = request.params["id"]
        found = None if "\x00" in infrastructure_id else await self.service.store.get(uuid, infrastructure_id)
        if found is None:
            raise errors.NotFound(f"no infrastructure {infrastructure_id} on cluster {uuid}", details={"cluster": uuid})
        return found

    def routes(self) -> list[Route]:
        ignition: _IgnitionRoute = {
            "tags": ["infrastructure"], "error_body": ignition_error_body, "error_schema": IGNITION_ERROR_SCHEMA
        }
        return [
            Route("POST", "/api/infrastructure/create", self.create,
                  "Create infrastructure from a template at a deployment location (Ignition); completion is a task event",
                  role=ADMIN, **ignition,
                  request_body={"type": "object", "required": ["deploymentLocation", "template", "templateType"], "properties": {
                      "deploymentLocation": _LOCATION, "template": {"type": "string"}, "templateType": {"type": "string"},
                      "systemProperties": _PROPERTIES, "properties": _PROPERTIES}},
                  response_schema=_ACCEPTED, responses={202: "Accepted by the location's driver", **_ERRORS}),
            Route("POST", "/api/infrastructure/query", self.query,
                  "Where a create or delete request stands, as the region last heard from the cluster (Ignition)",
                  role=READ, **ignition,
                  request_body={"type": "object", "required": ["infrastructureId", "requestId", "deploymentLocation"], "properties": {
                      "infrastructureId": {"type": "string"}, "requestId": {"type": "string"}, "deploymentLocation": _LOCATION}},
                  response_schema=_TASK,
                  responses={200: "The task", 400: 'Invalid body, or no such infrastructure at that location, or no such request'
                                                  ' (body {"localizedMessage", "status"})', 415: "Body is not JSON"}),
            Route("POST", "/api/infrastructure/delete", self.delete,
                  "Delete infrastructure at a deployment location (Ignition); completion is a task event",
                  role=ADMIN, **ignition,
                  request_body={"type": "object", "required": ["infrastructureId", "deploymentLocation"], "properties": {
                      "infrastructureId": {"type": "string"}, "deploymentLocation": _LOCATION}},
                  response_schema=_ACCEPTED, responses={202: "Accepted by the location's driver", **_ERRORS}),
            Route("POST", "/api/infrastructure/find", self.find,
                  "Find existing infrastructure by instance name at a deployment location (Ignition)",
                  role=READ, **ignition,
                  request_body={"type": "object", "required": ["deploymentLocation", "template", "templateType", "instanceName"], "properties": {
                      "deploymentLocation": _LOCATION, "template": {"type": "string"}, "templateType": {"type": "string"},
                      "instanceName": {"type": "string"}}},
                  response_schema=_FOUND, responses={200: "The result, or null when nothing matches", **_ERRORS}),
            Route("GET", "/api/v1/infrastructures", self.list_infrastructures, "Infrastructure the region has records of, oldest first",
                  tags=["infrastructure"],
                  query=[{"name": "cluster", "in": "query", "schema": {"type": "string"}, "description": "uuid or name"},
                         {"name": "state", "in": "query", "schema": {"enum": list(STATES)}},
                         {"name": "location", "in": "query", "schema": {"type": "string"}, "description": "deployment location name"},
                         {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                         {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                  response_schema={"type": "object", "properties": {
                      "items": {"type": "array", "items": _INFRASTRUCTURE}, "page": {"type": "integer"},
                      "page_size": {"type": "integer"}, "total": {"type": "integer"}}},
                  responses={200: "A page of infrastructure", 400: "Bad query parameter or ambiguous cluster name", 404: "No such cluster"}),
            Route("GET", "/api/v1/infrastructures/{cluster}/{id}", self.get_infrastructure,
                  "One infrastructure and its create/delete requests", tags=["infrastructure"],
                  response_schema={**_INFRASTRUCTURE, "properties": {**_INFRASTRUCTURE["properties"],
                                                                     "requests": {"type": "array", "items": _REQUEST}}},
                  responses={200: "The infrastructure", 400: "Malformed or ambiguous cluster", 404: "No such cluster or infrastructure"}),
        ]

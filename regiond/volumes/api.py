"""
The volumes API: CloudStack (OSSEA) configuration per cluster, in the
seed's unified shape (``POST /api/v1/ossea/config``) and as REST under
``/api/v1/clusters/{uuid}/cloudstack``; and migration volume jobs.
"""

from __future__ import annotations

from typing import Any

import attrs

from regiond.api import errors
from regiond.api.body import boolean, read_body
from regiond.api.params import pagination, resolve_cluster, true_or_false
from regiond.api.router import ApiRequest, Response, Route, parse_query
from regiond.api.rpcerrors import api_error_for
from regiond.clusters import ClusterStore
from regiond.tokens import ADMIN
from regiond.volumes.config import ConfigInvalid, check_configuration
from regiond.volumes.service import JobBusy, JobNotFound, VolumeService, check_disks, check_job_id
from regiond.volumes.store import JobExists
from rpc.errors import RPCError

__all__ = ["VolumesAPI"]

_CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "cluster": {"type": "string", "description": "uuid or name of the cluster (site) it is for"},
        "name": {"type": "string"}, "api_url": {"type": "string", "format": "uri"},
        "api_key": {"type": "string", "writeOnly": True}, "secret_key": {"type": "string", "writeOnly": True},
        "domain": {"type": "string", "default": "/"}, "zone": {"type": "string"},
        "disk_offering": {"type": "string"}, "oma_vm_id": {"type": "string", "format": "uuid"},
    },
}
_CLUSTER_ERRORS = {502: "The cluster or its CloudStack failed", 503: "The cluster is not connected (see Retry-After)", 504: "The cluster did not answer in time"}


@attrs.frozen
class VolumesAPI:
    clusters: ClusterStore
    service: VolumeService

    async def _cluster(self, ref: Any) -> str:
        return await resolve_cluster(self.clusters, ref)

    async def _rpc(self, work: Any, cluster: str) -> Any:
        try:
            return await work
        except RPCError as e:
            raise api_error_for(e, cluster) from None

    # -- configuration -------------------------------------------------------

    async def _create(self, cluster: str, body: Any, actor: str) -> Response:
        config = _checked(body, partial=False)
        if await self.service.configs.get(cluster) is not None:
            raise errors.Conflict(f"cluster {cluster} already has a CloudStack configuration; update it")
        if await self.service.configs.find_by_name(config["name"]) is not None:
            raise errors.Conflict(f"a configuration named {config['name']!r} exists", details={"name": "already used"})
        created = await self.service.configs.create(cluster, config, actor)
        return Response({"configuration": created, "applied": await self.service.push_config(cluster)}, 201)

    async def _update(self, cluster: str, body: Any, actor: str) -> dict[str, Any]:
        changes = _checked(body, partial=True)
        if "name" in changes:
            other = await self.service.configs.find_by_name(changes["name"])
            if other is not None and other["cluster"] != cluster:
                raise errors.Conflict(f"a configuration named {changes['name']!r} exists", details={"name": "already used"})
        updated = await self.service.configs.update(cluster, changes, actor)
        if updated is None:
            raise errors.NotFound(f"cluster {cluster} has no CloudStack configuration")
        return {"configuration": updated, "applied": await self.service.push_config(cluster)}

    async def _get(self, cluster: str) -> dict[str, Any]:
        config = await self.service.configs.get(cluster)
        if config is None:
            raise errors.NotFound(f"cluster {cluster} has no CloudStack configuration")
        return {"configuration": config}

    async def _delete(self, cluster: str, actor: str) -> dict[str, Any]:
        if not await self.service.configs.delete(cluster, actor):
            raise errors.NotFound(f"cluster {cluster} has no CloudStack configuration")
        return {"deleted": True, "applied": await self.service.push_config(cluster)}

    async def _test(self, cluster: str) -> dict[str, Any]:
        if await self.service.configs.get(cluster) is None:
            raise errors.NotFound(f"cluster {cluster} has no CloudStack configuration")
        return {"cluster": cluster, **await self._rpc(self.service.test(cluster), cluster)}

    async def unified(self, request: ApiRequest) -> Any:
        """The seed's single endpoint: ``{"action": ..., "configuration": {...}}``."""
        body = request.json()
        if not isinstance(body, dict) or set(body) - {"action", "configuration"}:
            raise errors.BadRequest("body must be {\"action\": ..., \"configuration\": {...}}")
        action = body.get("action")
        if action not in ("create", "update", "delete", "get", "list", "test"):
            raise errors.BadRequest("invalid action", details={"action": "one of create, update, delete, get, list, test"})
        if action in ("create", "update", "delete", "test") and request.token and request.token["role"] != ADMIN:
            raise errors.Forbidden(f"{action} needs an admin token")
        if action == "list":
            return {"configurations": await self.service.configs.list()}
        configuration = body.get("configuration")
        if not isinstance(configuration, dict):
            raise errors.BadRequest("configuration is required", details={"configuration": "an object naming the cluster (cluster) or the configuration (name)"})
        cluster = await self._target(configuration, create=action == "create")
        rest = {k: v for k, v in configuration.items() if k != "cluster"}
        if action == "create":
            return await self._create(cluster, rest, request.actor)
        if action == "update":
            return await self._update(cluster, rest, request.actor)
        if action == "get":
            return await self._get(cluster)
        if action == "delete":
            return await self._delete(cluster, request.actor)
        return await self._test(cluster)

    async def _target(self, configuration: dict[str, Any], create: bool) -> str:
        if "cluster" in configuration:
            return await self._cluster(configuration["cluster"])
        if create:
            raise errors.BadRequest("which cluster is it for?", details={"cluster": "required"})
        name = configuration.get("name")
        found = await self.service.configs.find_by_name(name) if isinstance(name, str) else None
        if found is None:
            raise errors.NotFound("no such configuration", details={"name": name if isinstance(name, str) else "give cluster or name"})
        return str(found["cluster"])

    async def rest_get(self, request: ApiRequest) -> dict[str, Any]:
        return await self._get(await self._cluster(request.params["uuid"]))

    async def rest_put(self, request: ApiRequest) -> Any:
        cluster = await self._cluster(request.params["uuid"])
        body = request.json()
        if await self.service.configs.get(cluster) is None:
            return await self._create(cluster, body, request.actor)
        return await self._update(cluster, body, request.actor)

    async def rest_delete(self, request: ApiRequest) -> dict[str, Any]:
        return await self._delete(await self._cluster(request.params["uuid"]), request.actor)

    async def rest_test(self, request: ApiRequest) -> dict[str, Any]:
        read_body(request, {})
        return await self._test(await self._cluster(request.params["uuid"]))

    async def reconcile(self, request: ApiRequest) -> dict[str, Any]:
        cluster = await self._cluster(request.params["uuid"])
        body = read_body(request, {"clean": (boolean, False)})
        return {"cluster": cluster, **await self._rpc(self.service.reconcile(cluster, body["clean"]), cluster)}

    # -- jobs --------------------------------------------------------------

    async def create_job(self, request: ApiRequest) -> Response:
        body = read_body(request, {"cluster": (lambda v: v, None), "job_id": (check_job_id, None), "disks": (check_disks, None)},
                         required=("cluster", "job_id", "disks"))
        cluster = await self._cluster(body["cluster"])
        try:
            job = await self._rpc(self.service.prepare(cluster, body["job_id"], body["disks"], request.actor), cluster)
        except JobExists as e:
            raise errors.Conflict(str(e), details={"job_id": body["job_id"]}) from None
        return Response(job, 202)

    async def get_job(self, request: ApiRequest) -> dict[str, Any]:
        job = await self.service.jobs.get(request.params["job_id"])
        if job is None:
            raise errors.NotFound(f"no volume job {request.params['job_id']}")
        return job

    async def list_jobs(self, request: ApiRequest) -> dict[str, Any]:
        cluster = request.arg("cluster")
        uuid = await self._cluster(cluster) if cluster is not None else None
        state = request.arg("state")
        page, page_size = pagination(request)
        items, total = await self.service.jobs.list(uuid, state, page_size, (page - 1) * page_size)
        return {"items": items, "page": page, "page_size": page_size, "total": total}

    async def delete_job(self, request: ApiRequest) -> Response:
        keep = parse_query(request, "keep", true_or_false, False)
        job_id = request.params["job_id"]
        try:
            job = await self.service.cleanup(job_id, keep, request.actor)
        except JobNotFound:
            raise errors.NotFound(f"no volume job {job_id}") from None
        except JobBusy as e:
            raise errors.Conflict(str(e)) from None
        except RPCError as e:
            found = await self.service.jobs.get(job_id)
            raise api_error_for(e, found["cluster"] if found else "") from None
        return Response(job, 202)

    def routes(self) -> list[Route]:
        config_body = {"type": "object", "properties": {"action": {"enum": ["create", "update", "delete", "get", "list", "test"]},
                                                       "configuration": _CONFIG_SCHEMA}}
        job_schema = {"$ref": "#/components/schemas/VolumeJob"}
        return [
            Route("POST", "/api/v1/ossea/config", self.unified, "OSSEA/CloudStack configuration: create, update, delete, get, list or test",
                  tags=["volumes"], request_body=config_body,
                  responses={200: "Done", 201: "Created", 400: "Invalid action or configuration (field errors)", 403: "Changing needs an admin token",
                             404: "No such cluster or configuration", 409: "Already configured, or name in use", 415: "Body is not JSON", **_CLUSTER_ERRORS}),
            Route("GET", "/api/v1/clusters/{uuid}/cloudstack", self.rest_get, "The cluster's CloudStack configuration (secrets masked)",
                  tags=["volumes"], responses={200: "The configuration", 400: "Ambiguous cluster", 404: "No such cluster or configuration"}),
            Route("PUT", "/api/v1/clusters/{uuid}/cloudstack", self.rest_put, "Create or update the cluster's CloudStack configuration",
                  role=ADMIN, tags=["volumes"], request_body=_CONFIG_SCHEMA,
                  responses={200: "Updated", 201: "Created", 400: "Field errors", 404: "No such cluster", 409: "Name in use", 415: "Body is not JSON"}),
            Route("DELETE", "/api/v1/clusters/{uuid}/cloudstack", self.rest_delete, "Remove the cluster's CloudStack configuration",
                  role=ADMIN, tags=["volumes"], responses={200: "Removed", 400: "Ambiguous cluster", 404: "No such cluster or configuration"}),
            Route("POST", "/api/v1/clusters/{uuid}/cloudstack/test", self.rest_test, "Test the cluster's CloudStack connection, check by check",
                  role=ADMIN, tags=["volumes"], responses={200: "The checks", 400: "Bad body", 404: "No such cluster or configuration", 415: "Body is not JSON", **_CLUSTER_ERRORS}),
            Route("POST", "/api/v1/clusters/{uuid}/cloudstack/reconcile", self.reconcile, "Find (and optionally clean) volumes of jobs the region does not track",
                  role=ADMIN, tags=["volumes"], request_body={"type": "object", "properties": {"clean": {"type": "boolean", "default": False}}},
                  responses={200: "Orphans found and cleaned", 400: "Bad body", 404: "No such cluster", 409: "No CloudStack configured", 415: "Body is not JSON", **_CLUSTER_ERRORS}),
            Route("POST", "/api/v1/volume-jobs", self.create_job, "Prepare a migration job's volumes: create, attach, mount", role=ADMIN, tags=["volumes"],
                  request_body={"type": "object", "required": ["cluster", "job_id", "disks"], "properties": {
                      "cluster": {"type": "string"}, "job_id": {"type": "string"},
                      "disks": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "size_gb": {"type": "integer"}}}}}},
                  response_schema=job_schema,
                  responses={202: "Accepted; per-disk progress in GET and as events", 400: "Field errors", 404: "No such cluster",
                             409: "The job exists, or no CloudStack configured", 415: "Body is not JSON", **_CLUSTER_ERRORS}),
            Route("GET", "/api/v1/volume-jobs", self.list_jobs, "List volume jobs", tags=["volumes"],
                  query=[{"name": n, "in": "query", "schema": {"type": "string"}} for n in ("cluster", "state", "page", "page_size")],
                  responses={200: "A page of jobs", 400: "Bad query parameter", 404: "No such cluster"}),
            Route("GET", "/api/v1/volume-jobs/{job_id}", self.get_job, "A volume job: per-disk state, device, mount point, errors", tags=["volumes"],
                  response_schema=job_schema, responses={200: "The job", 404: "No such job"}),
            Route("DELETE", "/api/v1/volume-jobs/{job_id}", self.delete_job, "Clean up a job's volumes: unmount, detach, delete (or keep)",
                  role=ADMIN, tags=["volumes"], query=[{"name": "keep", "in": "query", "schema": {"type": "boolean", "default": False}}],
                  response_schema=job_schema,
                  responses={202: "Accepted", 400: "Bad keep", 404: "No such job", 409: "The job is busy or already cleaned", **_CLUSTER_ERRORS}),
        ]


def _checked(body: Any, partial: bool) -> dict[str, Any]:
    try:
        config = check_configuration(body, partial=partial)
    except ConfigInvalid as e:
        raise errors.BadRequest("invalid configuration", details=e.problems) from None
    config.pop("cluster", None)
    return config

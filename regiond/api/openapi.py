"""The OpenAPI 3 document, generated from the route table it describes."""

from __future__ import annotations

from typing import Any, Sequence

from regiond.api.router import Response, Route

__all__ = ["openapi_document", "openapi_route"]

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}

CLUSTER_SCHEMA = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "version": {"type": "string"},
        "capabilities": {"type": "array", "items": {"type": "string"}},
        "connected": {"type": "boolean"},
        "connections": {"type": "integer"},
        "first_seen": {"type": "string", "format": "date-time"},
        "last_seen": {"type": "string", "format": "date-time"},
    },
}


MACHINE_SCHEMA = {
    "type": "object",
    "properties": {
        "cluster_uuid": {"type": "string", "format": "uuid"},
        "cluster_name": {"type": "string"},
        "system_id": {"type": "string"},
        "hostname": {"type": "string"},
        "status": {"type": "string"},
        "status_code": {"type": "integer", "nullable": True},
        "power_state": {"type": "string"},
        "power_type": {"type": "string"},
        "architecture": {"type": "string"},
        "cpu_count": {"type": "integer"},
        "memory_mb": {"type": "integer"},
        "storage_mb": {"type": "integer"},
        "zone": {"type": "string"},
        "pool": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ip_addresses": {"type": "array", "items": {"type": "string"}},
        "macs": {"type": "array", "items": {"type": "string"}},
        "owner": {"type": "string"},
        "osystem": {"type": "string"},
        "distro_series": {"type": "string"},
        "missing": {"type": "boolean"},
        "first_seen": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "type": {"type": "string"},
        "actor": {"type": "string"},
        "cluster_uuid": {"type": "string", "nullable": True},
        "subject": {"type": "string"},
        "outcome": {"type": "string"},
        "data": {"type": "object"},
    },
}


VOLUME_JOB_SCHEMA = {
    "type": "object",
    "properties": {
        "job_id": {"type": "string"},
        "cluster": {"type": "string", "format": "uuid"},
        "state": {"enum": ["preparing", "prepared", "failed", "cleaning", "cleaned", "cleanup_failed"]},
        "keep": {"type": "boolean"},
        "error": {"type": "string"},
        "undone": {"type": "array", "items": {}},
        "disks": {"type": "array", "items": {"type": "object", "properties": {
            "disk_name": {"type": "string"}, "size_gb": {"type": "integer"}, "state": {"type": "string"},
            "volume_id": {"type": "string"}, "device": {"type": "string"}, "mount_point": {"type": "string"}, "error": {"type": "string"},
        }}},
    },
}


def openapi_document(routes: Sequence[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.template.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "tags": list(route.tags),
            "responses": {},
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.pattern.groupindex
        ]
        params += [dict(q) for q in route.query]
        if params:
            operation["parameters"] = params
        if route.request_body is not None:
            operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": dict(route.request_body)}}}
        if route.role is not None:
            operation["security"] = [{"bearer": []}]
            operation["x-role"] = route.role
        elif route.security_scheme is not None:
            operation["security"] = [{route.security_scheme: []}]
            operation["x-role"] = "signature"
        for status, description in sorted(route.all_responses().items()):
            if 200 <= status < 300:
                schema = route.response_schema
            else:
                schema = route.error_schemas.get(status) or route.error_schema or {"$ref": "#/components/schemas/Error"}
            entry: dict[str, Any] = {"description": description}
            if schema is not None:
                entry["content"] = {"application/json": {"schema": dict(schema)}}
            operation["responses"][str(status)] = entry
        paths.setdefault(route.template, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "Outpost region API", "version": version},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "webhookSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Hub-Signature-256",
                    "description": "sha256=<hex HMAC-SHA256 of the raw body with the region's webhook secret>",
                },
            },
            "schemas": {"Error": ERROR_SCHEMA, "Cluster": CLUSTER_SCHEMA, "Machine": MACHINE_SCHEMA, "Event": EVENT_SCHEMA,
                        "VolumeJob": VOLUME_JOB_SCHEMA},
        },
    }


def openapi_route(routes: Sequence[Route], version: str) -> Route:
    """The route serving the document for `routes` (itself included)."""
    holder: list[dict[str, Any]] = []

    async def serve(request: Any) -> Response:
        return Response(holder[0])

    route = Route("GET", "/api/openapi.json", serve, "This document", role=None, responses={200: "The OpenAPI document"}, tags=["meta"])
    holder.append(openapi_document([*routes, route], version))
    return route

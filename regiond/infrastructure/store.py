"""
Infrastructure and its create/delete requests, as the region records them.

The region keeps its own record of what it asked each cluster to do so
that ``/api/infrastructure/query`` answers while the cluster is away, and
so completions can be de-duplicated: a cluster reports each completion
until it is acknowledged, so the same report may arrive more than once,
and it may even arrive before the region has written down the request it
completes (the driver finished while the API call was still returning, or
the region crashed in between).  Every write that touches one
infrastructure takes a transaction-scoped advisory lock on it first, so the
API's insert and a report for the same infrastructure never interleave.

Writes record their event in the same transaction (`regiond.events`), so an
event exists exactly when its change does.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from regiond import events
from regiond.db import Database, Json, Transaction

__all__ = [
    "InfrastructureStore", "Location", "TaskReport", "ReportMismatch",
    "STATES", "REQUEST_STATUSES", "OPERATIONS", "IN_PROGRESS", "COMPLETE", "FAILED", "final_state",
]

IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"
#: A request's status, as Ignition names them.
REQUEST_STATUSES = (IN_PROGRESS, COMPLETE, FAILED)
OPERATIONS = ("create", "delete")
#: An infrastructure's state in the region's record (migration 4 checks the same list).
STATES = ("creating", "created", "create_failed", "deleting", "deleted", "delete_failed")

#: The advisory lock class of per-infrastructure locks (two-key form: its own key space).
_LOCK_CLASS = 0x1F5A

_FINAL = {
    ("create", COMPLETE): "created", ("create", FAILED): "create_failed",
    ("delete", COMPLETE): "deleted", ("delete", FAILED): "delete_failed",
}
_STARTED = {"create": "creating", "delete": "deleting"}


def final_state(operation: str, status: str) -> str:
    """The infrastructure's state once an `operation` request ends with `status`."""
    return _FINAL[(operation, status)]


class ReportMismatch(Exception):
    """A report contradicts the request the region recorded (another infrastructure or operation)."""


@attrs.frozen
class Location:
    """The part of a deployment location the region keeps (never its properties: they may hold credentials)."""

    name: str
    type: str = ""


@attrs.frozen
class TaskReport:
    """A finished (or, read back, any) request in Ignition's terms."""

    request_id: str
    infrastructure_id: str
    status: str
    failure_code: str | None = None
    failure_description: str | None = None
    outputs: Mapping[str, Any] | None = None

    def to_event(self) -> dict[str, Any]:
        """Ignition's task event: ``{requestId, infrastructureId, status, failureDetails?, outputs?}``."""
        event: dict[str, Any] = {"requestId": self.request_id, "infrastructureId": self.infrastructure_id, "status": self.status}
        if self.failure_code is not None:
            event["failureDetails"] = {"failureCode": self.failure_code, "description": self.failure_description or ""}
        if self.outputs is not None:
            event["outputs"] = dict(self.outputs)
        return event


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _infrastructure(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "cluster": row["cluster_uuid"],
        "cluster_name": row["cluster_name"],
        "infrastructure_id": row["id"],
        "location": {"name": row["location_name"], "type": row["location_type"]},
        "instance_name": row["instance_name"],
        "template_type": row["template_type"],
        "template_sha256": row["template_sha256"],
        "state": row["state"],
        "outputs": row["outputs"],
        "created_by": row["created_by"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def _request(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "request_id": row["request_id"],
        "operation": row["operation"],
        "status": row["status"],
        "failure_code": row["failure_code"],
        "failure_description": row["failure_description"],
        "outputs": row["outputs"],
        "actor": row["actor"],
        "created_at": _iso(row["created_at"]),
        "completed_at": _iso(row["completed_at"]),
    }


_SELECT = (
    "SELECT i.cluster_uuid::text AS cluster_uuid, c.name AS cluster_name, i.id, i.location_name, i.location_type,"
    " i.instance_name, i.template_type, i.template_sha256, i.state, i.outputs, i.created_by, i.created_at, i.updated_at"
    " FROM infrastructures i JOIN clusters c ON c.uuid = i.cluster_uuid"
)
_REQUESTS = (
    "SELECT request_id, operation, status, failure_code, failure_description, outputs, actor, created_at, completed_at"
    " FROM infrastructure_requests"
)


async def _lock(tx: Transaction, cluster_uuid: str, infrastructure_id: str) -> None:
    """Serialise every write about one infrastructure (held until the transaction ends)."""
    await tx.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    await tx.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, f"{cluster_uuid}/{infrastructure_id}"))


@attrs.frozen
class InfrastructureStore:
    db: Database

    async def create_accepted(
        self,
        cluster_uuid: str,
        infrastructure_id: str,
        request_id: str,
        location: Location,
        *,
        instance_name: str,
        template_type: str,
        template_sha256: str,
        actor: str,
    ) -> None:
        """Record a create the cluster accepted: the infrastructure (creating) and its request (IN_PROGRESS)."""

        async def work(tx: Transaction) -> None:
            await _lock(tx, cluster_uuid, infrastructure_id)
            reported = await tx.fetchone(
                "SELECT status FROM infrastructure_requests WHERE cluster_uuid = %s AND request_id = %s", (cluster_uuid, request_id)
            )
            if reported is None:
                # A driver may hand out an id again (e.g. after a delete): the record starts over.
                await tx.execute(
                    "INSERT INTO infrastructures (cluster_uuid, id, location_name, location_type, instance_name, template_type,"
                    " template_sha256, state, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, 'creating', %s)"
                    " ON CONFLICT (cluster_uuid, id) DO UPDATE SET location_name = EXCLUDED.location_name,"
                    " location_type = EXCLUDED.location_type, instance_name = EXCLUDED.instance_name,"
                    " template_type = EXCLUDED.template_type, template_sha256 = EXCLUDED.template_sha256, state = 'creating',"
                    " outputs = NULL, created_by = EXCLUDED.created_by, created_at = now(), updated_at = now()",
                    (cluster_uuid, infrastructure_id, location.name, location.type, instance_name, template_type, template_sha256, actor),
                )
                await tx.execute(
                    "INSERT INTO infrastructure_requests (cluster_uuid, request_id, infrastructure_id, operation, status, actor)"
                    " VALUES (%s, %s, %s, 'create', 'IN_PROGRESS', %s)",
                    (cluster_uuid, request_id, infrastructure_id, actor),
                )
            else:
                # Its completion got here first and wrote what it knew; add what only the API call knows.
                await tx.execute(
                    "UPDATE infrastructures SET location_type = %s, instance_name = %s, template_type = %s, template_sha256 = %s,"
                    " created_by = %s, updated_at = now() WHERE cluster_uuid = %s AND id = %s",
                    (location.type, instance_name, template_type, template_sha256, actor, cluster_uuid, infrastructure_id),
                )
                await tx.execute(
                    "UPDATE infrastructure_requests SET actor = %s WHERE cluster_uuid = %s AND request_id = %s",
                    (actor, cluster_uuid, request_id),
                )
            await events.record(
                tx, "infrastructure.create.requested", actor=actor, cluster_uuid=cluster_uuid, subject=infrastructure_id,
                outcome="accepted", data={"requestId": request_id, "infrastructureId": infrastructure_id,
                                          "location": location.name, "locationType": location.type,
                                          "templateType": template_type, "templateSha256": template_sha256, "instanceName": instance_name},
            )

        await self.db.transaction(work)

    async def delete_accepted(self, cluster_uuid: str, infrastructure_id: str, request_id: str, location: Location, actor: str) -> None:
        """Record a delete the cluster accepted: the request (IN_PROGRESS), and the infrastructure as deleting."""

        async def work(tx: Transaction) -> None:
            await _lock(tx, cluster_uuid, infrastructure_id)
            reported = await tx.fetchone(
                "SELECT status FROM infrastructure_requests WHERE cluster_uuid = %s AND request_id = %s", (cluster_uuid, request_id)
            )
            if reported is None:
                # Infrastructure the region never saw created (made before it kept records) is recorded now.
                await tx.execute(
                    "INSERT INTO infrastructures (cluster_uuid, id, location_name, location_type, state)"
                    " VALUES (%s, %s, %s, %s, 'deleting')"
                    " ON CONFLICT (cluster_uuid, id) DO UPDATE SET state = 'deleting', updated_at = now()",
                    (cluster_uuid, infrastructure_id, location.name, location.type),
                )
                await tx.execute(
                    "INSERT INTO infrastructure_requests (cluster_uuid, request_id, infrastructure_id, operation, status, actor)"
                    " VALUES (%s, %s, %s, 'delete', 'IN_PROGRESS', %s)",
                    (cluster_uuid, request_id, infrastructure_id, actor),
                )
            else:
                await tx.execute(
                    "UPDATE infrastructure_requests SET actor = %s WHERE cluster_uuid = %s AND request_id = %s",
                    (actor, cluster_uuid, request_id),
                )
            await events.record(
                tx, "infrastructure.delete.requested", actor=actor, cluster_uuid=cluster_uuid, subject=infrastructure_id,
                outcome="accepted", data={"requestId": request_id, "infrastructureId": infrastructure_id,
                                          "location": location.name, "locationType": location.type},
            )

        await self.db.transaction(work)

    async def complete(self, cluster_uuid: str, report: TaskReport, operation: str, location: Location) -> bool:
        """
        Record a finished request, once: False (and nothing written) if it
        was already recorded as finished.  A request the region has no
        record of is recorded from the report, with its infrastructure if
        that is unknown too.  The infrastructure takes the request's final
        state unless a later request about it exists (a late report must
        not undo a newer delete).  Raises `ReportMismatch` if the report
        names another infrastructure or operation than the recorded request.
        """
        infrastructure_id, request_id = report.infrastructure_id, report.request_id
        failure = (report.failure_code, report.failure_description)
        outputs = None if report.outputs is None else Json(dict(report.outputs))

        async def work(tx: Transaction) -> bool:
            await _lock(tx, cluster_uuid, infrastructure_id)
            known = await tx.fetchone(
                "SELECT infrastructure_id, operation, status FROM infrastructure_requests WHERE cluster_uuid = %s AND request_id = %s",
                (cluster_uuid, request_id),
            )
            if known is not None:
                if known["infrastructure_id"] != infrastructure_id or known["operation"] != operation:
                    raise ReportMismatch(
                        f"request {request_id} is a {known['operation']} of {known['infrastructure_id']!r},"
                        f" not a {operation} of {infrastructure_id!r}"
                    )
                if known["status"] != IN_PROGRESS:
                    return False
                await tx.execute(
                    "UPDATE infrastructure_requests SET status = %s, failure_code = %s, failure_description = %s, outputs = %s,"
                    " completed_at = now() WHERE cluster_uuid = %s AND request_id = %s",
                    (report.status, *failure, outputs, cluster_uuid, request_id),
                )
            else:
                await tx.execute(
                    "INSERT INTO infrastructures (cluster_uuid, id, location_name, location_type, state, created_by)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (cluster_uuid, id) DO NOTHING",
                    (cluster_uuid, infrastructure_id, location.name, location.type, _STARTED[operation], f"cluster:{cluster_uuid}"),
                )
                await tx.execute(
                    "INSERT INTO infrastructure_requests (cluster_uuid, request_id, infrastructure_id, operation, status,"
                    " failure_code, failure_description, outputs, actor, completed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
                    (cluster_uuid, request_id, infrastructure_id, operation, report.status, *failure, outputs, f"cluster:{cluster_uuid}"),
                )
            await tx.execute(
                "UPDATE infrastructures i SET state = %s,"
                " outputs = CASE WHEN %s = 'create' THEN coalesce(%s, i.outputs) ELSE i.outputs END, updated_at = now()"
                " WHERE i.cluster_uuid = %s AND i.id = %s AND NOT EXISTS ("
                "   SELECT 1 FROM infrastructure_requests later, infrastructure_requests this"
                "    WHERE this.cluster_uuid = i.cluster_uuid AND this.request_id = %s"
                "      AND later.cluster_uuid = i.cluster_uuid AND later.infrastructure_id = i.id"
                "      AND later.created_at > this.created_at)",
                (final_state(operation, report.status), operation, outputs, cluster_uuid, infrastructure_id, request_id),
            )
            await events.record(
                tx, "infrastructure.task", actor=f"cluster:{cluster_uuid}", cluster_uuid=cluster_uuid, subject=infrastructure_id,
                outcome=report.status, data=report.to_event(),
            )
            return True

        return await self.db.transaction(work)

    async def state(self, cluster_uuid: str, infrastructure_id: str) -> str | None:
        """The recorded state of the infrastructure, or None if the region has no record of it."""
        row = await self.db.fetchone(
            "SELECT state FROM infrastructures WHERE cluster_uuid = %s AND id = %s", (cluster_uuid, infrastructure_id)
        )
        return None if row is None else str(row["state"])

    async def known_at(self, location_name: str, infrastructure_id: str) -> bool:
        """Whether the region has a record of that infrastructure at that location name."""
        row = await self.db.fetchone(
            "SELECT 1 AS found FROM infrastructures WHERE id = %s AND location_name = %s LIMIT 1", (infrastructure_id, location_name)
        )
        return row is not None

    async def task(self, location_name: str, infrastructure_id: str, request_id: str) -> TaskReport | None:
        """The request as recorded, looked up the way Ignition's query names it; None if there is none."""
        row = await self.db.fetchone(
            "SELECT r.request_id, r.infrastructure_id, r.status, r.failure_code, r.failure_description, r.outputs"
            " FROM infrastructure_requests r JOIN infrastructures i ON i.cluster_uuid = r.cluster_uuid AND i.id = r.infrastructure_id"
            " WHERE i.id = %s AND i.location_name = %s AND r.request_id = %s ORDER BY r.created_at DESC LIMIT 1",
            (infrastructure_id, location_name, request_id),
        )
        if row is None:
            return None
        return TaskReport(row["request_id"], row["infrastructure_id"], row["status"], row["failure_code"],
                          row["failure_description"], row["outputs"])

    async def get(self, cluster_uuid: str, infrastructure_id: str) -> dict[str, Any] | None:
        """One infrastructure with its requests, oldest first."""
        row = await self.db.fetchone(_SELECT + " WHERE i.cluster_uuid = %s AND i.id = %s", (cluster_uuid, infrastructure_id))
        if row is None:
            return None
        requests = await self.db.fetch(
            _REQUESTS + " WHERE cluster_uuid = %s AND infrastructure_id = %s ORDER BY created_at, request_id",
            (cluster_uuid, infrastructure_id),
        )
        return {**_infrastructure(row), "requests": [_request(r) for r in requests]}

    async def list(
        self, *, cluster_uuid: str | None = None, state: str | None = None, location: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of infrastructures (oldest first) matching every given filter, and the total matching."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("i.cluster_uuid", cluster_uuid), ("i.state", state), ("i.location_name", location)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self.db.fetch(
            _SELECT.replace("SELECT ", "SELECT count(*) OVER () AS total, ", 1) + where
            + " ORDER BY i.created_at, i.cluster_uuid, i.id LIMIT %s OFFSET %s",
            (*params, limit, offset),
        )
        if rows:
            total = int(rows[0]["total"])
        else:
            count = await self.db.fetchone("SELECT count(*) AS n FROM infrastructures i" + where, params)
            total = int(count["n"]) if count else 0
        return [_infrastructure(r) for r in rows], total

"""Migration volume jobs and their volumes, as the region tracks them."""

from __future__ import annotations

import builtins
import json
from typing import Any

import attrs

from regiond import events
from regiond.db import Database

__all__ = ["VolumeJobStore", "JobExists", "BUSY_STATES", "FINISHED_STATES"]

#: A job in one of these is being worked on by its cluster.
BUSY_STATES = ("preparing", "cleaning")
#: A job in one of these is over; the region stops tracking its volumes for reconciliation.
FINISHED_STATES = ("cleaned",)


class JobExists(Exception):
    pass


def _job(row: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "job_id": row["job_id"],
        "cluster": row["cluster_uuid"],
        "state": row["state"],
        "keep": row["keep"],
        "error": row["error"],
        "undone": row["undone"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "disks": [
            {k: v for k, v in {**vol, "updated_at": vol["updated_at"].isoformat()}.items() if k != "job_id"}
            for vol in volumes
        ],
    }


_JOB = "SELECT job_id, cluster_uuid::text AS cluster_uuid, state, keep, error, undone, created_at, updated_at FROM volume_jobs"
_VOLUMES = "SELECT job_id, disk_name, size_gb, state, volume_id, device, mount_point, error, updated_at FROM volumes"


@attrs.frozen
class VolumeJobStore:
    db: Database

    async def create(self, job_id: str, cluster_uuid: str, disks: list[dict[str, Any]], actor: str) -> dict[str, Any]:
        async def work(tx: Any) -> None:
            existing = await tx.fetchone("SELECT state FROM volume_jobs WHERE job_id = %s FOR UPDATE", (job_id,))
            if existing is not None:
                raise JobExists(f"job {job_id} exists ({existing['state']})")
            await tx.execute("INSERT INTO volume_jobs (job_id, cluster_uuid, state) VALUES (%s, %s, 'preparing')", (job_id, cluster_uuid))
            await tx.execute(
                "INSERT INTO volumes (job_id, disk_name, size_gb) SELECT %s, d->>'name', (d->>'size_gb')::int"
                " FROM jsonb_array_elements(%s::jsonb) d",
                (job_id, json.dumps(disks)),
            )
            await events.record(tx, "volumes.prepare.requested", actor=actor, cluster_uuid=cluster_uuid, subject=job_id,
                                outcome="accepted", data={"disks": disks})

        await self.db.transaction(work)
        job = await self.get(job_id)
        assert job is not None
        return job

    async def get(self, job_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(_JOB + " WHERE job_id = %s", (job_id,))
        if row is None:
            return None
        return _job(row, await self.db.fetch(_VOLUMES + " WHERE job_id = %s ORDER BY disk_name", (job_id,)))

    async def list(self, cluster_uuid: str | None = None, state: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        clauses, params = [], []
        if cluster_uuid:
            clauses.append("cluster_uuid = %s")
            params.append(cluster_uuid)
        if state:
            clauses.append("state = %s")
            params.append(state)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self.db.fetch(_JOB + where + " ORDER BY created_at, job_id LIMIT %s OFFSET %s", (*params, limit, offset))
        count = await self.db.fetchone("SELECT count(*) AS n FROM volume_jobs" + where, params)
        assert count is not None, "an aggregate without GROUP BY always returns one row"
        total = count["n"]
        volumes: dict[str, list[dict[str, Any]]] = {}
        if rows:
            for vol in await self.db.fetch(_VOLUMES + " WHERE job_id = ANY(%s) ORDER BY disk_name", ([r["job_id"] for r in rows],)):
                volumes.setdefault(vol["job_id"], []).append(vol)
        return [_job(r, volumes.get(r["job_id"], [])) for r in rows], int(total)

    async def transition(self, job_id: str, to: str, *, allowed_from: tuple[str, ...], keep: bool | None = None) -> str | None:
        """Move the job to `to` if it is in one of `allowed_from`; the state it was in (None: no such job)."""

        async def work(tx: Any) -> str | None:
            row = await tx.fetchone("SELECT state FROM volume_jobs WHERE job_id = %s FOR UPDATE", (job_id,))
            if row is None:
                return None
            if row["state"] in allowed_from:
                await tx.execute(
                    "UPDATE volume_jobs SET state = %s, keep = coalesce(%s, keep), error = '', updated_at = now() WHERE job_id = %s",
                    (to, keep, job_id),
                )
            return str(row["state"])

        return await self.db.transaction(work)

    async def finish(self, job_id: str, cluster_uuid: str, operation: str, outcome: str, undone: builtins.list[Any], error: str) -> bool:
        """Record how the cluster's prepare/cleanup ended; False if the job is not this cluster's."""
        state = {("prepare", "ok"): "prepared", ("prepare", "failed"): "failed",
                 ("cleanup", "ok"): "cleaned", ("cleanup", "failed"): "cleanup_failed"}.get((operation, outcome), "failed")

        async def work(tx: Any) -> bool:
            n = await tx.execute(
                "UPDATE volume_jobs SET state = %s, error = %s, undone = %s, updated_at = now() WHERE job_id = %s AND cluster_uuid = %s",
                (state, error, json.dumps(undone), job_id, cluster_uuid),
            )
            if n:
                await events.record(tx, f"volumes.{operation}", actor=f"cluster:{cluster_uuid}", cluster_uuid=cluster_uuid,
                                    subject=job_id, outcome=outcome, data={"undone": undone, "error": error, "state": state})
            return bool(n)

        return await self.db.transaction(work)

    async def fail(self, job_id: str, error: str) -> None:
        await self.db.execute("UPDATE volume_jobs SET state = 'failed', error = %s, updated_at = now() WHERE job_id = %s", (error, job_id))

    async def volume_state(self, cluster_uuid: str, job_id: str, disk_name: str, state: str, details: dict[str, Any]) -> bool:
        fields = {k: str(details[k]) for k in ("volume_id", "device", "mount_point", "error") if isinstance(details.get(k), (str, int))}

        async def work(tx: Any) -> bool:
            n = await tx.execute(
                "UPDATE volumes v SET state = %s, " + "".join(f"{k} = %s, " for k in fields) + "updated_at = now()"
                " FROM volume_jobs j WHERE v.job_id = j.job_id AND j.job_id = %s AND j.cluster_uuid = %s AND v.disk_name = %s",
                (state, *fields.values(), job_id, cluster_uuid, disk_name),
            )
            if n:
                await events.record(tx, "volume.state", actor=f"cluster:{cluster_uuid}", cluster_uuid=cluster_uuid,
                                    subject=f"{job_id}/{disk_name}", outcome="ok", data={"state": state, **fields})
            return bool(n)

        return await self.db.transaction(work)

    async def busy(self, cluster_uuid: str) -> dict[str, str]:
        """job_id → "prepare"/"cleanup" for the cluster's jobs being worked on."""
        rows = await self.db.fetch(
            "SELECT job_id, state FROM volume_jobs WHERE cluster_uuid = %s AND state = ANY(%s)", (cluster_uuid, list(BUSY_STATES))
        )
        return {r["job_id"]: ("prepare" if r["state"] == "preparing" else "cleanup") for r in rows}

    async def tracked(self, cluster_uuid: str) -> builtins.list[str]:
        rows = await self.db.fetch(
            "SELECT job_id FROM volume_jobs WHERE cluster_uuid = %s AND NOT (state = ANY(%s)) ORDER BY job_id",
            (cluster_uuid, list(FINISHED_STATES)),
        )
        return [r["job_id"] for r in rows]

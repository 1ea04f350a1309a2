"""
Machines as the region records them, keyed by (cluster, system_id).

A full inventory from a cluster is applied in one transaction: upserted with
one statement, machines no longer listed marked missing, and an event for
every status change and every machine that went missing.
"""

from __future__ import annotations

import builtins
import json
from typing import Any, Sequence

import attrs

from regiond.db import Database

__all__ = ["MachineStore", "TRANSITIONAL", "SUMMARY_FIELDS"]

#: Statuses that change on their own; machines in them are polled more often.
TRANSITIONAL = frozenset({"Commissioning", "Deploying", "Releasing", "Disk erasing", "Testing"})

#: The columns a machine summary fills (besides system_id); see clusterd.machines.summarize.
SUMMARY_FIELDS = (
    "hostname", "status", "status_code", "power_state", "power_type", "architecture", "cpu_count",
    "memory_mb", "storage_mb", "zone", "pool", "tags", "ip_addresses", "owner", "osystem", "distro_series",
)
_RECORD_TYPES = (
    "system_id text, hostname text, status text, status_code integer, power_state text, power_type text,"
    " architecture text, cpu_count integer, memory_mb bigint, storage_mb bigint, zone text, pool text,"
    " tags text[], ip_addresses text[], owner text, osystem text, distro_series text, macs jsonb"
)
_COLUMNS = "system_id, " + ", ".join(SUMMARY_FIELDS)

_SELECT = """
    SELECT m.cluster_uuid::text AS cluster_uuid, c.name AS cluster_name, m.system_id, m.hostname, m.status,
           m.status_code, m.power_state, m.power_type, m.architecture, m.cpu_count, m.memory_mb, m.storage_mb,
           m.zone, m.pool, m.tags, m.ip_addresses, m.owner, m.osystem, m.distro_series, m.missing,
           m.data->'macs' AS macs, m.first_seen, m.updated_at
      FROM machines m JOIN clusters c ON c.uuid = m.cluster_uuid
"""


def _clean(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary with list fields as lists of text (for jsonb_to_recordset) and nothing extra."""
    out = {k: summary.get(k) for k in ("system_id", *SUMMARY_FIELDS)}
    for key in ("tags", "ip_addresses"):
        out[key] = [str(v) for v in (out[key] or [])]
    out["macs"] = [str(v) for v in (summary.get("macs") or [])]
    return out


def _machine(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["macs"] = out.get("macs") or []
    out["first_seen"] = row["first_seen"].isoformat()
    out["updated_at"] = row["updated_at"].isoformat()
    return out


@attrs.frozen
class MachineStore:
    db: Database

    async def apply_inventory(self, cluster_uuid: str, machines: Sequence[dict[str, Any]]) -> dict[str, int]:
        """
        Make the cluster's machines exactly `machines` (the complete inventory).

        Returns counts: ``machines``, ``new``, ``changed`` (status changes),
        ``missing`` (newly missing), ``returned`` (missing ones seen again).
        """
        rows = [_clean(m) for m in machines]
        payload = json.dumps(rows)
        ids = [r["system_id"] for r in rows]

        async def work(tx: Any) -> dict[str, int]:
            before = {
                r["system_id"]: r
                for r in await tx.fetch(
                    "SELECT system_id, status, missing FROM machines WHERE cluster_uuid = %s FOR UPDATE", (cluster_uuid,)
                )
            }
            await tx.execute(
                f"INSERT INTO machines (cluster_uuid, {_COLUMNS}, data, missing, updated_at)"
                f" SELECT %s, {_COLUMNS}, jsonb_build_object('macs', coalesce(macs, '[]'::jsonb)), false, now()"
                f"   FROM jsonb_to_recordset(%s::jsonb) AS r({_RECORD_TYPES})"
                f" ON CONFLICT (cluster_uuid, system_id) DO UPDATE SET "
                + ", ".join(f"{f} = EXCLUDED.{f}" for f in SUMMARY_FIELDS)
                + ", data = EXCLUDED.data, missing = false,"
                " updated_at = CASE WHEN machines.status IS DISTINCT FROM EXCLUDED.status"
                "   OR machines.power_state IS DISTINCT FROM EXCLUDED.power_state OR machines.missing"
                "   THEN now() ELSE machines.updated_at END",
                (cluster_uuid, payload),
            )
            gone = await tx.fetch(
                "UPDATE machines SET missing = true, updated_at = now()"
                " WHERE cluster_uuid = %s AND NOT missing AND NOT (system_id = ANY(%s)) RETURNING system_id, hostname",
                (cluster_uuid, ids),
            )
            events = []
            for row in rows:
                old = before.get(row["system_id"])
                if old is not None and old["status"] != row["status"]:
                    events.append(("machine.status", row["system_id"], {"from": old["status"], "to": row["status"], "source": "sync"}))
            for row in gone:
                events.append(("machine.missing", row["system_id"], {"hostname": row["hostname"]}))
            returned = [r for r in rows if before.get(r["system_id"], {}).get("missing")]
            await _record_events(tx, cluster_uuid, events)
            return {
                "machines": len(rows),
                "new": sum(1 for r in rows if r["system_id"] not in before),
                "changed": sum(1 for e in events if e[0] == "machine.status"),
                "missing": len(gone),
                "returned": len(returned),
            }

        return await self.db.transaction(work)

    async def apply_update(self, cluster_uuid: str, system_id: str, fields: dict[str, Any], source: str, request_id: str = "") -> dict[str, Any] | None:
        """
        Change some of a known machine's fields (from an action's result, a
        webhook or a power report); an event records a status change.
        Returns the machine, or None if the region does not know it.
        """
        known = {k: v for k, v in fields.items() if k in SUMMARY_FIELDS and v is not None}
        if "tags" in known or "ip_addresses" in known:
            known.update({k: [str(v) for v in known[k]] for k in ("tags", "ip_addresses") if k in known})

        async def work(tx: Any) -> dict[str, Any] | None:
            old = await tx.fetchone(
                "SELECT status, power_state FROM machines WHERE cluster_uuid = %s AND system_id = %s FOR UPDATE",
                (cluster_uuid, system_id),
            )
            if old is None:
                return None
            if known:
                assignments = ", ".join(f"{k} = %s" for k in known)
                await tx.execute(
                    f"UPDATE machines SET {assignments}, missing = false, updated_at = now()"
                    " WHERE cluster_uuid = %s AND system_id = %s",
                    (*known.values(), cluster_uuid, system_id),
                )
            events = []
            if "status" in known and known["status"] != old["status"]:
                events.append(("machine.status", system_id, {"from": old["status"], "to": known["status"], "source": source, "request_id": request_id}))
            await _record_events(tx, cluster_uuid, events)
            row = await tx.fetchone(_SELECT + " WHERE m.cluster_uuid = %s AND m.system_id = %s", (cluster_uuid, system_id))
            return _machine(row) if row else None

        return await self.db.transaction(work)

    async def get(self, cluster_uuid: str, system_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(_SELECT + " WHERE m.cluster_uuid = %s AND m.system_id = %s", (cluster_uuid, system_id))
        return None if row is None else _machine(row)

    async def list(
        self,
        *,
        status: Sequence[str] = (),
        hostname: Sequence[str] = (),
        tags: Sequence[str] = (),
        zone: Sequence[str] = (),
        pool: Sequence[str] = (),
        cluster: Sequence[str] = (),
        include_missing: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of machines matching every given filter (any value of each), and the total."""
        clauses, params = [], []
        for column, values in (("m.status", status), ("m.hostname", hostname), ("m.zone", zone), ("m.pool", pool)):
            if values:
                clauses.append(f"{column} = ANY(%s)")
                params.append(list(values))
        if tags:
            clauses.append("m.tags @> %s")
            params.append(list(tags))
        if cluster:
            clauses.append("(m.cluster_uuid::text = ANY(%s) OR c.name = ANY(%s))")
            params += [list(cluster), list(cluster)]
        if not include_missing:
            clauses.append("NOT m.missing")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self.db.fetch(
            _SELECT.replace("SELECT ", "SELECT count(*) OVER () AS total, ", 1) + where
            + " ORDER BY c.name, m.hostname, m.system_id LIMIT %s OFFSET %s",
            (*params, limit, offset),
        )
        if rows:
            total = int(rows[0].pop("total"))
            for r in rows[1:]:
                r.pop("total")
        else:
            count = await self.db.fetchone(
                "SELECT count(*) AS n FROM machines m JOIN clusters c ON c.uuid = m.cluster_uuid" + where, params
            )
            total = int(count["n"]) if count else 0
        return [_machine(r) for r in rows], total

    async def known_ids(self, cluster_uuid: str | None = None) -> dict[str, builtins.list[str]]:
        """cluster uuid → system_ids of its machines that are not missing."""
        rows = await self.db.fetch(
            "SELECT cluster_uuid::text AS cluster_uuid, system_id FROM machines WHERE NOT missing"
            + (" AND cluster_uuid = %s" if cluster_uuid else "") + " ORDER BY system_id",
            (cluster_uuid,) if cluster_uuid else (),
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["cluster_uuid"], []).append(r["system_id"])
        return out

    async def transitional(self) -> dict[str, builtins.list[str]]:
        """cluster uuid → system_ids of machines in a transitional status."""
        rows = await self.db.fetch(
            "SELECT cluster_uuid::text AS cluster_uuid, system_id FROM machines WHERE NOT missing AND status = ANY(%s)",
            (sorted(TRANSITIONAL),),
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["cluster_uuid"], []).append(r["system_id"])
        return out

    async def set_power_states(self, cluster_uuid: str, states: dict[str, str]) -> None:
        if states:
            await self.db.execute(
                "UPDATE machines m SET power_state = s.value, updated_at = now()"
                " FROM jsonb_each_text(%s::jsonb) s WHERE m.cluster_uuid = %s AND m.system_id = s.key"
                " AND m.power_state IS DISTINCT FROM s.value",
                (json.dumps(states), cluster_uuid),
            )

    async def record_sync(self, cluster_uuid: str, started: float, finished: float, outcome: str, error: str = "", counts: dict[str, int] | None = None) -> None:
        counts = counts or {}
        await self.db.execute(
            "INSERT INTO maas_syncs (cluster_uuid, started_at, finished_at, outcome, error, machines, changed)"
            " VALUES (%s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s)"
            " ON CONFLICT (cluster_uuid) DO UPDATE SET started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,"
            " outcome = EXCLUDED.outcome, error = EXCLUDED.error, machines = EXCLUDED.machines, changed = EXCLUDED.changed",
            (cluster_uuid, started, finished, outcome, error, counts.get("machines", 0), counts.get("changed", 0)),
        )


async def _record_events(tx: Any, cluster_uuid: str, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    if not events:
        return
    await tx.execute(
        "INSERT INTO events (type, actor, cluster_uuid, subject, outcome, data)"
        " SELECT e->>'type', 'region', %s, e->>'subject', 'ok', e->'data' FROM jsonb_array_elements(%s::jsonb) e",
        (cluster_uuid, json.dumps([{"type": t, "subject": s, "data": d} for t, s, d in events])),
    )

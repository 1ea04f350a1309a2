"""
Clusters and region processes as the region's database records them.

Connection counts are not stored: they are counted from ``rpc_connections``
rows whose region process is alive (its heartbeat is recent), so a crashed
region process cannot leave clusters looking connected.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

import attrs

from regiond import events
from regiond.db import Database

__all__ = ["ClusterStore", "RegionProcessStore", "STALE_AFTER"]

#: A region process whose heartbeat is older than this is taken as gone.
STALE_AFTER = 90

_LIVE_CONNECTIONS = f"""
    SELECT rc.cluster_uuid, count(*) AS connections
      FROM rpc_connections rc
      JOIN region_processes rp ON rp.id = rc.region_process_id
     WHERE rp.last_seen > now() - interval '{STALE_AFTER} seconds'
     GROUP BY rc.cluster_uuid
"""

_CLUSTER_COLUMNS = """
    c.uuid::text AS uuid, c.name, c.version, c.capabilities, c.first_seen, c.last_seen,
    coalesce(live.connections, 0)::int AS connections
"""


def _cluster(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": row["uuid"],
        "name": row["name"],
        "version": row["version"],
        "capabilities": row["capabilities"],
        "connected": row["connections"] > 0,
        "connections": row["connections"],
        "first_seen": row["first_seen"].isoformat(),
        "last_seen": row["last_seen"].isoformat(),
    }


@attrs.frozen
class ClusterStore:
    db: Database

    async def connected(self, uuid: str, name: str, version: str, capabilities: list[str], region_process_id: int, peer: str) -> int:
        """Record a registered connection; returns its id."""

        async def work(tx: Any) -> int:
            await tx.execute(
                "INSERT INTO clusters (uuid, name, version, capabilities) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (uuid) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version,"
                " capabilities = EXCLUDED.capabilities, last_seen = now()",
                (uuid, name, version, json.dumps(capabilities)),
            )
            row = await tx.fetchone(
                "INSERT INTO rpc_connections (region_process_id, cluster_uuid, peer) VALUES (%s, %s, %s) RETURNING id",
                (region_process_id, uuid, peer),
            )
            await events.record(
                tx, "cluster.connected", actor=f"cluster:{uuid}", cluster_uuid=uuid, subject=name,
                outcome="ok", data={"peer": peer, "version": version, "region_process": region_process_id},
            )
            return int(row["id"])

        return await self.db.transaction(work)

    async def disconnected(self, connection_id: int, uuid: str, peer: str) -> None:
        async def work(tx: Any) -> None:
            await tx.execute("DELETE FROM rpc_connections WHERE id = %s", (connection_id,))
            await tx.execute("UPDATE clusters SET last_seen = now() WHERE uuid = %s", (uuid,))
            await events.record(
                tx, "cluster.disconnected", actor=f"cluster:{uuid}", cluster_uuid=uuid, outcome="ok", data={"peer": peer}
            )

        await self.db.transaction(work)

    async def touch(self, uuids: list[str]) -> None:
        if uuids:
            await self.db.execute("UPDATE clusters SET last_seen = now() WHERE uuid = ANY(%s::uuid[])", (uuids,))

    async def list(self, *, connected: bool | None = None, name: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of clusters (ordered by name, uuid) and the total matching."""
        where, params = self._filters(connected, name)
        rows = await self.db.fetch(
            f"SELECT {_CLUSTER_COLUMNS}, count(*) OVER () AS total FROM clusters c"
            f" LEFT JOIN ({_LIVE_CONNECTIONS}) live ON live.cluster_uuid = c.uuid"
            f" {where} ORDER BY c.name, c.uuid LIMIT %s OFFSET %s",
            (*params, limit, offset),
        )
        if rows:
            total = int(rows[0]["total"])
        else:
            count = await self.db.fetchone(
                f"SELECT count(*) AS n FROM clusters c LEFT JOIN ({_LIVE_CONNECTIONS}) live"
                f" ON live.cluster_uuid = c.uuid {where}",
                params,
            )
            total = int(count["n"]) if count else 0
        return [_cluster(r) for r in rows], total

    @staticmethod
    def _filters(connected: bool | None, name: str | None) -> tuple[str, tuple[Any, ...]]:
        clauses, params = [], []
        if connected is True:
            clauses.append("coalesce(live.connections, 0) > 0")
        elif connected is False:
            clauses.append("coalesce(live.connections, 0) = 0")
        if name is not None:
            clauses.append("c.name = %s")
            params.append(name)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)

    async def resolve(self, ref: str) -> builtins.list[str]:
        """The uuids of clusters whose uuid or name is `ref` (more than one: the name is ambiguous)."""
        rows = await self.db.fetch(
            "SELECT uuid::text AS uuid FROM clusters WHERE uuid::text = %s OR name = %s ORDER BY uuid", (ref.lower(), ref)
        )
        return [r["uuid"] for r in rows]

    async def get(self, uuid: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            f"SELECT {_CLUSTER_COLUMNS} FROM clusters c"
            f" LEFT JOIN ({_LIVE_CONNECTIONS}) live ON live.cluster_uuid = c.uuid WHERE c.uuid = %s",
            (uuid,),
        )
        return None if row is None else _cluster(row)


@attrs.frozen
class RegionProcessStore:
    """Region processes and the RPC endpoints clusters discover them by."""

    db: Database

    async def register(self, hostname: str, pid: int, rpc_host: str, rpc_port: int) -> int:
        async def work(tx: Any) -> int:
            await tx.execute(
                f"DELETE FROM region_processes WHERE last_seen < now() - interval '{STALE_AFTER} seconds'"
                " OR (hostname = %s AND pid = %s) OR (rpc_host = %s AND rpc_port = %s)",
                (hostname, pid, rpc_host, rpc_port),
            )
            row = await tx.fetchone(
                "INSERT INTO region_processes (hostname, pid, rpc_host, rpc_port) VALUES (%s, %s, %s, %s) RETURNING id",
                (hostname, pid, rpc_host, rpc_port),
            )
            await events.record(
                tx, "region.started", actor=f"region:{hostname}:{pid}", subject=f"{rpc_host}:{rpc_port}", outcome="ok"
            )
            return int(row["id"])

        return await self.db.transaction(work)

    async def heartbeat(self, process_id: int) -> None:
        await self.db.execute("UPDATE region_processes SET last_seen = now() WHERE id = %s", (process_id,))
        await self.db.execute(
            f"DELETE FROM region_processes WHERE last_seen < now() - interval '{STALE_AFTER} seconds'"
        )

    async def unregister(self, process_id: int) -> None:
        await self.db.execute("DELETE FROM region_processes WHERE id = %s", (process_id,))

    async def endpoints(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT rpc_host AS host, rpc_port AS port FROM region_processes"
            f" WHERE last_seen > now() - interval '{STALE_AFTER} seconds' ORDER BY id"
        )
        return [{"host": r["host"], "port": r["port"]} for r in rows]

"""Machine summaries for region-side tests (the shape clusterd.machines.summarize gives)."""

from __future__ import annotations

from typing import Any


def summary(system_id: str, **overrides: Any) -> dict[str, Any]:
    base = {
        "system_id": system_id,
        "hostname": f"host-{system_id}",
        "status": "Ready",
        "status_code": 4,
        "power_state": "off",
        "power_type": "ipmi",
        "architecture": "amd64/generic",
        "cpu_count": 8,
        "memory_mb": 16384,
        "storage_mb": 512000,
        "zone": "default",
        "pool": "default",
        "tags": ["virtual"],
        "ip_addresses": ["10.0.0.5"],
        "macs": ["52:54:00:00:00:01"],
        "owner": "",
        "osystem": "",
        "distro_series": "",
    }
    base.update(overrides)
    return base


async def add_cluster(db: Any, uuid: str, name: str) -> None:
    await db.execute("INSERT INTO clusters (uuid, name) VALUES (%s, %s)", (uuid, name))

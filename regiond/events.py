"""
The events table: the audit log of every state change and action.

Write inside the transaction that makes the change (`record` takes anything
with an ``execute``: the `Database` or a `Transaction`), so an event exists
exactly when its change does.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class _Executes(Protocol):
    async def execute(self, sql: str, params: Any = ()) -> int: ...


async def record(
    db: _Executes,
    type: str,
    *,
    actor: str = "",
    cluster_uuid: str | None = None,
    subject: str = "",
    outcome: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    await db.execute(
        "INSERT INTO events (type, actor, cluster_uuid, subject, outcome, data)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (type, actor, cluster_uuid, subject, outcome, json.dumps(data or {})),
    )

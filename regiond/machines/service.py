"""
What the region does with machines: actions routed to the owning cluster,
fleet-wide fan-out, and the reports clusters send back.

Every action is recorded as an event carrying a request id; long ones
(power) finish as a later event with the same id.
"""

from __future__ import annotations

import uuid as uuidlib
from functools import partial
from typing import Any, Iterable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from regiond import events
from regiond.db import Database
from regiond.machines.store import MachineStore
from regiond.rpc.registry import ConnectionRegistry
from rpc import cluster as commands
from rpc.errors import NoConnectionsAvailable, RPCError
from rpc.gather import Outcome, Status, gather

__all__ = ["MachineService", "ACTION_TIMEOUT", "POWER_ACTIONS", "MachineNotFound"]

log = Logger()

#: How long the region waits for a cluster to accept an action.
ACTION_TIMEOUT = 60.0
POWER_ACTIONS = ("on", "off", "cycle")


class MachineNotFound(Exception):
    def __init__(self, cluster_uuid: str, system_id: str) -> None:
        super().__init__(f"no machine {system_id} on cluster {cluster_uuid}")
        self.cluster_uuid = cluster_uuid
        self.system_id = system_id


def _failure_entry(cluster: str, outcome: Outcome) -> dict[str, Any]:
    return {"cluster": cluster, "status": outcome.status.value, "error": outcome.error or ""}


@attrs.frozen
class MachineService:
    clock: IReactorTime
    db: Database
    registry: ConnectionRegistry
    store: MachineStore
    #: Fan-out outcomes (outpost.metrics.GatherMetrics); None records nothing.
    gather_metrics: Any = None
    #: Power actions accepted through this process and not yet reported: cluster → request_id → (system_id, action).
    _pending: dict[str, dict[str, tuple[str, str]]] = attrs.field(factory=dict)

    async def _client(self, cluster_uuid: str) -> Any:
        return await self.registry.getClientFor(cluster_uuid, timeout=0)

    async def require(self, cluster_uuid: str, system_id: str) -> dict[str, Any]:
        machine = await self.store.get(cluster_uuid, system_id)
        if machine is None:
            raise MachineNotFound(cluster_uuid, system_id)
        return machine

    # -- actions on one machine --------------------------------------------

    async def power(self, cluster_uuid: str, system_id: str, action: str, stop_mode: str, actor: str) -> dict[str, Any]:
        """Start a power action; returns the request id (the outcome follows as an event)."""
        await self.require(cluster_uuid, system_id)
        request_id = str(uuidlib.uuid4())
        client = await self._client(cluster_uuid)
        answer = await client(commands.PowerMachine, system_id=system_id, action=action, stop_mode=stop_mode,
                              request_id=request_id, timeout=ACTION_TIMEOUT)
        self._pending.setdefault(cluster_uuid, {})[request_id] = (system_id, action)
        await events.record(self.db, "machine.power.requested", actor=actor, cluster_uuid=cluster_uuid, subject=system_id,
                            outcome="accepted", data={"action": action, "stop_mode": stop_mode, "request_id": request_id, "joined": answer["joined"]})
        return {"request_id": request_id, "action": action, "joined": answer["joined"], "status": "accepted"}

    async def act(self, cluster_uuid: str, system_id: str, kind: str, options: dict[str, Any], actor: str) -> dict[str, Any]:
        """Commission, deploy or release; returns the machine as MAAS left it, and the request id."""
        command = {"commission": commands.CommissionMachine, "deploy": commands.DeployMachine, "release": commands.ReleaseMachine}[kind]
        await self.require(cluster_uuid, system_id)
        request_id = str(uuidlib.uuid4())
        client = await self._client(cluster_uuid)
        try:
            answer = await client(command, system_id=system_id, options=options, timeout=ACTION_TIMEOUT)
        except RPCError as e:
            await events.record(self.db, f"machine.{kind}", actor=actor, cluster_uuid=cluster_uuid, subject=system_id,
                                outcome="failed", data={"request_id": request_id, "error": str(e)})
            raise
        machine = await self.store.apply_update(cluster_uuid, system_id, answer["machine"], source=kind, request_id=request_id)
        await events.record(self.db, f"machine.{kind}", actor=actor, cluster_uuid=cluster_uuid, subject=system_id,
                            outcome="accepted", data={"request_id": request_id, "options": _redact_options(options)})
        return {"request_id": request_id, "machine": machine}

    # -- reports from clusters -----------------------------------------------

    async def power_outcome(self, cluster_uuid: str, system_id: str, action: str, request_id: str, outcome: str, state: str, error: str) -> None:
        self._pending.get(cluster_uuid, {}).pop(request_id, None)
        if state:
            await self.store.apply_update(cluster_uuid, system_id, {"power_state": state}, source="power", request_id=request_id)
        await events.record(self.db, "machine.power", actor=f"cluster:{cluster_uuid}", cluster_uuid=cluster_uuid, subject=system_id,
                            outcome=outcome, data={"action": action, "state": state, "error": error, "request_id": request_id})

    async def cluster_lost(self, cluster_uuid: str) -> None:
        """
        The cluster's last connection to this process went: its power actions
        accepted here are recorded as interrupted (a later report, if the
        cluster survived, is recorded too).
        """
        for request_id, (system_id, action) in self._pending.pop(cluster_uuid, {}).items():
            await events.record(self.db, "machine.power", actor="region", cluster_uuid=cluster_uuid, subject=system_id,
                                outcome="interrupted", data={"action": action, "request_id": request_id,
                                                             "error": "the cluster disconnected before reporting the outcome"})

    async def cluster_event(self, cluster_uuid: str, type: str, subject: str, outcome: str, data: Any) -> None:
        await events.record(self.db, f"cluster.{type}", actor=f"cluster:{cluster_uuid}", cluster_uuid=cluster_uuid,
                            subject=subject, outcome=outcome, data=data if isinstance(data, dict) else {"data": data})

    # -- fleet-wide --------------------------------------------------------

    async def power_query(self, targets: dict[str, list[str]] | None, timeout: float) -> dict[str, Any]:
        """
        Query the power state of `targets` (cluster uuid → system_ids; None:
        every known machine).  Per-machine results, per-cluster failures.
        """
        if targets is None:
            targets = await self.store.known_ids()
        calls = {}
        failures = []
        for cluster_uuid, ids in targets.items():
            if not ids:
                continue
            try:
                client = await self._client(cluster_uuid)
            except NoConnectionsAvailable as e:
                failures.append({"cluster": cluster_uuid, "status": Status.UNAVAILABLE.value, "error": str(e), "machines": len(ids)})
                continue
            calls[cluster_uuid] = partial(client, commands.QueryPowerStates, system_ids=ids, timeout=timeout)
        results = []
        for outcome in await gather(calls, timeout, self.clock, metrics=self.gather_metrics):
            cluster_uuid = str(outcome.key)
            if not outcome.ok:
                failures.append({**_failure_entry(cluster_uuid, outcome), "machines": len(targets[cluster_uuid])})
                continue
            states, errors = outcome.value["states"], outcome.value["errors"]
            await self.store.set_power_states(cluster_uuid, {k: v for k, v in states.items() if v in ("on", "off")})
            for system_id in targets[cluster_uuid]:
                entry: dict[str, Any] = {"cluster": cluster_uuid, "system_id": system_id, "state": states.get(system_id, "unknown")}
                if system_id in errors:
                    entry["error"] = errors[system_id]
                results.append(entry)
        return {"results": results, "failures": failures, "queried": sum(len(v) for v in targets.values())}

    async def fan_out(self, command: type, keys: Iterable[str], timeout: float) -> dict[str, Any]:
        """Call `command` on every connected cluster; merge the lists under `keys`, tagged with the cluster."""
        clients = self.registry.getAllClients()
        calls = {c.ident: partial(c, command, timeout=timeout) for c in clients}
        merged: dict[str, list[Any]] = {k: [] for k in keys}
        failures = []
        for outcome in await gather(calls, timeout, self.clock, metrics=self.gather_metrics):
            if not outcome.ok:
                failures.append(_failure_entry(str(outcome.key), outcome))
                continue
            for key in merged:
                for item in outcome.value[key]:
                    merged[key].append({**item, "cluster": outcome.key} if isinstance(item, dict) else {"value": item, "cluster": outcome.key})
        return {**merged, "failures": failures, "clusters": len(clients)}


def _redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as recorded in the event log: user_data is summarised, not stored."""
    out = dict(options)
    if out.get("user_data"):
        out["user_data"] = f"<{len(out['user_data'])} base64 characters>"
    return out

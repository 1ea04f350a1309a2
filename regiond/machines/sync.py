"""
Inventory sync: every cluster's machines into the region's database.

A full sync asks every connected cluster for its inventory at once
(`gather`) and applies each answer in one transaction per cluster; each
cluster's outcome is recorded in ``maas_syncs`` and as an event.  Between
full syncs, machines in transitional statuses are re-read more often until
they settle.  `SyncLoops` runs both on a clock; the region runs it only in
the process that holds the sync leadership lock.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from regiond import events
from regiond.machines.store import MachineStore
from regiond.rpc.registry import ConnectionRegistry
from rpc import cluster as commands
from rpc.errors import NoConnectionsAvailable
from rpc.gather import Outcome, Status, gather

__all__ = ["InventorySync", "SyncLoops", "DEFAULT_SYNC_INTERVAL", "DEFAULT_TRANSITIONAL_INTERVAL"]

log = Logger()

DEFAULT_SYNC_INTERVAL = 300.0
DEFAULT_TRANSITIONAL_INTERVAL = 15.0
#: Listing 10,000 machines from one MAAS takes a while; allow for it.
SYNC_TIMEOUT = 120.0


@attrs.define
class InventorySync:
    clock: IReactorTime
    registry: ConnectionRegistry
    store: MachineStore
    timeout: float = SYNC_TIMEOUT
    #: Which connected clusters have a MAAS to sync (by their registered capabilities).
    wants: Callable[[str], bool] = lambda uuid: True
    #: Sync durations and per-cluster outcomes (outpost.metrics.SyncMetrics); None records nothing.
    metrics: Any = None
    #: Fan-out outcomes (outpost.metrics.GatherMetrics); None records nothing.
    gather_metrics: Any = None
    _running: bool = attrs.field(init=False, default=False)
    _waiters: list[Deferred[dict[str, Any]]] = attrs.field(init=False, factory=list)

    def run(self) -> Deferred[dict[str, Any]]:
        """Sync now; a sync already running is joined rather than doubled."""
        mine: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append(mine)
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._sync()).addBoth(self._finished)
        return mine

    def _finished(self, result: Any) -> None:
        self._running = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def sync_cluster(self, uuid: str) -> Deferred[dict[str, Any]]:
        """Sync one cluster now (e.g. when it connects), without waiting for the next full sync."""
        return Deferred.fromCoroutine(self._sync(only=uuid))

    async def _sync(self, only: str | None = None) -> dict[str, Any]:
        clients = [c for c in self.registry.getAllClients() if (only is None or c.ident == only) and self.wants(c.ident)]
        calls = {c.ident: partial(c, commands.ListMachines, filters={}, timeout=self.timeout) for c in clients}
        started = self.clock.seconds()
        report: dict[str, Any] = {"clusters": {}, "started": started}
        outcomes = await gather(calls, self.timeout, self.clock, metrics=self.gather_metrics)
        absent = []
        if only is None:
            # Clusters that have had machines here but are not connected now.
            known = await self.store.db.fetch(
                "SELECT DISTINCT cluster_uuid::text AS uuid FROM machines UNION SELECT cluster_uuid::text FROM maas_syncs"
            )
            absent = [Outcome(r["uuid"], Status.UNAVAILABLE, failure=Failure(NoConnectionsAvailable("not connected")))
                      for r in known if r["uuid"] not in calls]
        for outcome in [*outcomes, *absent]:
            cluster = str(outcome.key)
            finished = self.clock.seconds()
            if outcome.ok:
                try:
                    counts = await self.store.apply_inventory(cluster, outcome.value["machines"])
                except Exception as e:  # a bad inventory must not stop the other clusters
                    log.failure("Applying the inventory of {cluster} failed", cluster=cluster)
                    counts, status, error = {}, "failed", f"could not apply inventory: {type(e).__name__}"
                else:
                    status, error = "ok", ""
            else:
                counts, status, error = {}, outcome.status.value, outcome.error or ""
            await self.store.record_sync(cluster, started, finished, status, error, counts)
            await events.record(self.store.db, "maas.sync", actor="region", cluster_uuid=cluster, outcome=status,
                                data={**counts, "error": error, "seconds": round(finished - started, 3)})
            report["clusters"][cluster] = {"outcome": status, "error": error, **counts}
        report["finished"] = self.clock.seconds()
        if self.metrics is not None:
            self.metrics.observe("full" if only is None else "cluster", report["finished"] - started,
                                 [c["outcome"] for c in report["clusters"].values()])
        return report

    async def poll_transitional(self) -> int:
        """Re-read machines in transitional statuses; returns how many were read."""
        wanted = await self.store.transitional()
        calls = {}
        for cluster, ids in wanted.items():
            if self.registry.connection_count(cluster) and self.wants(cluster):
                client = await self.registry.getClientFor(cluster)
                calls[cluster] = partial(client, commands.GetMachines, system_ids=ids, timeout=30.0)
        read = 0
        for outcome in await gather(calls, 30.0, self.clock, metrics=self.gather_metrics):
            if not outcome.ok:
                continue
            for machine in outcome.value["machines"]:
                await self.store.apply_update(str(outcome.key), machine["system_id"], machine, source="poll")
                read += 1
        return read


@attrs.define
class SyncLoops:
    """The periodic jobs: a full sync every `interval`, transitional polls every `transitional_interval`."""

    clock: IReactorTime
    sync: InventorySync
    interval: float = DEFAULT_SYNC_INTERVAL
    transitional_interval: float = DEFAULT_TRANSITIONAL_INTERVAL
    _loops: list[LoopingCall] = attrs.field(init=False, factory=list)

    def start(self) -> None:
        if self._loops:
            return
        for interval, job in ((self.interval, self._full), (self.transitional_interval, self._transitional)):
            loop = LoopingCall(job)
            loop.clock = self.clock
            loop.start(interval, now=job is self._full).addErrback(lambda f: log.failure("Sync loop stopped", f))
            self._loops.append(loop)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()

    @property
    def running(self) -> bool:
        return bool(self._loops)

    async def _full(self) -> None:
        try:
            await self.sync.run()
        except Exception:
            log.failure("Inventory sync failed")

    async def _transitional(self) -> None:
        try:
            await self.sync.poll_transitional()
        except Exception:
            log.failure("Polling transitional machines failed")

"""
The region's metrics: what is computed at scrape time, and ``GET /metrics``.

`RegionGauges` answers the gauges that are cheap to compute when Prometheus
asks: connected clusters and RPC connections (from the registry), the
database pool in use (from the pool), and machines in transitional statuses,
volume jobs by state and infrastructure (Ignition) requests by status
(from one SQL statement per scrape, run by `refresh` before the registry is
rendered).  The families counted as things happen live in `outpost.metrics`.
"""

from __future__ import annotations

from typing import Iterable

import attrs
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from outpost.metrics import CONTENT_TYPE, Metrics
from regiond.api.router import ApiRequest, Response, Route
from regiond.db import Database
from regiond.machines.store import TRANSITIONAL
from regiond.rpc.registry import ConnectionRegistry
from regiond.tokens import READ

__all__ = ["RegionGauges", "WebhookMetrics", "metrics_route", "VOLUME_JOB_STATES", "INFRASTRUCTURE_REQUEST_STATUSES"]

log = Logger()

#: Every state a volume job can be in (regiond.volumes.store), reported even when no job is in it.
VOLUME_JOB_STATES = ("preparing", "prepared", "failed", "cleaning", "cleaned", "cleanup_failed")
#: Every status an infrastructure request can have (regiond.infrastructure.store), reported even when none has it.
INFRASTRUCTURE_REQUEST_STATUSES = ("IN_PROGRESS", "COMPLETE", "FAILED")

_SNAPSHOT = """
SELECT 'machines' AS kind, status AS label, count(*) AS n
  FROM machines WHERE NOT missing AND status = ANY(%s) GROUP BY status
UNION ALL
SELECT 'volume_jobs', state, count(*) FROM volume_jobs GROUP BY state
UNION ALL
SELECT 'infrastructure_requests', status, count(*) FROM infrastructure_requests GROUP BY status
"""


@attrs.define
class RegionGauges:
    """The scrape-time gauges of one region process."""

    registry: ConnectionRegistry
    db: Database
    _snapshot: dict[str, dict[str, int]] | None = attrs.field(init=False, default=None)
    _refreshing: list[Deferred[None]] | None = attrs.field(init=False, default=None)

    async def refresh(self) -> None:
        """Read the database-derived gauges: one statement, shared by scrapes that arrive while it runs."""
        if self._refreshing is not None:
            waiter: Deferred[None] = Deferred()
            self._refreshing.append(waiter)
            await waiter
            return
        self._refreshing = []
        try:
            rows = await self.db.fetch(_SNAPSHOT, (sorted(TRANSITIONAL),))
        except Exception:
            log.failure("Reading the database gauges for /metrics failed")
            self._snapshot = None
        else:
            snapshot: dict[str, dict[str, int]] = {"machines": {}, "volume_jobs": {}, "infrastructure_requests": {}}
            for row in rows:
                snapshot[row["kind"]][row["label"]] = int(row["n"])
            self._snapshot = snapshot
        finally:
            waiters, self._refreshing = self._refreshing, None
            for w in waiters:
                w.callback(None)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "outpost_rpc_connected_clusters", "Clusters with at least one RPC connection to this region process",
            value=len(self.registry.connected_uuids()),
        )
        yield GaugeMetricFamily(
            "outpost_rpc_connections", "RPC connections of registered clusters to this region process",
            value=len(self.registry.all_connections()),
        )
        in_use, size = self.db.pool_in_use()
        yield GaugeMetricFamily("outpost_db_pool_in_use", "Pooled database connections in use", value=in_use)
        yield GaugeMetricFamily("outpost_db_pool_size", "Pooled database connections", value=size)
        ok = self._snapshot is not None
        yield GaugeMetricFamily(
            "outpost_metrics_db_snapshot_ok", "1 if this scrape read the database-derived gauges, 0 if that failed",
            value=1 if ok else 0,
        )
        if self._snapshot is None:
            return
        machines = GaugeMetricFamily(
            "outpost_machines_transitional", "Machines (region-wide) in a transitional status, by status", labels=["status"]
        )
        for status in sorted(TRANSITIONAL):
            machines.add_metric([status], self._snapshot["machines"].get(status, 0))
        yield machines
        jobs = GaugeMetricFamily("outpost_volume_jobs", "Volume jobs (region-wide) by state", labels=["state"])
        states = self._snapshot["volume_jobs"]
        for state in sorted(set(VOLUME_JOB_STATES) | set(states)):
            jobs.add_metric([state], states.get(state, 0))
        yield jobs
        requests = GaugeMetricFamily(
            "outpost_infrastructure_requests", "Infrastructure create/delete requests (region-wide) by status", labels=["status"]
        )
        statuses = self._snapshot["infrastructure_requests"]
        for status in sorted(set(INFRASTRUCTURE_REQUEST_STATUSES) | set(statuses)):
            requests.add_metric([status], statuses.get(status, 0))
        yield requests


class WebhookMetrics:
    """
    Outgoing webhook deliveries by outcome (``outpost_webhook_deliveries_total``):
    ``delivered`` (a 2xx), ``rejected`` (another status), ``failed`` (no answer:
    a connection error or a timeout).  Every attempt counts once.
    """

    OUTCOMES = ("delivered", "rejected", "failed")

    def __init__(self, registry: CollectorRegistry) -> None:
        self._deliveries = Counter(
            "outpost_webhook_deliveries", "Outgoing webhook delivery attempts by outcome", ["outcome"], registry=registry
        )
        for outcome in self.OUTCOMES:
            self._deliveries.labels(outcome)

    def observe(self, outcome: str) -> None:
        self._deliveries.labels(outcome).inc()


def metrics_route(metrics: Metrics, gauges: RegionGauges | None, require_token: bool = False) -> Route:
    """``GET /metrics``: open unless `require_token` (then any valid token, as other reads)."""

    async def serve(request: ApiRequest) -> Response:
        if gauges is not None:
            await gauges.refresh()
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    return Route(
        "GET",
        "/metrics",
        serve,
        "Prometheus metrics of this region process (text format 0.0.4)",
        role=READ if require_token else None,
        responses={200: "Metrics in Prometheus's text exposition format"},
        tags=("operations",),
    )

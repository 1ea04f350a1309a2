"""
Prometheus metrics shared by both daemons.

Each process makes one `Metrics` (a `CollectorRegistry` of its own and the
metric families on it) in its service wiring and hands the parts to the
components that record: `RPCMetrics` to the RPC factory, `HTTPMetrics` to the
API resource, `QueryMetrics` to the database, `ExternalCallMetrics` to the
MAAS and CloudStack clients, `GatherMetrics` to fan-outs.  Every component
takes ``metrics=None`` by default and then records nothing, so code built
without metrics (tests, benchmarks) works unchanged and pays one ``is None``.

The global ``prometheus_client.REGISTRY`` is never used.  Gauges that are
cheap to compute (connections, pool use, machines in transition, ...) are
not kept up to date on every change: a `ScrapeCollector` computes them when
``/metrics`` is read.

The RPC hot path resolves labels once and keeps plain numbers:
``RPCMetrics.outgoing(command)`` hands back a `CommandStats` cached per
command, and a call costs a dict lookup, two clock reads and a few integer
additions; the families are built from those numbers at scrape time.

Infrastructure requests by status (region) and the cluster journal's
undelivered completions and monitored tasks are `ScrapeCollector` gauges
over their table and journal; VIM calls use `ExternalCallMetrics` with
``service="vim"``.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = [
    "CONTENT_TYPE",
    "Metrics",
    "RPCMetrics",
    "CommandStats",
    "GatherMetrics",
    "HTTPMetrics",
    "QueryMetrics",
    "ExternalCallMetrics",
    "SyncMetrics",
    "ScrapeCollector",
    "MetricsPage",
    "render",
    "observe_external",
    "metrics_site_root",
    "IN",
    "OUT",
]

#: The Prometheus text exposition format, version 0.0.4 (what `generate_latest` writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Directions of an RPC call: one we made, or one we answered.
OUT = "out"
IN = "in"

#: Seconds; RPC calls run from sub-millisecond pings to the 120 s default timeout.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EXTERNAL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
SYNC_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the text format (`CONTENT_TYPE`)."""
    return generate_latest(registry)


class CommandStats:
    """
    One command in one direction: a count per outcome and a latency histogram.

    Plain integers, not prometheus_client children: a call on the hot path
    costs a dict update, a bisect and two additions, with no locks (only the
    reactor thread records, and scrapes are served on it too).
    `RPCMetrics.collect` turns them into families at scrape time.
    """

    __slots__ = ("direction", "command", "outcomes", "buckets", "sum")

    def __init__(self, direction: str, command: str) -> None:
        self.direction = direction
        self.command = command
        self.outcomes: dict[str, int] = {}
        #: Non-cumulative counts: buckets[i] holds latencies in (RPC_BUCKETS[i-1], RPC_BUCKETS[i]]; the last is +Inf.
        self.buckets = [0] * (len(RPC_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, outcome: str, seconds: float) -> None:
        outcomes = self.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.buckets[bisect_left(RPC_BUCKETS, seconds)] += 1
        self.sum += seconds


#: prometheus_client's own formatting of a bucket bound; the function is unannotated, its type is stated here.
_go_float: Callable[[float], str] = floatToGoString
_RPC_LE = [_go_float(b) for b in RPC_BUCKETS] + ["+Inf"]


class RPCMetrics:
    """
    RPC calls by direction, command and outcome, with latency
    (``outpost_rpc_calls_total``, ``outpost_rpc_call_duration_seconds``).

    Outcomes of calls we make (``out``): ok, error (the peer answered with an
    error), timeout, cancelled, unavailable (no connection, or it closed),
    invalid (arguments that could not be sent).  Of calls we answer
    (``in``): ok, error (a declared error), unhandled, invalid.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._out: dict[Any, CommandStats] = {}
        self._in: dict[bytes, CommandStats] = {}
        registry.register(self)

    def outgoing(self, command: type) -> CommandStats:
        """Stats for calls of `command` (an ``amp.Command`` class) that we make."""
        stats = self._out.get(command)
        if stats is None:
            name = command.commandName.decode("ascii", "replace")  # type: ignore[attr-defined]
            stats = self._out[command] = CommandStats(OUT, name)
        return stats

    def incoming(self, name: bytes) -> CommandStats:
        """Stats for calls of the command named `name` that we answer (only names we have a responder for)."""
        stats = self._in.get(name)
        if stats is None:
            stats = self._in[name] = CommandStats(IN, name.decode("ascii", "replace"))
        return stats

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        return self._families([*self._out.values(), *self._in.values()])

    @staticmethod
    def _families(every: list[CommandStats]) -> list[Metric]:
        calls = CounterMetricFamily(
            "outpost_rpc_calls", "RPC calls by direction (out: made, in: answered), command and outcome",
            labels=["direction", "command", "outcome"],
        )
        latency = HistogramMetricFamily(
            "outpost_rpc_call_duration_seconds", "RPC call latency by direction and command", labels=["direction", "command"]
        )
        for stats in every:
            for outcome, n in sorted(stats.outcomes.items()):
                calls.add_metric([stats.direction, stats.command, outcome], n)
            cumulative = list(accumulate(stats.buckets))
            latency.add_metric(
                [stats.direction, stats.command], buckets=list(zip(_RPC_LE, cumulative)), sum_value=stats.sum
            )
        return [calls, latency]


class GatherMetrics:
    """Fan-out outcomes: ok, failed, timeout, unavailable (one per call)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._outcomes = Counter(
            "outpost_rpc_gather_outcomes", "Outcomes of calls made in fan-outs (rpc.gather)", ["outcome"], registry=registry
        )
        for outcome in ("ok", "failed", "timeout", "unavailable"):
            self._outcomes.labels(outcome)

    def observe(self, outcome: str) -> None:
        self._outcomes.labels(outcome).inc()


@attrs.define
class HTTPMetrics:
    """HTTP requests by route template, method and status, with latency."""

    clock: IReactorTime
    registry: CollectorRegistry = attrs.field(repr=False)
    _requests: Counter = attrs.field(init=False, repr=False)
    _latency: Histogram = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._requests = Counter(
            "outpost_http_requests", "HTTP API requests by route template, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self._latency = Histogram(
            "outpost_http_request_duration_seconds", "HTTP API request latency by route template and method",
            ["route", "method"], buckets=HTTP_BUCKETS, registry=self.registry,
        )

    def observe(self, template: str | None, method: str, status: int, seconds: float) -> None:
        """`template` None: no route matched (404/405); any method outside the usual ones counts as ``other``."""
        route = template if template is not None else "unmatched"
        method = method if method in _HTTP_METHODS else "other"
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route, method).observe(seconds)


class QueryMetrics:
    """Database statement latency by kind (fetch, execute, transaction)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._latency = Histogram(
            "outpost_db_query_duration_seconds", "Database statement latency (a transaction counts once, whole)",
            ["kind", "outcome"], buckets=QUERY_BUCKETS, registry=registry,
        )

    def observe(self, kind: str, ok: bool, seconds: float) -> None:
        self._latency.labels(kind, "ok" if ok else "error").observe(seconds)


class ExternalCallMetrics:
    """Calls to the systems a site or region integrates (MAAS, CloudStack, Waldur, VIM) by operation and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._calls = Counter(
            "outpost_external_calls", "Calls to external systems by service, operation and outcome (retries included in one call)",
            ["service", "operation", "outcome"], registry=registry,
        )
        self._latency = Histogram(
            "outpost_external_call_duration_seconds", "Latency of calls to external systems, retries included",
            ["service", "operation"], buckets=EXTERNAL_BUCKETS, registry=registry,
        )

    def observe(self, service: str, operation: str, outcome: str, seconds: float) -> None:
        self._calls.labels(service, operation, outcome).inc()
        self._latency.labels(service, operation).observe(seconds)


_T = TypeVar("_T")


async def observe_external(
    metrics: ExternalCallMetrics | None,
    clock: IReactorTime,
    service: str,
    operation: str,
    unavailable: type[BaseException] | tuple[type[BaseException], ...],
    work: Awaitable[_T],
) -> _T:
    """
    Await `work`, recording it under (`service`, `operation`) with outcome ok,
    unavailable (an `unavailable` error), cancelled, or error.
    """
    if metrics is None:
        return await work
    started = clock.seconds()
    try:
        result = await work
    except BaseException as e:
        if isinstance(e, unavailable):
            outcome = "unavailable"
        elif isinstance(e, CancelledError):
            outcome = "cancelled"
        else:
            outcome = "error"
        metrics.observe(service, operation, outcome, clock.seconds() - started)
        raise
    metrics.observe(service, operation, "ok", clock.seconds() - started)
    return result


class SyncMetrics:
    """Inventory syncs: how long each took (full or one cluster) and each cluster's outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._duration = Histogram(
            "outpost_maas_sync_duration_seconds", "Inventory sync duration (scope: full or cluster)",
            ["scope"], buckets=SYNC_BUCKETS, registry=registry,
        )
        self._outcomes = Counter(
            "outpost_maas_sync_clusters", "Clusters synced, by outcome (ok, failed, timeout, unavailable)",
            ["outcome"], registry=registry,
        )

    def observe(self, scope: str, seconds: float, outcomes: Iterable[str]) -> None:
        self._duration.labels(scope).observe(seconds)
        for outcome in outcomes:
            self._outcomes.labels(outcome).inc()


class ScrapeCollector:
    """A custom collector: `collect` calls `produce` at scrape time for gauges that are cheap to compute then."""

    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self._produce = produce

    def collect(self) -> Iterable[Metric]:
        return list(self._produce())

    def describe(self) -> Iterable[Metric]:
        # Registering must not call `produce` (it may need state not there yet).
        return []


@attrs.define
class Metrics:
    """One process's registry and every metric family on it."""

    registry: CollectorRegistry
    rpc: RPCMetrics
    gather: GatherMetrics
    http: HTTPMetrics
    queries: QueryMetrics
    external: ExternalCallMetrics
    sync: SyncMetrics

    @classmethod
    def create(cls, clock: IReactorTime, registry: CollectorRegistry | None = None) -> "Metrics":
        """Families on `registry` (default: a new one, never the global one)."""
        registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        return cls(
            registry=registry,
            rpc=RPCMetrics(registry),
            gather=GatherMetrics(registry),
            http=HTTPMetrics(clock, registry),
            queries=QueryMetrics(registry),
            external=ExternalCallMetrics(registry),
            sync=SyncMetrics(registry),
        )

    def add_collector(self, produce: Callable[[], Iterable[Metric]]) -> ScrapeCollector:
        collector = ScrapeCollector(produce)
        self.registry.register(collector)
        return collector

    def render(self) -> bytes:
        return render(self.registry)


class MetricsPage(Resource):
    """``GET /metrics`` for a small listener of its own (the cluster's ``--metrics``)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        Resource.__init__(self)
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return render(self._registry)


class _MetricsRoot(Resource):
    # Declared so that making one is a typed call: Twisted's Resource.__init__ is unannotated.
    def __init__(self) -> None:
        Resource.__init__(self)

    def getChild(self, path: bytes, request: Request) -> Any:  # noqa: N802
        return notFound()


def metrics_site_root(registry: CollectorRegistry) -> Resource:
    """A root resource serving only ``/metrics`` (everything else is a 404)."""
    root = _MetricsRoot()
    root.putChild(b"metrics", MetricsPage(registry))
    return root

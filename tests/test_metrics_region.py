"""
The region's /metrics over real sockets and PostgreSQL: after a known
sequence (a cluster connects and is synced, volume jobs exist, API calls)
every family has the expected values, and the database-derived gauges cost
one query per scrape.
"""

from __future__ import annotations

import os
import socket
from typing import Any, AsyncIterator

import attrs
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.protocols import amp
from twisted.web.server import Site

from outpost.metrics import CONTENT_TYPE, Metrics
from regiond.app import MAAS_CAPABILITY, RegionApp
from regiond.db import Database
from regiond.infrastructure.store import InfrastructureStore, Location, TaskReport
from regiond.volumes.store import VolumeJobStore
from rpc import cluster as commands
from rpc.protocol import CLUSTER, RPCFactory, RPCProtocol
from rpc.region import RegisterCluster
from tests.machinehelpers import summary
from tests.regionstack import SECRET, eventually

UUID = "6f1c1d3e-0000-4000-8000-000000000001"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Site_(amp.CommandLocator):
    """A cluster's MAAS side: three machines, two of them deploying."""

    @commands.ListMachines.responder
    def list_machines(self, filters: Any) -> Any:
        return {"machines": [
            summary("m1", status="Deploying", status_code=9),
            summary("m2", status="Deploying", status_code=9),
            summary("m3"),
        ]}


@attrs.define
class MeteredRegion:
    app: RegionApp
    metrics: Metrics
    origin: str
    rpc_port: int
    ports: list[Any]
    clusters: list[RPCProtocol] = attrs.field(factory=list)

    async def connect_cluster(self) -> RPCProtocol:
        factory = RPCFactory(secret=SECRET, role=CLUSTER, clock=_reactor(), ident=UUID, locator_factory=lambda p: Site_())
        proto: RPCProtocol = await TCP4ClientEndpoint(_reactor(), "127.0.0.1", self.rpc_port, timeout=5).connect(factory)
        self.clusters.append(proto)
        await proto.when_authenticated()
        await proto.call(RegisterCluster, uuid=UUID, name="site-1", version="0.1", capabilities=[MAAS_CAPABILITY], timeout=10)
        return proto

    async def scrape(self) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        response = await treq.get(self.origin + "/metrics", timeout=10)
        assert response.code == 200
        content_type = response.headers.getRawHeaders(b"content-type")[0].decode()
        text = (await treq.content(response)).decode()
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return content_type, values


@pytest_twisted.async_yield_fixture
async def region(db: Database) -> AsyncIterator[MeteredRegion]:
    """The region's parts as RegionService wires them, with metrics, on 127.0.0.1."""
    reactor = _reactor()
    metrics = Metrics.create(reactor)
    app = RegionApp(reactor, db, region_secret=SECRET, metrics=metrics)
    rpc_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(app.rpc_factory(SECRET, f"h:{os.getpid()}"))
    address = rpc_port.getHost()
    app.attach_process(await app.processes.register(socket.gethostname(), os.getpid(), address.host, address.port))
    http_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(app.resource()))
    stack = MeteredRegion(app, metrics, f"http://127.0.0.1:{http_port.getHost().port}", address.port, [rpc_port, http_port])
    try:
        yield stack
    finally:
        for port in stack.ports:
            await port.stopListening()
        for proto in stack.clusters:
            if proto.connected:
                closed = proto.when_closed()
                proto.transport.abortConnection()
                await closed
        if app.registrar is not None:
            await app.registrar.settle()
        db.metrics = None


def value(values: dict[Any, float], name: str, **labels: str) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


@pytest_twisted.ensureDeferred
async def test_region_metrics_after_a_known_sequence(region: MeteredRegion) -> None:
    content_type, before = await region.scrape()
    assert content_type == CONTENT_TYPE
    assert value(before, "outpost_rpc_connected_clusters") == 0
    assert value(before, "outpost_machines_transitional", status="Deploying") == 0
    assert value(before, "outpost_volume_jobs", state="preparing") == 0

    await region.connect_cluster()

    async def synced() -> bool:
        rows = await region.app.db.fetch("SELECT count(*) AS n FROM machines")
        return rows[0]["n"] == 3

    await eventually(synced)
    jobs = VolumeJobStore(region.app.db)
    await jobs.create("job-1", UUID, [{"name": "disk-0", "size_gb": 1}], actor="test")
    await jobs.create("job-2", UUID, [{"name": "disk-0", "size_gb": 1}], actor="test")
    await jobs.fail("job-2", "broken")

    async def sync_recorded() -> bool:
        _, now = await region.scrape()
        return value(now, "outpost_maas_sync_clusters_total", outcome="ok") == 1

    await eventually(sync_recorded)
    _, values = await region.scrape()
    # Connections and clusters, from the registry.
    assert value(values, "outpost_rpc_connected_clusters") == 1
    assert value(values, "outpost_rpc_connections") == 1
    # RPC on the region's side: it answered RegisterCluster and called ListMachines.
    assert value(values, "outpost_rpc_calls_total", direction="in", command="RegisterCluster", outcome="ok") == 1
    assert value(values, "outpost_rpc_calls_total", direction="out", command="ListMachines", outcome="ok") == 1
    assert value(values, "outpost_rpc_call_duration_seconds_count", direction="out", command="ListMachines") == 1
    # The sync on connect.
    assert value(values, "outpost_maas_sync_duration_seconds_count", scope="cluster") == 1
    # Database-derived gauges.
    assert value(values, "outpost_metrics_db_snapshot_ok") == 1
    assert value(values, "outpost_machines_transitional", status="Deploying") == 2
    assert value(values, "outpost_machines_transitional", status="Releasing") == 0
    assert value(values, "outpost_volume_jobs", state="preparing") == 1
    assert value(values, "outpost_volume_jobs", state="failed") == 1
    assert value(values, "outpost_volume_jobs", state="cleaned") == 0
    # The pool, and statement latency.
    in_use, size = region.app.db.pool_in_use()
    assert value(values, "outpost_db_pool_size") == size
    assert value(values, "outpost_db_pool_in_use") is not None
    assert (value(values, "outpost_db_query_duration_seconds_count", kind="transaction", outcome="ok") or 0) >= 3
    # HTTP: the earlier scrapes, counted under their route template.
    assert (value(values, "outpost_http_requests_total", route="/metrics", method="GET", status="200") or 0) >= 2


@pytest_twisted.ensureDeferred
async def test_a_scrape_reads_the_database_once(region: MeteredRegion) -> None:
    def fetches(values: dict[Any, float]) -> float:
        return value(values, "outpost_db_query_duration_seconds_count", kind="fetch", outcome="ok") or 0

    await region.scrape()
    _, first = await region.scrape()
    _, second = await region.scrape()
    # One statement per scrape for every database-derived gauge (the token check is off: no lookup).
    assert fetches(second) - fetches(first) == 1
    assert value(second, "outpost_db_query_duration_seconds_count", kind="execute", outcome="ok") == value(
        first, "outpost_db_query_duration_seconds_count", kind="execute", outcome="ok"
    )


@pytest_twisted.ensureDeferred
async def test_infrastructure_requests_are_counted_by_status(region: MeteredRegion) -> None:
    _, before = await region.scrape()
    for status in ("IN_PROGRESS", "COMPLETE", "FAILED"):
        assert value(before, "outpost_infrastructure_requests", status=status) == 0
    db = region.app.db
    await db.execute("INSERT INTO clusters (uuid, name) VALUES (%s, 'site-1')", (UUID,))
    store = InfrastructureStore(db)
    site = Location("site-1", "simulated")
    for n in range(3):
        await store.create_accepted(UUID, f"inf-{n}", f"req-{n}", site, instance_name="", template_type="TOSCA", template_sha256="", actor="test")
    await store.complete(UUID, TaskReport("req-0", "inf-0", "COMPLETE"), "create", site)
    await store.complete(UUID, TaskReport("req-1", "inf-1", "FAILED", "INTERNAL_ERROR", "x"), "create", site)
    await store.delete_accepted(UUID, "inf-0", "del-0", site, "test")
    _, after = await region.scrape()
    assert value(after, "outpost_infrastructure_requests", status="IN_PROGRESS") == 2
    assert value(after, "outpost_infrastructure_requests", status="COMPLETE") == 1
    assert value(after, "outpost_infrastructure_requests", status="FAILED") == 1

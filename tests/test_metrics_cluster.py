"""
The cluster's metrics: MAAS and CloudStack calls by operation and outcome
(in memory, on a `Clock`), and ``twistd clusterd --metrics``'s listener
over a real socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from clusterd import tap as cluster_tap
from clusterd.cloudstack import CloudStackClient, CloudStackParameterError, CloudStackUnavailable
from clusterd.cloudstack.retry import RetryPolicy as CSRetry
from clusterd.maas import MAASClient, MAASError, MAASUnavailable
from clusterd.maas.retry import RetryPolicy
from outpost.metrics import CONTENT_TYPE, Metrics
from outpost.secret import write_secret


class FakeMAAS(Resource):
    """Answers a handful of MAAS paths: machines, one machine, power_on; 404 and 503 otherwise."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        path = request.path.decode()
        request.setHeader(b"Content-Type", b"application/json")
        if path.endswith("/machines/"):
            return json.dumps([{"system_id": "m1"}]).encode()
        if path.endswith("/machines/m1/"):
            return json.dumps({"system_id": "m1", "power_state": "on"}).encode()
        if path.endswith("/zones/"):
            request.setResponseCode(503)
            return b"busy"
        request.setResponseCode(404)
        return b"no such thing"


class FakeCloudStack(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        query = parse_qs(request.uri.decode().partition("?")[2]) or parse_qs(request.content.read().decode())
        command = query["command"][0]
        if command == "listZones":
            return json.dumps({"listzonesresponse": {"zone": [{"id": "z1", "name": "zone"}]}}).encode()
        if command == "listVolumes":
            request.setResponseCode(503)
            return b"down"
        request.setResponseCode(431)
        return json.dumps({"errorresponse": {"errorcode": 431, "errortext": "bad parameter"}}).encode()


def run(coroutine: Any) -> Any:
    """A coroutine's result; the fakes answer at once, so no reactor is needed."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "did not finish synchronously"
    return results[0]


def calls(metrics: Metrics, service: str, operation: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "outpost_external_calls_total", {"service": service, "operation": operation, "outcome": outcome}
    )


def test_maas_calls_are_counted_by_operation_template_and_outcome() -> None:
    clock = Clock()
    metrics = Metrics.create(clock)
    client = MAASClient(
        clock, "http://maas.test:5240/MAAS/", "a:b:c", http=StubTreq(FakeMAAS()), retry=RetryPolicy(attempts=1),
        metrics=metrics.external,
    )
    assert run(client.list_machines()) == [{"system_id": "m1"}]
    assert run(client.list_machines()) == [{"system_id": "m1"}]
    assert run(client.power_on("m1"))["system_id"] == "m1"
    assert run(client.get_machine("nope")).check(MAASError)
    assert run(client.zones()).check(MAASUnavailable)
    assert calls(metrics, "maas", "GET machines/", "ok") == 2
    # The system_id is not a label value: one series per operation, whatever the machine.
    assert calls(metrics, "maas", "POST machines/{id}/?op=power_on", "ok") == 1
    assert calls(metrics, "maas", "GET machines/{id}/", "error") == 1
    assert calls(metrics, "maas", "GET zones/", "unavailable") == 1
    assert metrics.registry.get_sample_value(
        "outpost_external_call_duration_seconds_count", {"service": "maas", "operation": "GET machines/"}
    ) == 2


def test_cloudstack_calls_are_counted_by_command_and_outcome() -> None:
    clock = Clock()
    metrics = Metrics.create(clock)
    client = CloudStackClient(
        clock, "http://cs.test/client/api", "key", "secret", http=StubTreq(FakeCloudStack()), retry=CSRetry(attempts=1),
        metrics=metrics.external,
    )
    assert [z["id"] for z in run(client.list_zones())] == ["z1"]
    assert run(client.list_volumes()).check(CloudStackUnavailable)
    assert run(client.call("createTags", resourceids="v", resourcetype="Volume")).check(CloudStackParameterError)
    assert calls(metrics, "cloudstack", "listZones", "ok") == 1
    assert calls(metrics, "cloudstack", "listVolumes", "unavailable") == 1
    assert calls(metrics, "cloudstack", "createTags", "error") == 1


def test_clients_built_without_metrics_count_nothing() -> None:
    client = MAASClient(Clock(), "http://maas.test:5240/MAAS/", "a:b:c", http=StubTreq(FakeMAAS()))
    assert client.metrics is None
    assert run(client.list_machines()) == [{"system_id": "m1"}]


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _options(tmp_path: Path, *extra: str) -> cluster_tap.Options:
    write_secret(tmp_path / "secret", b"s" * 32)
    options = cluster_tap.Options()
    options.parseOptions(["--region", "http://127.0.0.1:1/", "--state-dir", str(tmp_path), *extra])
    return options


def _listeners(top: Any) -> list[StreamServerEndpointService]:
    return [s for s in top if isinstance(s, StreamServerEndpointService)]


def test_without_metrics_the_cluster_has_no_listener(tmp_path: Path) -> None:
    assert _listeners(cluster_tap.build_service(_reactor(), _options(tmp_path))) == []


@pytest_twisted.ensureDeferred
async def test_the_cluster_serves_metrics_on_its_own_listener(tmp_path: Path) -> None:
    top = cluster_tap.build_service(_reactor(), _options(tmp_path, "--metrics", "tcp:0:interface=127.0.0.1"))
    (listener,) = _listeners(top)
    listener.startService()  # only the listener: no regions, no site
    try:
        port = await listener._waitingForPort  # type: ignore[attr-defined]
        base = f"http://127.0.0.1:{port.getHost().port}"
        response = await treq.get(base + "/metrics", timeout=10)
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [CONTENT_TYPE.encode()]
        text = (await treq.content(response)).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["outpost_cluster_region_connections"].samples[0].value == 0
        assert "outpost_rpc_calls" in families and "outpost_external_calls" in families
        missing = await treq.get(base + "/elsewhere", timeout=10)
        assert missing.code == 404
        await treq.content(missing)
    finally:
        await listener.stopService()


def test_metrics_flag_needs_an_endpoint(tmp_path: Path) -> None:
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="metrics.listen"):
        _options(tmp_path, "--metrics", "not-an-endpoint")


def test_the_journal_gauges_count_undelivered_reports_and_monitored_tasks(tmp_path: Path) -> None:
    from clusterd.infrastructure.driver import DriverContext
    from clusterd.infrastructure.journal import Completion, Journal, Watched, write_here
    from clusterd.infrastructure.registry import DriverRegistry
    from clusterd.infrastructure.work import InfrastructureWork

    location = {"name": "site-1", "type": "none-installed"}
    journal = Journal.open(tmp_path / "infrastructure")
    for n in range(3):
        journal.watch(Watched(f"r{n}", f"i{n}", "create", location))
    for n in range(2):
        journal.complete(Completion(f"r{n}", f"i{n}", "create", location, {"requestId": f"r{n}", "status": "COMPLETE"}))
    clock = Clock()
    work = InfrastructureWork(clock, DriverRegistry(DriverContext(clock, {}, tmp_path / "drivers")), tmp_path / "infrastructure",
                              region=lambda: None, write_journal=write_here)

    class Connector:
        live: set[Any] = set()

    metrics = Metrics.create(clock)
    metrics.add_collector(lambda: cluster_tap._cluster_gauges(Connector(), work))  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("outpost_cluster_journal_undelivered") == 0, "nothing loaded before start"
    assert work.journal.undelivered_count == 2  # loaded at start (or by the first call)
    assert metrics.registry.get_sample_value("outpost_cluster_journal_undelivered") == 2
    assert metrics.registry.get_sample_value("outpost_cluster_infrastructure_tasks_monitored") == 1
    work.journal.acknowledge("r0")
    assert metrics.registry.get_sample_value("outpost_cluster_journal_undelivered") == 1, "read at scrape time"

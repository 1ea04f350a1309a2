"""``GET /metrics`` on the region's router, HTTP request metrics, and the metrics configuration of both daemons."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock

from clusterd.config import load_config as load_cluster_config
from outpost.config import ConfigError
from outpost.metrics import CONTENT_TYPE, Metrics
from regiond.api.errors import NotFound
from regiond.api.router import ApiRequest, ApiResource, Response, Route
from regiond.config import load_config as load_region_config
from regiond.metrics import metrics_route

TOKEN = "good-token"


async def authenticate(token: str) -> dict[str, Any] | None:
    return {"id": 1, "name": "t", "role": "read"} if token == TOKEN else None


def stack(require_token: bool = False, clock: Clock | None = None) -> tuple[StubTreq, Metrics, Clock]:
    """The router over a few routes and /metrics, with HTTP metrics, in memory."""
    clock = clock or Clock()
    metrics = Metrics.create(clock)

    async def slow(request: ApiRequest) -> Any:
        clock.advance(0.2)  # the handler "takes" 0.2 s on the metrics' clock
        return {"ok": True}

    async def missing(request: ApiRequest) -> Any:
        raise NotFound(f"no thing {request.params['id']}")

    routes = [
        Route("GET", "/api/v1/things/{id}", slow, "a thing", role=None),
        Route("DELETE", "/api/v1/things/{id}", missing, "remove a thing", role="admin"),
        metrics_route(metrics, None, require_token=require_token),
    ]
    return StubTreq(ApiResource(routes, authenticate, metrics=metrics.http)), metrics, clock


async def get(client: StubTreq, path: str, token: str | None = None, method: str = "GET") -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.request(method, "http://region" + path, headers=headers)
    body = await response.content()
    return response.code, response.headers.getRawHeaders(b"content-type")[0].decode(), body


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


@pytest.mark.parametrize("require_token", [False, True])
def test_metrics_is_prometheus_text_and_open_unless_configured_otherwise(require_token: bool) -> None:
    client, metrics, clock = stack(require_token)
    status, content_type, body = _run(get(client, "/metrics"))
    if require_token:
        assert status == 401 and content_type == "application/json"
        status, content_type, body = _run(get(client, "/metrics", token=TOKEN))
    assert status == 200
    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE outpost_rpc_calls_total counter" in body
    assert samples(body)  # parses as the text format


def test_requests_are_counted_by_route_template_method_and_status_with_latency() -> None:
    client, metrics, clock = stack()
    for thing in ("a", "b", "c"):
        assert _run(get(client, f"/api/v1/things/{thing}"))[0] == 200
    assert _run(get(client, "/api/v1/things/a", method="DELETE"))[0] == 401
    assert _run(get(client, "/api/v1/things/a", token=TOKEN, method="DELETE"))[0] == 403
    assert _run(get(client, "/nowhere/1"))[0] == 404
    assert _run(get(client, "/api/v1/things/a", method="PUT"))[0] == 405
    body = _run(get(client, "/metrics"))[2]
    found = samples(body)

    def requests(route: str, method: str, status: str) -> float | None:
        return found.get(("outpost_http_requests_total", (("method", method), ("route", route), ("status", status))))

    assert requests("/api/v1/things/{id}", "GET", "200") == 3
    assert requests("/api/v1/things/{id}", "DELETE", "401") == 1
    assert requests("/api/v1/things/{id}", "DELETE", "403") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert requests("unmatched", "PUT", "405") == 1
    latency = (("method", "GET"), ("route", "/api/v1/things/{id}"))
    assert found[("outpost_http_request_duration_seconds_count", latency)] == 3
    assert found[("outpost_http_request_duration_seconds_sum", latency)] == pytest.approx(0.6)
    # The scrape counts itself only once it has been answered.
    assert requests("/metrics", "GET", "200") is None
    again = samples(_run(get(client, "/metrics"))[2])
    assert again[("outpost_http_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200")))] == 1


def test_a_handler_may_answer_raw_bytes_with_a_type_of_its_own() -> None:
    async def raw(request: ApiRequest) -> Response:
        return Response(b"plain \xff bytes", content_type="application/octet-stream", headers={"X-Extra": "1"})

    client = StubTreq(ApiResource([Route("GET", "/raw", raw, "raw", role=None)], authenticate))
    status, content_type, body = _run(get(client, "/raw"))
    assert (status, content_type, body) == (200, "application/octet-stream", b"plain \xff bytes")


def test_region_metrics_section_switches_the_token_on_and_refuses_unknown_keys() -> None:
    assert load_region_config("").metrics.require_token is False
    assert load_region_config("metrics: {require_token: true}").metrics.require_token is True
    with pytest.raises(ConfigError) as info:
        load_region_config("metrics: {require_token: maybe, port: 1}")
    assert "metrics.require_token" in str(info.value) and "metrics.port" in str(info.value)


def test_cluster_metrics_listener_is_configured_by_an_endpoint() -> None:
    base = "regions: ['http://r:5240/']\n"
    assert load_cluster_config(base).metrics_listen is None
    config = load_cluster_config(base + "metrics: {listen: 'tcp:9106:interface=127.0.0.1'}")
    assert config.metrics_listen == "tcp:9106:interface=127.0.0.1"
    flagged = load_cluster_config(base + "metrics: {listen: 'tcp:1'}", {"metrics": {"listen": "tcp:2"}})
    assert flagged.metrics_listen == "tcp:2"
    with pytest.raises(ConfigError, match="metrics.listen"):
        load_cluster_config(base + "metrics: {listen: 'nonsense'}")


def _run(coroutine: Any) -> Any:
    """Run a coroutine that StubTreq answers synchronously; its result."""
    from twisted.internet.defer import Deferred

    d = Deferred.fromCoroutine(coroutine)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "StubTreq did not answer synchronously"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]

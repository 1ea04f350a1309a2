"""
Generated requests against the live region API never get a 5xx, and every
error carries the error envelope.

Hypothesis drives the examples synchronously, so it runs in a worker thread
(`deferToThread`) and sends each request on the reactor with
`blockingCallFromThread`; the test itself is an ordinary pytest-twisted
coroutine holding the live `region_stack`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import pytest_twisted
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.internet.threads import blockingCallFromThread, deferToThread

from tests.regionstack import HTTPResult, RegionStack, eventually, region_stack  # noqa: F401

LIVE = "9d2f1c4e-3b5a-4c6d-8e7f-0a1b2c3d4e5f"
GONE = "1c0ffee0-0000-4000-8000-000000000002"
UNKNOWN = "00000000-0000-4000-8000-0000000000ff"

_PING = re.compile(r"^/api/v1/clusters/[^/]+/ping$")
_ROUTES = [
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/rpc-endpoints"),
    ("GET", "/api/v1/clusters"),
    ("GET", "/api/v1/clusters/{uuid}"),
    ("POST", "/api/v1/clusters/{uuid}/ping"),
    ("GET", "/api/openapi.json"),
]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@attrs.frozen
class Req:
    method: str
    path: str  # percent-encoded, as sent
    query: list[tuple[str, str]]
    auth: str | None  # "admin", "read", or a literal header value
    content_type: str | None
    extra_header: tuple[str, str] | None
    body: bytes | None


# -- strategies ----------------------------------------------------------------

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
header_name = st.from_regex(r"\AX-[A-Za-z0-9-]{1,15}\Z")
segment = st.text(max_size=24).map(lambda s: quote(s, safe="-._~!$&'()*+,;=:@"))
raw_segment = st.text(alphabet="abcXYZ019-._~%/{}", max_size=24)
uuid_like = st.one_of(
    st.sampled_from([LIVE, GONE, UNKNOWN, LIVE.upper(), LIVE.replace("-", "")]),
    st.uuids().map(str),
    segment,
    raw_segment,
)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    st.from_regex(r"\A[A-Z]{1,12}\Z"),
)


@st.composite
def targets(draw: Any) -> tuple[str, str]:
    """(method, percent-encoded path): mostly a route's own method on a filled-in template."""
    kind = draw(st.sampled_from(["route"] * 5 + ["random", "under-api", "raw"]))
    if kind == "route":
        method, template = draw(st.sampled_from(_ROUTES))
        path = template.replace("{uuid}", draw(uuid_like))
        path += draw(st.sampled_from([""] * 6 + ["/", "/x", "//"]))
        return draw(mostly(st.just(method), methods)), path
    if kind == "random":
        path = "/" + "/".join(draw(st.lists(segment, max_size=5)))
    elif kind == "under-api":
        path = "/api/v1/" + "/".join(draw(st.lists(segment, min_size=1, max_size=3)))
    else:
        path = "/" + draw(raw_segment)
    return draw(methods), path


query_value = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["true", "false", "yes", "no", "1", "0", "", "TRUE", "maybe", "1e3", "0x10", " 7 ", "1_0"]),
    # Nasty ones: NUL, huge, non-ASCII digits, a number past any column type.  Four of the
    # huge one stay under the 16 KiB request head Twisted takes (beyond it: the test below).
    st.sampled_from(["\x00", "a\x00b", "9" * 20, "-0", "\u0661\u0662", "1" * 3500]),
    st.text(max_size=20),
)
query_pair = st.tuples(st.one_of(st.sampled_from(["page", "page_size", "connected", "name"]), st.text(max_size=8)), query_value)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
timeouts = st.one_of(
    st.floats(min_value=0.05, max_value=120), st.integers(-5, 200), st.floats(), st.text(max_size=5), st.booleans(), st.none()
)
bodies = st.one_of(
    st.none(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"timeout": timeouts}).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["timeout", "extra"]), timeouts, max_size=2).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=50).map(lambda s: s.encode("utf-8")),
)
auths = st.one_of(
    st.sampled_from(["admin", "admin", "read", None, "Bearer opt_nope", "Bearer", "Basic Zm9vOmJhcg==", "bearer  "]),
    printable,
    printable.map(lambda s: "Bearer opt_" + s),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml", ";"]),
    printable,
)


def requests(
    target_strategy: st.SearchStrategy[tuple[str, str]] = targets(),
    auth_strategy: st.SearchStrategy[str | None] = auths,
    content_type_strategy: st.SearchStrategy[str | None] = content_types,
    body_strategy: st.SearchStrategy[bytes | None] = bodies,
) -> Any:
    return st.builds(
        lambda target, **kw: Req(method=target[0], path=target[1], **kw),
        target=target_strategy,
        query=st.lists(query_pair, max_size=4),
        auth=auth_strategy,
        content_type=content_type_strategy,
        extra_header=st.none() | st.tuples(header_name, printable),
        body=body_strategy,
    )


@st.composite
def mostly(draw: Any, usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """`usual` three times in four, else `other` (``one_of`` flattens, so it cannot weight)."""
    return draw(usual if draw(st.sampled_from([True, True, True, False])) else other)


# -- sending and checking -----------------------------------------------------------


def send(stack: RegionStack, req: Req) -> HTTPResult:
    """Send `req` from the hypothesis thread; block until the whole answer is in."""
    headers: dict[str, str] = {}
    if req.auth == "admin":
        headers["Authorization"] = f"Bearer {stack.admin_token}"
    elif req.auth == "read":
        headers["Authorization"] = f"Bearer {stack.read_token}"
    elif req.auth is not None:
        headers["Authorization"] = req.auth
    if req.content_type is not None:
        headers["Content-Type"] = req.content_type
    if req.extra_header is not None:
        headers[req.extra_header[0]] = req.extra_header[1]
    path = req.path + ("?" + urlencode(req.query) if req.query else "")
    kwargs: dict[str, Any] = {"headers": headers}
    if req.body is not None:
        kwargs["data"] = req.body
    return blockingCallFromThread(
        stack.registry.clock, lambda: Deferred.fromCoroutine(stack.request(req.method, path, **kwargs))
    )


def check(req: Req, result: HTTPResult) -> None:
    """The invariants every answer keeps, whatever was asked."""
    where = f"{req.method} {req.path} -> {result.status} {result.raw[:300]!r}"
    if result.status >= 500:
        # Only a ping may fail on the cluster's account: not connected, or too slow.
        assert result.status in (503, 504) and req.method == "POST" and _PING.match(req.path), where
    assert result.headers.get("content-type") == "application/json", where
    if req.method == "HEAD":
        assert result.raw == b"", where
        return
    body = json.loads(result.raw)
    if result.status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, where
        error = body["error"]
        assert set(error) == {"code", "message", "details"}, where
        assert isinstance(error["code"], str) and error["code"], where
        assert isinstance(error["message"], str) and error["message"], where
        assert "Traceback" not in error["message"], where
    if result.status == 401:
        assert "www-authenticate" in result.headers, where
    if result.status == 405:
        assert result.headers.get("allow"), where
    if result.status == 503:
        assert int(result.headers["retry-after"]) > 0, where


async def known_clusters(stack: RegionStack) -> None:
    """LIVE is connected and answers; GONE is known but disconnected."""
    await stack.connect_cluster(LIVE, "live")
    gone = await stack.connect_cluster(GONE, "gone")
    gone.transport.loseConnection()

    async def disconnected() -> bool:
        return stack.registry.connection_count(GONE) == 0

    await eventually(disconnected)


def no_5xx_but_the_pings(stack: RegionStack) -> None:
    observed = [(t, m, s) for t, m, s in stack.observed if s >= 500]
    assert all(t == "/api/v1/clusters/{uuid}/ping" and s in (503, 504) for t, m, s in observed), observed


# -- the properties -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_generated_requests_never_get_a_5xx_and_errors_carry_the_envelope(region_stack: RegionStack) -> None:
    await known_clusters(region_stack)

    @FUZZ
    @given(req=requests())
    def property_(req: Req) -> None:
        check(req, send(region_stack, req))

    await deferToThread(property_)
    no_5xx_but_the_pings(region_stack)
    # Not only the error paths: a good share of the examples reached a route.
    routed = [status for template, _, status in region_stack.observed if template is not None]
    assert len(routed) >= 5 and 200 in routed, region_stack.observed


@pytest_twisted.ensureDeferred
async def test_generated_ping_requests_never_get_a_500_and_errors_carry_the_envelope(region_stack: RegionStack) -> None:
    """The ping is the one route that reads a body and calls a cluster: aim most examples at it."""
    await known_clusters(region_stack)
    # Weighted towards requests that pass the input checks, so the cluster is reached.
    known = st.sampled_from([LIVE, GONE, UNKNOWN])
    ping_targets = mostly(known, uuid_like).map(lambda u: ("POST", f"/api/v1/clusters/{u}/ping"))
    good_body = st.one_of(
        st.none(), st.floats(min_value=0.5, max_value=120).map(lambda t: json.dumps({"timeout": t}).encode())
    )
    strategy = requests(
        ping_targets,
        mostly(st.just("admin"), auths),
        mostly(st.sampled_from([None, "application/json"]), content_types),
        mostly(good_body, bodies),
    )

    @settings(FUZZ, max_examples=100)
    @given(req=strategy)
    def property_(req: Req) -> None:
        check(req, send(region_stack, req))

    await deferToThread(property_)
    no_5xx_but_the_pings(region_stack)
    # The examples did reach the cluster, not only the input checks.
    statuses = {s for t, _, s in region_stack.observed if t == "/api/v1/clusters/{uuid}/ping"}
    assert {200, 503} <= statuses, statuses


_MACHINE_ACTION = re.compile(r"^/api/v1/machines/[^/]+/[^/]+/(power|commission|deploy|release)$")
_MACHINE_TEMPLATES = [
    ("GET", "/api/v1/machines"),
    ("GET", "/api/v1/machines/{cluster}/{system_id}"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/power"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/commission"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/deploy"),
    ("POST", "/api/v1/machines/{cluster}/{system_id}/release"),
    ("POST", "/api/v1/machines/power-query"),
    ("POST", "/api/v1/webhooks/maas/{cluster}"),
    ("GET", "/api/v1/events"),
]


@pytest_twisted.ensureDeferred
async def test_generated_machine_requests_never_get_our_own_5xx(region_stack: RegionStack) -> None:
    """
    Machine routes read bodies, resolve clusters by uuid or name and call
    clusters.  The stack's clusters have no MAAS responders, so a call that
    passes validation gets 502 (unsupported by the cluster) or 503 (not
    connected); nothing may be a 500.
    """
    from regiond.machines.store import MachineStore
    from tests.machinehelpers import summary

    await known_clusters(region_stack)
    for cluster in (LIVE, GONE):
        await MachineStore(region_stack.db).apply_inventory(cluster, [summary("m1")])
    clusters = mostly(st.sampled_from(["live", "gone", LIVE, GONE, UNKNOWN, "nope"]), uuid_like)
    system_ids = mostly(st.sampled_from(["m1", "m2"]), segment)

    @st.composite
    def machine_targets(draw: Any) -> tuple[str, str]:
        method, template = draw(st.sampled_from(_MACHINE_TEMPLATES))
        path = template.replace("{cluster}", draw(clusters)).replace("{system_id}", draw(system_ids))
        return draw(mostly(st.just(method), methods)), path

    field_values = st.one_of(json_values, st.sampled_from(["on", "off", "cycle", "soft", "hard", "jammy", "aGk=", "!!", True, 5]))
    machine_bodies = st.one_of(
        bodies,
        st.dictionaries(
            st.sampled_from(["action", "stop_mode", "distro_series", "user_data", "erase", "enable_ssh", "testing_scripts",
                             "machines", "timeout", "type", "system_id", "status", "power_state", "bogus"]),
            field_values, max_size=4,
        ).map(lambda v: json.dumps(v).encode()),
        st.lists(st.fixed_dictionaries({"cluster": clusters, "system_id": system_ids}), max_size=3).map(
            lambda ms: json.dumps({"machines": ms, "timeout": 1}).encode()
        ),
    )
    query = st.lists(st.tuples(st.sampled_from(["status", "cluster", "tags", "missing", "page", "limit", "after", "type"]), query_value), max_size=3)

    @settings(FUZZ, max_examples=150)
    @given(req=st.builds(
        lambda target, **kw: Req(method=target[0], path=target[1], **kw),
        target=machine_targets(),
        query=query,
        auth=mostly(st.just("admin"), auths),
        content_type=mostly(st.just("application/json"), content_types),
        extra_header=st.none(),
        body=mostly(machine_bodies, bodies),
    ))
    def property_(req: Req) -> None:
        result = send(region_stack, req)
        if result.status >= 500:
            assert result.status in (502, 503), f"{req.method} {req.path} -> {result.status} {result.raw[:300]!r}"
            assert _MACHINE_ACTION.match(req.path) and req.method == "POST", req
            return
        check(req, result)

    await deferToThread(property_)
    served = [(t, s) for t, _, s in region_stack.observed if t is not None]
    assert any(s == 202 or s == 502 for _, s in served), "some actions reached a cluster"
    assert not [x for x in served if x[1] == 500]


# -- the Ignition-compatible infrastructure routes --------------------------------------------

_INFRA_PATH = re.compile(r"^/api/infrastructure/(create|query|delete|find)$")


class _AcceptingInfraSite:
    """Made lazily (amp import kept local to this section): a driver that accepts everything."""

    @staticmethod
    def make() -> Any:
        import itertools

        from twisted.protocols import amp

        from rpc import cluster as commands

        ids = itertools.count(1)

        class Site(amp.CommandLocator):
            @commands.CreateInfrastructure.responder
            def create(self, request: Any) -> dict[str, Any]:
                n = next(ids)
                return {"infrastructure_id": f"inf-{n}", "request_id": f"req-{n}"}

            @commands.DeleteInfrastructure.responder
            def delete(self, infrastructure_id: str, deployment_location: Any) -> dict[str, Any]:
                return {"infrastructure_id": infrastructure_id, "request_id": f"del-{next(ids)}"}

            @commands.FindInfrastructure.responder
            def find(self, request: Any) -> dict[str, Any]:
                return {"result": None}

        return Site()


def check_ignition(req: Req, result: HTTPResult) -> None:
    """The Ignition routes: never a 5xx (the driver accepts all), errors in Ignition's shape."""
    where = f"{req.method} {req.path} -> {result.status} {result.raw[:300]!r}"
    assert result.status < 500, where
    assert result.headers.get("content-type") == "application/json", where
    if req.method == "HEAD" or req.method != "POST":
        # No route takes another method: the router's own 405 (or, for HEAD, no body).
        assert result.status == 405 and result.headers.get("allow") == "POST", where
        return
    body = json.loads(result.raw)
    if result.status >= 400:
        assert isinstance(body, dict) and set(body) == {"localizedMessage", "status"}, where
        assert body["status"] == result.status and isinstance(body["localizedMessage"], str) and body["localizedMessage"], where
        assert "Traceback" not in body["localizedMessage"], where
        if result.status == 401:
            assert "www-authenticate" in result.headers, where
        return
    op = _INFRA_PATH.match(req.path).group(1)  # type: ignore[union-attr]
    if op in ("create", "delete"):
        assert result.status == 202 and set(body) == {"infrastructureId", "requestId"}, where
    elif op == "query":
        assert result.status == 200 and body["status"] in ("IN_PROGRESS", "COMPLETE", "FAILED"), where
    else:
        assert result.status == 200 and body == {"result": None}, where


@pytest_twisted.ensureDeferred
async def test_generated_infrastructure_requests_never_get_a_5xx_and_errors_are_in_ignitions_shape(region_stack: RegionStack) -> None:
    await known_clusters(region_stack)
    region_stack.app.infrastructure_service.connect_wait = 0
    await region_stack.connect_cluster("00000000-0000-4000-8000-0000000000aa", "infra-live", locator=_AcceptingInfraSite.make())
    names = mostly(st.sampled_from(["infra-live", "infra-live", "gone", "nope", "", "00000000-0000-4000-8000-0000000000aa", LIVE]),
                   json_values)
    location = st.one_of(
        st.fixed_dictionaries({"name": names}, optional={"type": mostly(st.just("simulated"), json_values),
                                                          "properties": mostly(st.just({}), json_values), "extra": json_values}),
        json_values,
    )
    strings = mostly(st.text(max_size=30), json_values)
    ids = mostly(st.sampled_from(["inf-1", "inf-2", "req-1", "del-3"]), strings)
    fields = {
        "deploymentLocation": mostly(location, json_values),
        "template": strings, "templateType": mostly(st.sampled_from(["TOSCA", "HEAT"]), strings),
        "systemProperties": mostly(st.dictionaries(st.text(max_size=8), json_values, max_size=3), json_values),
        "properties": mostly(st.dictionaries(st.text(max_size=8), json_values, max_size=3), json_values),
        "infrastructureId": ids, "requestId": ids, "instanceName": strings,
    }
    infra_bodies = st.fixed_dictionaries({}, optional={**fields, "bogus": json_values}).map(lambda v: json.dumps(v).encode())
    # Mostly a body the operation accepts (weighted so a good share reaches the cluster), else anything.
    good_location = st.fixed_dictionaries(
        {"name": mostly(st.just("infra-live"), names)}, optional={"type": st.just("simulated"), "properties": st.just({"k": "v"})}
    )
    good = {
        "create": st.fixed_dictionaries(
            {"deploymentLocation": good_location, "template": st.text(max_size=30), "templateType": st.sampled_from(["TOSCA", "HEAT"])},
            optional={"systemProperties": fields["systemProperties"], "properties": fields["properties"], "bogus": json_values}),
        "find": st.fixed_dictionaries({"deploymentLocation": good_location, "template": st.text(max_size=30),
                                       "templateType": st.sampled_from(["TOSCA", "HEAT"]), "instanceName": st.text(max_size=10)}),
        "delete": st.fixed_dictionaries({"deploymentLocation": good_location, "infrastructureId": ids}),
        "query": st.fixed_dictionaries({"deploymentLocation": good_location, "infrastructureId": ids, "requestId": ids}),
    }

    @st.composite
    def infra_requests(draw: Any) -> Req:
        op = draw(st.sampled_from(sorted(good)))
        body = draw(mostly(good[op].map(lambda v: json.dumps(v).encode()), st.one_of(infra_bodies, bodies)))
        return Req(
            method=draw(mostly(st.just("POST"), methods)), path=f"/api/infrastructure/{op}", query=draw(st.lists(query_pair, max_size=2)),
            auth=draw(mostly(st.just("admin"), auths)),
            content_type=draw(mostly(st.sampled_from([None, "application/json", "application/json; charset=utf-8"]), content_types)),
            extra_header=None, body=body,
        )

    strategy = infra_requests()

    @settings(FUZZ, max_examples=200)
    @given(req=strategy)
    def property_(req: Req) -> None:
        check_ignition(req, send(region_stack, req))

    await deferToThread(property_)
    served = [(t, s) for t, _, s in region_stack.observed if t is not None and t.startswith("/api/infrastructure/")]
    assert not [x for x in served if x[1] >= 500], served
    # The examples got past the checks to the cluster, and through them to the records.
    assert {202, 400} <= {s for _, s in served}, served


class _Raw(Protocol):
    """Sends bytes as they are and keeps what comes back until the connection closes."""

    def __init__(self, request: bytes) -> None:
        self.request, self.received, self.closed = request, b"", Deferred[bytes]()

    def connectionMade(self) -> None:  # noqa: N802
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802
        self.closed.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_a_request_head_over_16_kib_is_refused_and_the_region_carries_on(region_stack: RegionStack) -> None:
    """
    Twisted's HTTP server takes at most 16 KiB of request line and headers;
    beyond that it answers a bare 400 and closes (the client may see the
    connection reset instead, if it was still sending).  Nothing reaches a
    handler, and the next request is served as usual.
    """
    port = int(region_stack.origin.rsplit(":", 1)[1])
    huge = b"GET /api/v1/clusters?name=" + b"x" * 17_000 + b" HTTP/1.1\r\nHost: region\r\n\r\n"
    raw = _Raw(huge)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
    answer = await raw.closed
    assert answer in (b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"), answer[:200]
    result = await region_stack.request("GET", "/api/v1/clusters?name=" + "x" * 3500, token=region_stack.read_token)
    assert result.status == 200, result.raw

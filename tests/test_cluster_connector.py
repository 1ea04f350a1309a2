"""The cluster's region connector: discovery, registration, liveness and backoff, on a fake clock."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim

from clusterd.connector import (
    DISCOVERY_INTERVAL,
    MAX_BACKOFF,
    PING_INTERVAL,
    PING_TIMEOUT,
    RegionConnector,
    parse_endpoints,
    reconnect_policy,
)
from rpc.errors import NoConnectionsAvailable
from rpc.protocol import REGION, RPCProtocol
from rpc.region import RegisterCluster
from tests.rpchelpers import SECRET, make_pair

UUID = "33333333-3333-3333-3333-333333333333"


class FakeResponse:
    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self._body = body

    def json(self) -> Deferred:
        return succeed(self._body)

    def text(self) -> Deferred:
        return succeed(json.dumps(self._body))


class FakeHTTP:
    """Answers discovery GETs from a script; records the URLs asked."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.asked: list[str] = []

    def get(self, url: str, **kw: Any) -> Deferred:
        self.asked.append(url)
        answer = self.answers.pop(0) if self.answers else ConnectionRefusedError()
        if isinstance(answer, Exception):
            d: Deferred = Deferred()
            d.errback(answer)
            return d
        return succeed(answer)


class PendingEndpoint:
    """An endpoint whose connection attempts never complete."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def connect(self, factory: Any) -> Deferred:
        return Deferred()


def make_connector(clock: Clock, http: FakeHTTP) -> RegionConnector:
    return RegionConnector(
        reactor=clock,
        region_urls=("http://region-a:5240/",),
        secret=SECRET,
        uuid=UUID,
        name="site",
        version="1",
        http=http,
        rng=lambda: 0.5,
        endpoint_factory=lambda reactor, host, port: PendingEndpoint(host, port),
    )


def endpoints_doc(*pairs: tuple[str, int]) -> FakeResponse:
    return FakeResponse(200, {"endpoints": [{"host": h, "port": p} for h, p in pairs]})


def test_discovery_connects_to_every_region_process_listed() -> None:
    clock, http = Clock(), FakeHTTP()
    http.answers = [endpoints_doc(("10.0.0.1", 5250), ("10.0.0.2", 5250))]
    connector = make_connector(clock, http)
    connector.startService()
    clock.advance(0)
    assert http.asked == ["http://region-a:5240/api/v1/rpc-endpoints"]
    assert connector.endpoints == [("10.0.0.1", 5250), ("10.0.0.2", 5250)]
    assert len(list(connector)) == 2  # one ClientService each
    connector.stopService()


def test_region_processes_that_leave_the_document_are_dropped_and_new_ones_added() -> None:
    clock, http = Clock(), FakeHTTP()
    http.answers = [endpoints_doc(("a", 1), ("b", 2)), endpoints_doc(("b", 2), ("c", 3))]
    connector = make_connector(clock, http)
    connector.startService()
    clock.advance(0)
    clock.advance(DISCOVERY_INTERVAL)
    assert connector.endpoints == [("b", 2), ("c", 3)]
    assert len(list(connector)) == 2
    connector.stopService()


def test_failed_discovery_keeps_existing_connections_and_retries_with_backoff() -> None:
    clock, http = Clock(), FakeHTTP()
    connector = make_connector(clock, http)
    connector.startService()
    clock.advance(0)
    assert len(http.asked) == 1 and connector.endpoints == []
    # Before the first success, retries come sooner than the 30 s interval, growing.
    delays = []
    for _ in range(12):
        before = len(http.asked)
        step = 0.0
        while len(http.asked) == before:
            clock.advance(0.25)
            step += 0.25
        delays.append(step)
    assert delays[0] < 3 and delays == sorted(delays) and max(delays) <= MAX_BACKOFF
    http.answers = [endpoints_doc(("a", 1))]
    clock.advance(MAX_BACKOFF)
    assert connector.endpoints == [("a", 1)]
    # A later failure does not drop what we have.
    clock.advance(DISCOVERY_INTERVAL)
    assert connector.endpoints == [("a", 1)]
    connector.stopService()


def test_non_200_discovery_answers_count_as_failures() -> None:
    clock, http = Clock(), FakeHTTP()
    http.answers = [FakeResponse(500, {"error": {}})]
    connector = make_connector(clock, http)
    connector.startService()
    clock.advance(0)
    assert connector.endpoints == []
    connector.stopService()


def test_stopping_cancels_pending_discovery() -> None:
    clock, http = Clock(), FakeHTTP()
    connector = make_connector(clock, http)
    connector.startService()
    clock.advance(0)
    connector.stopService()
    assert not clock.getDelayedCalls()


class Registrar(amp.CommandLocator):
    def __init__(self) -> None:
        self.registered: list[str] = []

    @RegisterCluster.responder
    def register(self, uuid: str, name: str, version: str, capabilities: Any) -> dict:
        self.registered.append(uuid)
        return {}


def test_a_connection_is_live_only_after_it_registers_and_dies_when_pings_go_unanswered() -> None:
    clock, http = Clock(), FakeHTTP()
    connector = make_connector(clock, http)
    registrar = Registrar()
    hooked: list[int] = []
    connector.on_live.append(lambda: hooked.append(len(connector.live)))
    connector.on_live.append(lambda: 1 / 0)  # a failing hook is logged; the others and the connection carry on
    region, cluster, pump, _ = make_pair(region_locator=registrar, clock=clock)
    connector.connection_made(cluster, ("r", 1))
    assert connector.live == set()
    pump.flush()
    assert registrar.registered == [UUID]
    assert connector.live == {cluster} and hooked == [1], "hooks run once the connection is live"
    assert connector.getClient().connection is cluster
    # Pings every 30 s are answered while the region reads...
    clock.advance(PING_INTERVAL)
    pump.flush()
    assert cluster.connected
    # ...and when the region stops answering, the connection is dropped after 10 s.
    clock.advance(PING_INTERVAL)
    clock.advance(PING_TIMEOUT)
    pump.flush()
    assert not cluster.connected
    assert connector.live == set()
    try:
        connector.getClient()
    except NoConnectionsAvailable:
        pass
    else:
        raise AssertionError("expected NoConnectionsAvailable")


def test_rejected_registration_closes_the_connection() -> None:
    clock, http = Clock(), FakeHTTP()
    connector = make_connector(clock, http)
    region, cluster, pump, _ = make_pair(region_locator=amp.CommandLocator(), clock=clock)
    connector.connection_made(cluster, ("r", 1))
    pump.flush()
    assert connector.live == set()
    assert not cluster.connected


@given(st.integers(min_value=0, max_value=1000), st.floats(min_value=0, max_value=1))
def test_reconnect_backoff_is_capped_at_thirty_seconds(attempt: int, jitter: float) -> None:
    delay = reconnect_policy(lambda: jitter)(attempt)
    assert 0 < delay <= MAX_BACKOFF


@given(st.recursive(st.none() | st.integers() | st.text() | st.booleans(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_malformed_discovery_documents_yield_only_valid_endpoints(document: Any) -> None:
    for host, port in parse_endpoints(document):
        assert isinstance(host, str) and host and 0 < port < 65536


class InMemoryRegion:
    """
    An endpoint whose every connect reaches, in memory, a region process
    holding `secret`: the TCP connect always succeeds, authentication only
    when the secrets match.
    """

    def __init__(self, clock: Clock, secret: bytes) -> None:
        self.clock, self.secret = clock, secret
        self.attempts: list[float] = []
        self.pumps: list[iosim.IOPump] = []
        self.registrar = Registrar()

    def connect(self, factory: Any) -> Deferred:
        self.attempts.append(self.clock.seconds())
        region = RPCProtocol(secret=self.secret, role=REGION, clock=self.clock, ident="region", locator=self.registrar)
        built: list[Any] = []  # ClientService's proxy, which it wants back
        _, _, pump = iosim.connectedServerAndClient(
            lambda: region, lambda: built.append(factory.buildProtocol(None)) or built[0], greet=False, clock=self.clock
        )
        self.pumps.append(pump)
        return succeed(built[0])

    def run(self, clock: Clock, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            clock.advance(0.1)
            for pump in self.pumps:
                pump.flush()


def test_a_refused_cluster_backs_off_to_the_cap_and_a_registered_one_reconnects_at_once() -> None:
    clock = Clock()
    region = InMemoryRegion(clock, b"another secret".ljust(32, b"!"))
    connector = make_connector(clock, FakeHTTP())
    connector.endpoint_factory = lambda reactor, host, port: region
    connector.startService()
    connector.set_endpoints([("r", 1)])
    region.run(clock, 300)
    gaps = [b - a for a, b in zip(region.attempts, region.attempts[1:])]
    # 1 s, 1.5 s, 2.25 s ... then every 30 s at most: not one refused handshake a second.
    assert len(region.attempts) < 20, gaps
    assert all(b > a - 0.5 for a, b in zip(gaps, gaps[1:])) and gaps[-1] >= MAX_BACKOFF - 2, gaps
    assert connector.live == set() and region.registrar.registered == []

    # The secret is put right: the next attempt registers...
    region.secret = SECRET
    region.run(clock, MAX_BACKOFF + 1)
    assert region.registrar.registered == [UUID] and len(connector.live) == 1
    # ...and a registered connection that drops is retried within seconds again.
    before = len(region.attempts)
    [live] = connector.live
    live.transport.loseConnection()
    region.run(clock, 3)
    assert len(region.attempts) == before + 1 and region.registrar.registered == [UUID, UUID]
    connector.stopService()

"""Clients and gather() from a real non-reactor thread, over real TCP on 127.0.0.1."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols import amp

from rpc import errors
from rpc.blocking import ThreadClient, gather_blocking
from rpc.client import ClusterClient
from rpc.common import Ping, RPCCommand
from rpc.gather import Status
from rpc.protocol import CLUSTER, REGION, RPCFactory

SECRET = b"t" * 32


class Sleep(RPCCommand):
    arguments = [(b"seconds", amp.Float())]
    response: list = []


class Fail(RPCCommand):
    arguments: list = []
    response: list = []
    errors = {ValueError: b"VALUE"}


class ClusterResponders(amp.CommandLocator):
    @Sleep.responder
    def sleep(self, seconds: float) -> Deferred:
        return deferLater(reactor, seconds, lambda: {})

    @Fail.responder
    def fail(self) -> dict:
        raise ValueError("as asked")


@pytest_twisted.async_yield_fixture
async def connection():
    """A cluster dialled in to a region over loopback TCP; yields the region's client for it."""
    connected: list = []
    server_factory = RPCFactory(secret=SECRET, role=REGION, clock=reactor, locator_factory=lambda p: amp.CommandLocator())
    orig = server_factory.buildProtocol

    def build(addr):
        proto = orig(addr)
        connected.append(proto)
        return proto

    server_factory.buildProtocol = build
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
    client_factory = RPCFactory(secret=SECRET, role=CLUSTER, clock=reactor, locator_factory=lambda p: ClusterResponders())
    cluster = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(client_factory)
    await cluster.when_authenticated()
    region_side = connected[0]
    await region_side.when_authenticated()
    yield ClusterClient(region_side, ident="c1")
    cluster.transport.loseConnection()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_thread_client_calls_block_in_a_real_thread(connection) -> None:
    main = threading.current_thread()

    def in_thread() -> tuple:
        assert threading.current_thread() is not main
        answer = ThreadClient(connection).call(Ping)
        try:
            ThreadClient(connection).call(Fail)
        except ValueError as e:
            raised = e
        return answer, raised

    answer, raised = await deferToThread(in_thread)
    assert answer == {} and str(raised) == "as asked"


@pytest_twisted.ensureDeferred
async def test_thread_client_call_timeout_raises_call_timed_out(connection) -> None:
    def in_thread() -> Exception:
        with pytest.raises(errors.CallTimedOut) as info:
            ThreadClient(connection).call(Sleep, seconds=5.0, timeout=0.2)
        return info.value

    assert isinstance(await deferToThread(in_thread), errors.CallTimedOut)


@pytest_twisted.ensureDeferred
async def test_gather_blocking_yields_fast_slow_failing_and_hanging_outcomes(connection) -> None:
    calls = {
        "fast": partial(connection, Ping),
        "slow": partial(connection, Sleep, seconds=0.3),
        "failing": partial(connection, Fail),
        "hanging": partial(connection, Sleep, seconds=30.0),
    }

    def in_thread() -> list:
        return [(o.key, o.status) for o in gather_blocking(calls, timeout=1.0)]

    outcomes = await deferToThread(in_thread)
    assert outcomes[-1] == ("hanging", Status.TIMEOUT)
    assert outcomes.index(("fast", Status.OK)) < outcomes.index(("slow", Status.OK))
    assert ("failing", Status.FAILED) in outcomes
    assert len(outcomes) == 4

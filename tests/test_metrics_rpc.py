"""RPC metrics: calls by direction, command and outcome with latency on both ends, and fan-out outcomes."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from outpost.metrics import Metrics
from rpc import errors
from rpc.common import Ping, RPCCommand
from rpc.gather import gather
from tests.rpchelpers import make_pair


class Hang(RPCCommand):
    arguments: list = []
    response: list = []


class Explode(RPCCommand):
    arguments: list = []
    response: list = []


class Declared(RPCCommand):
    arguments: list = []
    response: list = []
    errors = {KeyError: b"NO_SUCH_THING"}


class Number(RPCCommand):
    arguments = [(b"n", amp.Integer())]
    response: list = []


class Responders(amp.CommandLocator):
    def __init__(self) -> None:
        self.hanging: list[Deferred] = []

    @Hang.responder
    def hang(self) -> Deferred:
        d: Deferred = Deferred()
        self.hanging.append(d)
        return d

    @Explode.responder
    def explode(self) -> dict:
        raise ZeroDivisionError("boom")

    @Declared.responder
    def declared(self) -> dict:
        raise KeyError("thing")

    @Number.responder
    def number(self, n: int) -> dict:
        return {}


def pair() -> tuple[Any, Any, Any, Any, Metrics, Metrics, Responders]:
    """An authenticated pair, each end with a registry of its own (the handshake is not counted)."""
    responders = Responders()
    region, cluster, pump, clock = make_pair(cluster_locator=responders)
    region_metrics, cluster_metrics = Metrics.create(clock), Metrics.create(clock)
    region.metrics, cluster.metrics = region_metrics.rpc, cluster_metrics.rpc
    return region, cluster, pump, clock, region_metrics, cluster_metrics, responders


def calls(metrics: Metrics, direction: str, command: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "outpost_rpc_calls_total", {"direction": direction, "command": command, "outcome": outcome}
    )


def latency(metrics: Metrics, direction: str, command: str, suffix: str, le: str | None = None) -> float | None:
    labels = {"direction": direction, "command": command}
    if le is not None:
        labels["le"] = le
    return metrics.registry.get_sample_value(f"outpost_rpc_call_duration_seconds_{suffix}", labels)


def test_a_sequence_of_calls_is_counted_by_command_and_outcome_on_both_ends() -> None:
    region, cluster, pump, clock, rm, cm, responders = pair()
    for _ in range(3):
        region.call(Ping)
    region.call(Explode).addErrback(lambda f: None)
    region.call(Declared).addErrback(lambda f: None)
    pump.flush()
    # The region made the calls...
    assert calls(rm, "out", "Ping", "ok") == 3
    assert calls(rm, "out", "Explode", "error") == 1
    assert calls(rm, "out", "Declared", "error") == 1
    assert latency(rm, "out", "Ping", "count") == 3
    # ...and the cluster answered them, telling a declared error from an unhandled one.
    assert calls(cm, "in", "Ping", "ok") == 3
    assert calls(cm, "in", "Explode", "unhandled") == 1
    assert calls(cm, "in", "Declared", "error") == 1
    assert calls(cm, "out", "Ping", "ok") is None


def test_latency_is_measured_on_the_protocols_clock_at_both_ends() -> None:
    region, cluster, pump, clock, rm, cm, responders = pair()
    d = region.call(Hang)
    pump.flush()
    clock.advance(0.3)
    responders.hanging[0].callback({})
    pump.flush()
    assert d.called
    for metrics, direction in ((rm, "out"), (cm, "in")):
        assert latency(metrics, direction, "Hang", "sum") == 0.3
        assert latency(metrics, direction, "Hang", "bucket", "0.25") == 0
        assert latency(metrics, direction, "Hang", "bucket", "0.5") == 1


def test_timeouts_cancellations_and_lost_connections_have_outcomes_of_their_own() -> None:
    region, cluster, pump, clock, rm, cm, responders = pair()
    region.call(Hang, timeout=5).addErrback(lambda f: f.trap(errors.CallTimedOut))
    cancelled = region.call(Hang, timeout=0)
    cancelled.addErrback(lambda f: None)
    pump.flush()
    clock.advance(5)
    cancelled.cancel()
    assert calls(rm, "out", "Hang", "timeout") == 1
    assert latency(rm, "out", "Hang", "sum") == 10.0  # both waited 5 s
    assert calls(rm, "out", "Hang", "cancelled") == 1
    lost = region.call(Hang, timeout=0)
    lost.addErrback(lambda f: f.trap(errors.ConnectionClosed))
    pump.flush()
    cluster.transport.loseConnection()
    pump.flush()
    assert calls(rm, "out", "Hang", "unavailable") == 1
    region.call(Ping).addErrback(lambda f: f.trap(errors.ConnectionClosed))
    assert calls(rm, "out", "Ping", "unavailable") == 1


def test_arguments_that_cannot_be_sent_count_as_invalid() -> None:
    region, cluster, pump, clock, rm, cm, responders = pair()
    region.call(Number, n="not a number").addErrback(lambda f: f.trap(errors.InvalidArgument))
    assert calls(rm, "out", "Number", "invalid") == 1


def test_a_protocol_without_metrics_records_nothing_and_still_works() -> None:
    region, cluster, pump, clock = make_pair()
    d = region.call(Ping)
    pump.flush()
    assert d.called and region.metrics is None


def test_fanout_outcomes_are_counted_by_status() -> None:
    region, cluster, pump, clock, rm, cm, responders = pair()
    outcomes = gather(
        {
            "ok": lambda: region.call(Ping),
            "failed": lambda: region.call(Explode),
            "slow": lambda: region.call(Hang, timeout=0),
        },
        timeout=10,
        clock=clock,
        metrics=rm.gather,
    )
    pump.flush()
    clock.advance(10)
    assert len(outcomes.result) == 3

    def count(outcome: str) -> float | None:
        return rm.registry.get_sample_value("outpost_rpc_gather_outcomes_total", {"outcome": outcome})

    assert (count("ok"), count("failed"), count("timeout"), count("unavailable")) == (1, 1, 1, 0)


def test_unavailable_fanout_outcomes_are_counted() -> None:
    _, _, _, clock, rm, _, _ = pair()

    def absent() -> Deferred:
        raise errors.NoConnectionsAvailable("not connected")

    gather([absent, absent], timeout=1, clock=clock, metrics=rm.gather)
    assert rm.registry.get_sample_value("outpost_rpc_gather_outcomes_total", {"outcome": "unavailable"}) == 2

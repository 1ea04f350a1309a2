"""Calls over an authenticated connection: timeouts, connection loss, unexpected errors, large values."""

from __future__ import annotations

import random

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp

from rpc import errors
from rpc.arguments import Structure
from rpc.common import Ping, RPCCommand
from tests.rpchelpers import make_pair


class Echo(RPCCommand):
    arguments = [(b"value", Structure())]
    response = [(b"value", Structure())]


class Hang(RPCCommand):
    arguments: list = []
    response: list = []


class Explode(RPCCommand):
    arguments: list = []
    response: list = []


class NotNow(RPCCommand):
    arguments: list = []
    response: list = []


class Outage(errors.Transient, RuntimeError):
    pass


class Declared(RPCCommand):
    arguments: list = []
    response: list = []
    errors = {KeyError: b"NO_SUCH_THING"}


class Responders(amp.CommandLocator):
    def __init__(self) -> None:
        self.hanging: list[Deferred] = []

    @Echo.responder
    def echo(self, value: object) -> dict:
        return {"value": value}

    @Hang.responder
    def hang(self) -> Deferred:
        d: Deferred = Deferred()
        self.hanging.append(d)
        return d

    @Explode.responder
    def explode(self) -> dict:
        raise ZeroDivisionError("boom")

    @NotNow.responder
    def not_now(self) -> dict:
        raise Outage("the database is restarting")

    @Declared.responder
    def declared(self) -> dict:
        raise KeyError("thing")


def result_of(d: Deferred) -> object:
    out: list = []
    d.addBoth(out.append)
    assert out, "deferred has not fired"
    return out[0]


@pytest.fixture
def pair():
    return make_pair(region_locator=Responders(), cluster_locator=Responders())


def test_call_times_out_after_the_default_of_120_seconds(pair) -> None:
    region, cluster, pump, clock = pair
    d = cluster.call(Hang)
    pump.flush()
    clock.advance(119.9)
    assert not d.called
    clock.advance(0.2)
    failure = result_of(d)
    assert failure.check(errors.CallTimedOut)
    assert failure.value.timeout == 120


def test_per_call_timeout_overrides_the_default(pair) -> None:
    region, cluster, pump, clock = pair
    d = cluster.call(Hang, timeout=2)
    pump.flush()
    clock.advance(2)
    assert result_of(d).check(errors.CallTimedOut)


def test_a_late_answer_after_a_timeout_is_dropped_quietly(pair) -> None:
    region, cluster, pump, clock = pair
    d = cluster.call(Hang, timeout=1)
    pump.flush()
    clock.advance(1)
    assert result_of(d).check(errors.CallTimedOut)
    region.domain_locator.hanging[0].callback({})
    pump.flush()
    assert cluster.connected
    # The connection still works.
    d2 = cluster.call(Echo, value=1)
    pump.flush()
    assert result_of(d2) == {"value": 1}


def test_outstanding_calls_fail_at_once_when_the_connection_goes(pair) -> None:
    region, cluster, pump, clock = pair
    calls = [cluster.call(Hang) for _ in range(3)]
    pump.flush()
    assert not any(d.called for d in calls)
    region.transport.loseConnection()
    pump.flush()
    for d in calls:
        assert result_of(d).check(errors.ConnectionClosed)
    # And a call on the dead connection fails straight away.
    assert result_of(cluster.call(Ping)).check(errors.ConnectionClosed)


def test_unhandled_responder_error_is_answered_with_a_reference_and_logged(pair) -> None:
    region, cluster, pump, clock = pair
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        d = cluster.call(Explode)
        pump.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    failure = result_of(d)
    assert failure.check(errors.RemoteUnhandledError)
    reference = failure.value.reference
    host, pid, command, ask = reference.split(":")
    assert command == "Explode" and ask
    logged = [e for e in events if e.get("reference") == reference]
    assert logged and logged[0]["log_failure"].check(ZeroDivisionError)
    # The connection survives.
    assert region.connected and cluster.connected
    d2 = cluster.call(Echo, value="still here")
    pump.flush()
    assert result_of(d2) == {"value": "still here"}


def test_a_transient_responder_error_is_answered_with_a_reference_and_logged_in_one_line(pair, logged) -> None:
    region, cluster, pump, clock = pair
    d = cluster.call(NotNow)
    pump.flush()
    failure = result_of(d)
    assert failure.check(errors.RemoteUnhandledError)
    [event] = [e for e in logged if e.get("reference") == failure.value.reference]
    assert "log_failure" not in event, "no traceback for an outage"
    assert event["log_level"] == LogLevel.warn and "the database is restarting" in formatEvent(event)
    assert region.connected and cluster.connected


def test_declared_errors_cross_the_wire_as_themselves(pair) -> None:
    region, cluster, pump, clock = pair
    d = cluster.call(Declared)
    pump.flush()
    assert result_of(d).check(KeyError)
    assert region.connected


def test_unknown_command_is_a_clear_error_not_a_disconnect(pair) -> None:
    region, cluster, pump, clock = pair

    class Nope(RPCCommand):
        arguments: list = []
        response: list = []

    d = cluster.call(Nope)
    pump.flush()
    assert result_of(d).check(errors.UnknownCommand)
    assert region.connected


def test_malformed_arguments_get_invalid_argument_and_keep_the_connection(pair) -> None:
    region, cluster, pump, clock = pair
    from rpc.region import RegisterCluster

    class Registrar(amp.CommandLocator):
        @RegisterCluster.responder
        def register(self, **kw: object) -> dict:
            return {}

    region.domain_locator = Registrar()
    answers: list = []
    box = amp.AmpBox(_command=b"RegisterCluster", _ask=b"99", uuid=b"not-a-uuid", name=b"a", version=b"1", capabilities=b"J[]")
    cluster._outstandingRequests[b"99"] = d = Deferred()
    d.addBoth(answers.append)
    cluster.boxSender.sendBox(box)
    pump.flush()
    assert isinstance(answers[0].value, amp.RemoteAmpError)
    assert answers[0].value.errorCode == b"INVALID_ARGUMENT"
    assert region.connected


def big_structure(size: int) -> dict:
    rnd = random.Random(1)
    machines = []
    total = 0
    while total < size:
        m = {
            "system_id": "".join(rnd.choice("abcdefghkmnpqrstwxy0123456789") for _ in range(6)),
            "hostname": f"node-{len(machines)}",
            "blob": "".join(rnd.choice("0123456789abcdef") for _ in range(400)),
        }
        machines.append(m)
        total += 470
    return {"machines": machines}


def test_five_megabyte_structures_cross_both_ways(pair) -> None:
    region, cluster, pump, clock = pair
    value = big_structure(5 * 1024 * 1024)
    up = cluster.call(Echo, value=value)
    pump.flush()
    assert result_of(up) == {"value": value}
    down = region.call(Echo, value=value)
    pump.flush()
    assert result_of(down) == {"value": value}


def test_arguments_that_do_not_serialise_fail_the_call_not_the_caller(pair) -> None:
    region, cluster, pump, clock = pair
    d = cluster.call(Echo, value=object())
    assert result_of(d).check(errors.InvalidArgument)
    assert cluster.connected

"""gather(): every call at once, outcomes in completion order, failures as values, a hard timeout."""

from __future__ import annotations

from functools import partial

from hypothesis import given, strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, deferLater

from rpc import errors
from rpc.common import Ping
from rpc.gather import Status, gather
from tests.rpchelpers import make_pair


def test_outcomes_arrive_in_completion_order_with_failures_as_values() -> None:
    clock = Clock()
    seen: list = []
    calls = {
        "slow": lambda: deferLater(clock, 5, lambda: "slow"),
        "fast": lambda: succeed("fast"),
        "failing": lambda: fail(ValueError("no")),
        "raising": lambda: 1 / 0,
        "hanging": lambda: Deferred(),
        "gone": lambda: fail(errors.NoConnectionsAvailable("gone")),
    }
    d = gather(calls, timeout=10, clock=clock, on_outcome=seen.append)
    assert not d.called
    clock.advance(5)
    assert [o.key for o in seen] == ["fast", "failing", "raising", "gone", "slow"]
    clock.advance(5)
    outcomes = d.result
    assert [o.key for o in outcomes] == ["fast", "failing", "raising", "gone", "slow", "hanging"]
    by_key = {o.key: o for o in outcomes}
    assert by_key["fast"].value == "fast" and by_key["fast"].ok
    assert by_key["slow"].value == "slow"
    assert by_key["failing"].status is Status.FAILED and by_key["failing"].failure.check(ValueError)
    assert by_key["raising"].status is Status.FAILED
    assert by_key["hanging"].status is Status.TIMEOUT
    assert by_key["gone"].status is Status.UNAVAILABLE


def test_timed_out_calls_are_cancelled() -> None:
    clock = Clock()
    cancelled: list = []
    hanging: Deferred = Deferred(lambda d: cancelled.append(True))
    d = gather([lambda: hanging], timeout=3, clock=clock)
    clock.advance(3)
    assert cancelled == [True]
    assert d.result[0].status is Status.TIMEOUT


def test_gather_finishes_early_when_everything_answered() -> None:
    clock = Clock()
    d = gather([lambda: deferLater(clock, 1, lambda: 1)], timeout=100, clock=clock)
    clock.advance(1)
    assert d.called
    assert not clock.getDelayedCalls(), "the timeout timer must be cancelled"


def test_empty_gather_fires_at_once() -> None:
    assert gather([], timeout=1, clock=Clock()).result == []


@given(st.lists(st.sampled_from(["ok", "fail", "hang", "later"]), max_size=30))
def test_every_call_gets_exactly_one_outcome(kinds: list[str]) -> None:
    clock = Clock()

    def make(kind: str):
        return {
            "ok": lambda: succeed(1),
            "fail": lambda: fail(RuntimeError()),
            "hang": Deferred,
            "later": lambda: deferLater(clock, 1, lambda: 2),
        }[kind]

    d = gather([make(k) for k in kinds], timeout=5, clock=clock)
    clock.advance(5)
    outcomes = d.result
    assert sorted(o.key for o in outcomes) == list(range(len(kinds)))
    for o in outcomes:
        expected = {"ok": Status.OK, "fail": Status.FAILED, "hang": Status.TIMEOUT, "later": Status.OK}[kinds[o.key]]
        assert o.status is expected


def test_gather_over_rpc_connections_reports_each_peer() -> None:
    pairs = [make_pair() for _ in range(3)]
    # The third cluster has gone away.
    pairs[2][0].transport.loseConnection()
    pairs[2][2].flush()
    clock = pairs[0][3]
    calls = {i: partial(region.call, Ping) for i, (region, cluster, pump, c) in enumerate(pairs)}
    d = gather(calls, timeout=10, clock=clock)
    for p in pairs:
        p[2].flush()
    outcomes = {o.key: o.status for o in d.result}
    assert outcomes == {0: Status.OK, 1: Status.OK, 2: Status.UNAVAILABLE}

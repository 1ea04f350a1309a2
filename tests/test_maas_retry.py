"""Retry timing on a fake clock: backoff bounds, Retry-After honoured, cancellation stops retrying."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from clusterd.maas import MAASUnavailable, RetryPolicy
from clusterd.maas.retry import MAX_RETRY_AFTER, parse_retry_after
from simulators.maas import MAASSimulator
from tests.maashelpers import API_KEY, in_memory_client


@given(
    attempts=st.integers(1, 20),
    base=st.floats(0, 60, allow_nan=False),
    cap=st.floats(0, 600, allow_nan=False),
    failures=st.integers(1, 200),
    r=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_full_jitter_under_the_capped_exponential(attempts: int, base: float, cap: float, failures: int, r: float) -> None:
    delay = RetryPolicy(attempts, base, cap).delay(failures, lambda: r)
    assert 0 <= delay <= min(cap, base * 2 ** min(failures - 1, 62)) + 1e-9


@given(st.floats(allow_nan=False))
def test_retry_after_wins_and_is_capped(retry_after: float) -> None:
    delay = RetryPolicy().delay(1, lambda: 0.5, retry_after)
    assert 0 <= delay <= MAX_RETRY_AFTER


@given(st.text(max_size=40))
def test_parsing_any_retry_after_header_never_raises(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0


def test_retry_after_in_seconds_is_read_and_a_date_is_ignored() -> None:
    assert parse_retry_after(b"7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


@pytest.mark.parametrize("bad", [dict(attempts=0), dict(base=-1), dict(cap=float("nan")), dict(attempts=True)])
def test_a_nonsensical_policy_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_a_503_retry_after_is_waited_out_exactly_on_the_clock() -> None:
    clock = Clock()
    sim = MAASSimulator.create(clock, machines=3, api_key=API_KEY)
    sim.set_faults(retry_after=7)
    sim.script_faults("error", "error")
    client = in_memory_client(sim, clock, retry=RetryPolicy(attempts=3, base=100, cap=100))
    d = Deferred.fromCoroutine(client.whoami())
    assert len(sim.request_log) == 1
    clock.advance(6.9)
    assert len(sim.request_log) == 1 and not d.called
    clock.advance(0.1)
    assert len(sim.request_log) == 2
    clock.advance(7)
    assert len(sim.request_log) == 3
    assert d.result["username"] == "admin"  # type: ignore[attr-defined]


def test_without_retry_after_the_waits_follow_the_jittered_backoff() -> None:
    clock = Clock()
    sim = MAASSimulator.create(clock, machines=3, api_key=API_KEY)
    sim.set_faults(error_rate=1.0)
    client = in_memory_client(sim, clock, retry=RetryPolicy(attempts=4, base=1, cap=3))  # rng() = 0.5
    d = Deferred.fromCoroutine(client.whoami())
    seen = []
    for _ in range(12):
        clock.advance(0.25)
        seen.append(len(sim.request_log))
    # Tries at 0, 0.5, 1.5 and 3.0: waits of 0.5 x (1, 2, then the cap 3).
    assert seen == [1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4]
    failure = []
    d.addErrback(failure.append)
    assert failure and failure[0].check(MAASUnavailable)


def test_cancelling_a_call_stops_its_retries() -> None:
    clock = Clock()
    sim = MAASSimulator.create(clock, machines=3, api_key=API_KEY)
    sim.set_faults(error_rate=1.0)
    client = in_memory_client(sim, clock, retry=RetryPolicy(attempts=10, base=1, cap=1))
    d = Deferred.fromCoroutine(client.whoami())
    d.addErrback(lambda f: None)
    d.cancel()
    clock.advance(60)
    assert len(sim.request_log) == 1

"""
Fan-out: make many calls at once and collect every outcome.

`gather` issues every call at once and reports outcomes in completion order.
A failure is a value, not an exception.  Calls still outstanding at the
timeout are cancelled and reported as timed out.  The blocking iterator for
threads is `rpc.blocking.gather_blocking`.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from rpc import errors

__all__ = ["Outcome", "Status", "gather", "as_keyed"]


class Status(str, enum.Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"


@attrs.frozen
class Outcome:
    """What happened to one call."""

    key: Hashable
    status: Status
    value: Any = None
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def error(self) -> str | None:
        return None if self.failure is None else self.failure.getErrorMessage()


Call = Callable[[], Any]

#: A mapping's key type (`Mapping` is invariant in it, so ``Mapping[Hashable, ...]`` would refuse a ``dict[str, ...]``).
Key = TypeVar("Key", bound=Hashable)

#: Errors meaning "the peer could not be reached", as opposed to "it answered with an error".
UNAVAILABLE = (errors.NoConnectionsAvailable, errors.ConnectionClosed, errors.NotAuthenticated)


class OutcomeMetrics(Protocol):
    """What `gather` counts outcomes into (`outpost.metrics.GatherMetrics`)."""

    def observe(self, outcome: str) -> None: ...


def as_keyed(calls: Mapping[Key, Call] | Iterable[Call]) -> list[tuple[Hashable, Call]]:
    """Keys for calls: a mapping's own, or the position in a sequence."""
    if isinstance(calls, Mapping):
        return list(calls.items())
    return list(enumerate(calls))


def _classify(key: Hashable, result: Any) -> Outcome:
    if not isinstance(result, Failure):
        return Outcome(key, Status.OK, value=result)
    if result.check(errors.CallTimedOut, CancelledError):
        return Outcome(key, Status.TIMEOUT, failure=result)
    if result.check(*UNAVAILABLE):
        return Outcome(key, Status.UNAVAILABLE, failure=result)
    return Outcome(key, Status.FAILED, failure=result)


def gather(
    calls: Mapping[Key, Call] | Iterable[Call],
    timeout: float,
    clock: IReactorTime,
    on_outcome: Callable[[Outcome], None] | None = None,
    metrics: OutcomeMetrics | None = None,
) -> "Deferred[list[Outcome]]":
    """
    Call every zero-argument callable in `calls` at once.

    Fires, within `timeout` seconds, with one `Outcome` per call in
    completion order; calls still running then are cancelled and reported
    as `Status.TIMEOUT`.  `on_outcome`, if given, sees each outcome as it
    arrives, and `metrics`, if given, counts it by status.  Never fails.
    """
    keyed = as_keyed(calls)
    outcomes: list[Outcome] = []
    done: Deferred[list[Outcome]] = Deferred()
    pending: dict[Hashable, Deferred[Any]] = {}

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if metrics is not None:
            metrics.observe(outcome.status.value)
        if on_outcome is not None:
            on_outcome(outcome)

    def finish() -> None:
        if not done.called:
            if timer.active():
                timer.cancel()
            done.callback(outcomes)

    def expire() -> None:
        for key, d in list(pending.items()):
            pending.pop(key, None)
            d.cancel()  # the result below sees CancelledError after removal
            record(Outcome(key, Status.TIMEOUT, failure=Failure(errors.CallTimedOut(str(key), timeout))))
        finish()

    def landed(result: Any, key: Hashable) -> None:
        if pending.pop(key, None) is None:
            return None  # already reported as timed out
        record(_classify(key, result))
        if not pending and not issuing:
            finish()
        return None

    timer = clock.callLater(timeout, expire)
    issuing = True
    for key, call in keyed:
        d = maybeDeferred(call)
        pending[key] = d
        d.addBoth(landed, key)
    issuing = False
    if not pending:
        finish()
    return done

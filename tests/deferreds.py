"""Reading a Deferred that has already fired, for tests that run without a reactor."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_T = TypeVar("_T")


def result(d: Deferred[_T]) -> _T:
    """The result `d` already has, raising its failure; an assertion error if it has not fired."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "still waiting"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]  # type: ignore[no-any-return]

"""
The blocking API boundary: RPC from threads that are not the reactor's.

Every crochet wrapper of the RPC layer lives here.  Code running in the
reactor thread uses `rpc.client` and `rpc.gather` directly; code running in
another thread (the admin command, a worker thread) uses these.  Calling
them from the reactor thread is an error (crochet refuses it), because it
would deadlock.
"""

from __future__ import annotations

import queue
from typing import Any, Hashable, Iterable, Iterator, Mapping

import attrs
from crochet import EventualResult, run_in_reactor
from twisted.internet.defer import Deferred
from twisted.protocols import amp

from rpc.client import Client
from rpc.gather import Call, Key, Outcome, as_keyed, gather

__all__ = ["ThreadClient", "gather_blocking"]

#: Extra time a thread waits beyond the call's own timeout, so the reactor's
#: timeout (which cancels the call cleanly) always wins the race.
_MARGIN = 5.0


@run_in_reactor
def _call_in_reactor(
    client: Client, command: type[amp.Command], timeout: float | None, kwargs: dict[str, Any]
) -> Deferred[dict[str, Any]]:
    return client(command, timeout=timeout, **kwargs)


@attrs.frozen
class ThreadClient:
    """
    A `Client` for use from a non-reactor thread.

    ``client(Command, **kw)`` returns a crochet `EventualResult`;
    ``client.call(Command, **kw)`` blocks and returns the response dict (or
    raises the call's error).
    """

    client: Client

    @property
    def ident(self) -> str:
        return self.client.ident

    def __call__(
        self, command: type[amp.Command], timeout: float | None = None, **kwargs: Any
    ) -> EventualResult[dict[str, Any]]:
        # crochet's stub types the result as EventualResult[Deferred[...]]; a
        # returned Deferred is waited for, so the result is the response dict.
        return _call_in_reactor(self.client, command, timeout, kwargs)  # type: ignore[return-value]

    def call(self, command: type[amp.Command], timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        limit = self.client.connection.call_timeout if timeout is None else timeout
        return self(command, timeout=timeout, **kwargs).wait(limit + _MARGIN)


@run_in_reactor
def _start_gather(
    keyed: list[tuple[Hashable, Call]], timeout: float, sink: "queue.Queue[Outcome]"
) -> Deferred[list[Outcome]]:
    from twisted.internet import reactor  # the reactor crochet drives

    return gather(dict(keyed), timeout, reactor, on_outcome=sink.put)


def gather_blocking(calls: Mapping[Key, Call] | Iterable[Call], timeout: float) -> Iterator[Outcome]:
    """
    `rpc.gather.gather` for threads: yields each `Outcome` as it arrives.

    The callables are called in the reactor thread, so they may be plain
    `Client` calls (e.g. ``functools.partial(client, Ping)``).  Every call
    yields exactly one outcome within about `timeout` seconds.
    """
    keyed = as_keyed(calls)
    sink: queue.Queue[Outcome] = queue.Queue()
    _start_gather(keyed, timeout, sink)
    for _ in keyed:
        yield sink.get(timeout=timeout + _MARGIN)

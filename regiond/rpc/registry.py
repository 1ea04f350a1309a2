"""
The region's connection registry: cluster uuid → its live connections.

A connection is added once the cluster has authenticated and registered,
and removed when it closes.  `getClientFor` waits (on the injected clock) for
a connection to appear; the names follow the MAAS RPC API they come from.
"""

from __future__ import annotations

import random
from collections import defaultdict

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from rpc.client import ClusterClient
from rpc.errors import NoConnectionsAvailable
from rpc.protocol import RPCProtocol

__all__ = ["ConnectionRegistry"]


@attrs.define
class ConnectionRegistry:
    clock: IReactorTime
    _connections: dict[str, set[RPCProtocol]] = attrs.field(factory=lambda: defaultdict(set))
    _waiters: dict[str, list[Deferred[None]]] = attrs.field(factory=lambda: defaultdict(list))

    def add(self, uuid: str, connection: RPCProtocol) -> None:
        self._connections[uuid].add(connection)
        for waiter in self._waiters.pop(uuid, []):
            waiter.callback(None)

    def remove(self, uuid: str, connection: RPCProtocol) -> None:
        conns = self._connections.get(uuid)
        if conns is not None:
            conns.discard(connection)
            if not conns:
                del self._connections[uuid]

    def connection_count(self, uuid: str) -> int:
        return len(self._connections.get(uuid, ()))

    def connected_uuids(self) -> list[str]:
        return list(self._connections)

    def all_connections(self) -> list[RPCProtocol]:
        return [c for conns in self._connections.values() for c in conns]

    def _client(self, uuid: str) -> ClusterClient:
        return ClusterClient(random.choice(list(self._connections[uuid])), ident=uuid)

    def getClientFor(self, uuid: str, timeout: float = 0) -> "Deferred[ClusterClient]":  # noqa: N802
        """
        A client for a random live connection to cluster `uuid`, waiting up to
        `timeout` seconds for one to appear; else `NoConnectionsAvailable`.
        """
        if self._connections.get(uuid):
            return succeed(self._client(uuid))
        if timeout <= 0:
            return fail(NoConnectionsAvailable.from_uuid(uuid, timeout))
        waiter: Deferred[None] = Deferred()
        self._waiters[uuid].append(waiter)

        def expire() -> None:
            if waiter in self._waiters.get(uuid, []):
                self._waiters[uuid].remove(waiter)
                if not self._waiters[uuid]:
                    del self._waiters[uuid]
                waiter.errback(NoConnectionsAvailable.from_uuid(uuid, timeout))

        timer = self.clock.callLater(timeout, expire)

        def connected(_: None) -> ClusterClient | Deferred[ClusterClient]:
            timer.cancel()
            if not self._connections.get(uuid):  # gone again already
                return fail(NoConnectionsAvailable.from_uuid(uuid, timeout))
            return self._client(uuid)

        return waiter.addCallback(connected)

    def getAllClients(self) -> list[ClusterClient]:  # noqa: N802
        """One client per connected cluster (on a random one of its connections)."""
        return [self._client(uuid) for uuid in self._connections]

"""
What the region does when a cluster registers on a connection, and when
that connection goes: the database record, the event, and the registry.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from regiond.clusters import ClusterStore, RegionProcessStore
from regiond.rpc.registry import ConnectionRegistry
from rpc.errors import RegistrationRejected, RegistrationRequired
from rpc.protocol import RPCProtocol

__all__ = ["ClusterRegistrar"]

log = Logger()

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")


def check_registration(name: str, version: str, capabilities: Any) -> list[str]:
    """Every reason this registration is not acceptable (empty: it is)."""
    problems = []
    if not _NAME.fullmatch(name):
        problems.append("name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if len(version) > 64:
        problems.append("version must be at most 64 characters")
    if (
        not isinstance(capabilities, list)
        or len(capabilities) > 100
        or not all(isinstance(c, str) and _CAPABILITY.fullmatch(c) for c in capabilities)
    ):
        problems.append("capabilities must be a list of at most 100 short lowercase names")
    return problems


@attrs.define
class ClusterRegistrar:
    registry: ConnectionRegistry
    clusters: ClusterStore
    processes: RegionProcessStore
    process_id: int
    _registered: dict[RPCProtocol, tuple[str, int]] = attrs.field(factory=dict)
    _pending: set[Deferred[None]] = attrs.field(factory=set)
    _capabilities: dict[str, frozenset[str]] = attrs.field(factory=dict)
    #: Called with a cluster's uuid each time it registers a connection here.
    on_registered: Callable[[str], object] | None = None
    #: Called with a cluster's uuid when its last connection here goes.
    on_lost: Callable[[str], object] | None = None

    async def register(self, connection: RPCProtocol, uuid: str, name: str, version: str, capabilities: Any) -> dict[str, Any]:
        problems = check_registration(name, version, capabilities)
        if problems:
            raise RegistrationRejected("; ".join(problems))
        if connection in self._registered:
            if self._registered[connection][0] == uuid:
                return {}
            raise RegistrationRejected("this connection is registered to another cluster")
        peer = connection.peer_name
        connection_id = await self.clusters.connected(uuid, name, version, capabilities, self.process_id, peer)
        if not connection.connected:  # it went while we were writing
            await self.clusters.disconnected(connection_id, uuid, peer)
            return {}
        self._registered[connection] = (uuid, connection_id)
        self._capabilities[uuid] = frozenset(capabilities)
        self.registry.add(uuid, connection)
        connection.when_closed().addCallback(lambda _: self._lost(connection))
        log.info("Cluster {name} ({uuid}) connected from {peer}", name=name, uuid=uuid, peer=peer)
        if self.on_registered is not None:
            self.on_registered(uuid)
        return {}

    def has_capability(self, uuid: str, capability: str) -> bool:
        """Whether cluster `uuid` said, when it last registered here, that it can do `capability`."""
        return capability in self._capabilities.get(uuid, ())

    def cluster_of(self, connection: RPCProtocol) -> str:
        """The uuid of the cluster registered on `connection`."""
        try:
            return self._registered[connection][0]
        except KeyError:
            raise RegistrationRequired("register with RegisterCluster first") from None

    def _lost(self, connection: RPCProtocol) -> None:
        uuid, connection_id = self._registered.pop(connection)
        self.registry.remove(uuid, connection)
        log.info("Cluster {uuid} disconnected ({peer})", uuid=uuid, peer=connection.peer_name)
        if self.on_lost is not None and self.registry.connection_count(uuid) == 0:
            self.on_lost(uuid)
        d = Deferred.fromCoroutine(self.clusters.disconnected(connection_id, uuid, connection.peer_name))
        d.addErrback(lambda f: log.failure("Could not record disconnection of {uuid}", f, uuid=uuid))
        self._pending.add(d)
        d.addBoth(lambda _: self._pending.discard(d))

    def settle(self) -> Deferred[Any]:
        """Fires when every disconnection being recorded has been."""
        return DeferredList(list(self._pending))

    async def endpoints(self) -> list[dict[str, Any]]:
        return await self.processes.endpoints()

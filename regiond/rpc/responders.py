"""The region's responders: a few lines each, calling the registrar."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from regiond.rpc.registrar import ClusterRegistrar
from rpc.protocol import RPCProtocol
from rpc.region import GetRegionEndpoints, RegisterCluster

__all__ = ["RegionResponders"]


class RegionResponders(amp.CommandLocator):
    def __init__(self, connection: RPCProtocol, registrar: ClusterRegistrar) -> None:
        self._connection = connection
        self._registrar = registrar

    @RegisterCluster.responder
    def register_cluster(self, uuid: str, name: str, version: str, capabilities: Any) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._registrar.register(self._connection, uuid, name, version, capabilities))

    @GetRegionEndpoints.responder
    def get_region_endpoints(self) -> Deferred[dict[str, Any]]:
        async def endpoints() -> dict[str, Any]:
            return {"endpoints": await self._registrar.endpoints()}

        return Deferred.fromCoroutine(endpoints())

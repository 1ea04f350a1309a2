"""Clients: what domain code holds to call a peer."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.protocols import amp
from zope.interface import implementer

from rpc.interfaces import IClusterClient, IRegionClient
from rpc.protocol import RPCProtocol

__all__ = ["Client", "ClusterClient", "RegionClient"]


@attrs.frozen(eq=False)
class Client:
    """
    Calls commands on the peer at the other end of one connection.

    Cheap to make; get a new one for each piece of work rather than keeping
    one around, because the connection under it may go.
    """

    connection: RPCProtocol
    ident: str

    def __call__(self, command: type[amp.Command], timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        return self.connection.call(command, timeout=timeout, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Client) and other.connection is self.connection

    def __hash__(self) -> int:
        return hash(self.connection)


@implementer(IClusterClient)
class ClusterClient(Client):
    """A client for one cluster."""


@implementer(IRegionClient)
class RegionClient(Client):
    """A client for one region process."""

"""
What domain code depends on instead of AMP.

Region code calls clusters through an `IClusterClient`; cluster code calls
the region through an `IRegionClient`.  Both are "call this command with
these arguments and give me a Deferred of the response dict".
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp
from zope.interface import Attribute, Interface


class IRPCClient(Interface):
    ident = Attribute("The identity of the peer (a cluster uuid, or a region process id).")

    def __call__(command: type[amp.Command], timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        """
        Call `command` on the peer.  Returns a Deferred firing with the
        response dict, or failing with the command's declared errors or an
        `rpc.errors.RPCError`.
        """


class IClusterClient(IRPCClient):
    """A client for one cluster, used by the region."""


class IRegionClient(IRPCClient):
    """A client for one region process, used by a cluster."""

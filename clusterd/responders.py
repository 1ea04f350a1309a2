"""The cluster's own responders (the handshake and Ping live in rpc.protocol)."""

from __future__ import annotations

from twisted.protocols import amp

__all__ = ["ClusterResponders"]


class ClusterResponders(amp.CommandLocator):
    """Commands from `rpc.cluster` beyond the common ones are answered here as they are added."""

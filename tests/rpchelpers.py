"""Helpers for tests of the RPC layer: connected pairs in memory."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim

from rpc.protocol import CLUSTER, REGION, RPCProtocol

SECRET = b"s" * 32


def make_pair(
    region_locator: amp.CommandLocator | None = None,
    cluster_locator: amp.CommandLocator | None = None,
    region_secret: bytes = SECRET,
    cluster_secret: bytes = SECRET,
    clock: Clock | None = None,
    **kwargs: Any,
) -> tuple[RPCProtocol, RPCProtocol, iosim.IOPump, Clock]:
    """A region (server) and cluster (client) protocol joined by an in-memory pump."""
    clock = clock or Clock()
    region = RPCProtocol(secret=region_secret, role=REGION, clock=clock, ident="region-1", locator=region_locator, **kwargs)
    cluster = RPCProtocol(secret=cluster_secret, role=CLUSTER, clock=clock, ident="cluster-1", locator=cluster_locator, **kwargs)
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: cluster, greet=False, clock=clock)
    pump.flush()
    return region, cluster, pump, clock

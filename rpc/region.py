"""
Commands answered by region processes (called by clusters).

Only `amp.Command` declarations live here.
"""

from __future__ import annotations

from twisted.protocols import amp

from rpc import errors as rpc_errors
from rpc.arguments import UUID, Structure
from rpc.common import Authenticate, Identify, Ping, RPCCommand

__all__ = ["Authenticate", "Identify", "Ping", "RegisterCluster", "GetRegionEndpoints"]


class RegisterCluster(RPCCommand):
    """
    Register the calling cluster on this connection.

    The region upserts the cluster's record (uuid, name, version,
    capabilities), records the connection and from then on routes calls for
    that uuid to it.  Called once per connection, after authentication.

    :since: 0.1
    """

    arguments = [
        (b"uuid", UUID()),
        (b"name", amp.Unicode()),
        (b"version", amp.Unicode()),
        (b"capabilities", Structure()),
    ]
    response: list = []
    errors = {rpc_errors.RegistrationRejected: b"REGISTRATION_REJECTED"}


class GetRegionEndpoints(RPCCommand):
    """
    List the RPC endpoints of every live region process.

    Answers ``{"endpoints": [{"host": ..., "port": ...}, ...]}``; clusters keep
    one connection to each.

    :since: 0.1
    """

    arguments: list = []
    response = [(b"endpoints", Structure())]

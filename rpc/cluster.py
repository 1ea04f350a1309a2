"""
Commands answered by cluster daemons (called by region processes).

Only `amp.Command` declarations live here.  The handshake and `Ping` are in
`rpc.common` and answered by both sides.
"""

from __future__ import annotations

from rpc.common import Authenticate, Identify, Ping

__all__ = ["Authenticate", "Identify", "Ping"]

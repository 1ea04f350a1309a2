"""
Commands that both sides answer: the handshake and liveness.

Each side's own commands are in `rpc.region` (answered by regions) and
`rpc.cluster` (answered by clusters).
"""

from __future__ import annotations

from twisted.protocols import amp

from rpc import errors as rpc_errors


class RPCCommand(amp.Command):
    """
    Base of every Outpost command: the errors any command can answer with.

    AMP accumulates ``errors`` and ``fatalErrors`` over base classes, so each
    command's own ``errors`` adds to these.
    """

    errors = {rpc_errors.InvalidArgument: b"INVALID_ARGUMENT"}
    fatalErrors = {rpc_errors.NotAuthenticated: b"NOT_AUTHENTICATED"}


class Identify(RPCCommand):
    """
    Say who and what you are.  Accepted before authentication.

    :since: 0.1
    """

    arguments = []
    response = [(b"ident", amp.Unicode()), (b"role", amp.Unicode())]


class Authenticate(RPCCommand):
    """
    Prove knowledge of the shared secret.

    The answer is HMAC-SHA256(secret, challenge ‖ salt ‖ role) where role is the
    answering side's role (``region`` or ``cluster``).  Binding the role stops a
    peer from reflecting a region's challenge back at a region.  Accepted
    before authentication; each side sends one to the other.

    :since: 0.1
    """

    arguments = [(b"challenge", amp.String())]
    response = [(b"digest", amp.String()), (b"salt", amp.String())]


class Ping(RPCCommand):
    """
    Check the connection is alive.

    :since: 0.1
    """

    arguments = []
    response = []


#: Commands a peer may send before it has proved the secret.
PRE_AUTH_COMMANDS = frozenset({Identify.commandName, Authenticate.commandName})

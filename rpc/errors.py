"""
Errors of the RPC layer.

Every error raised by ``rpc`` derives from `RPCError`.  Errors that cross the
wire are mapped in each command's ``errors`` (see `rpc.common.RPCCommand`).
"""

from __future__ import annotations


class RPCError(Exception):
    """Root of every error raised by the RPC layer."""


class Transient(Exception):
    """
    A mixin for errors that mean "not now" rather than "a bug" (the region's
    database restarting, say). A responder that fails with one still answers
    UNHANDLED with a reference, but the reference is logged in one line,
    without a traceback, and the caller is expected to retry.
    """


class NotAuthenticated(RPCError):
    """A command other than Identify/Authenticate arrived before the peer proved the secret."""


class AuthenticationFailed(RPCError):
    """The peer's answer to our challenge did not prove the shared secret."""


class NoConnectionsAvailable(RPCError):
    """There is no live connection to the wanted peer."""

    def __init__(self, message: str, uuid: str | None = None) -> None:
        super().__init__(message)
        self.uuid = uuid

    @classmethod
    def from_uuid(cls, uuid: str, timeout: float) -> "NoConnectionsAvailable":
        return cls(
            f"no connection to cluster {uuid} within {timeout:g}s", uuid=uuid
        )


class CallTimedOut(RPCError):
    """A remote call got no answer within its timeout; it was abandoned."""

    def __init__(self, command: str, timeout: float) -> None:
        super().__init__(f"{command} got no answer within {timeout:g}s")
        self.command = command
        self.timeout = timeout


class ConnectionClosed(RPCError):
    """The connection closed while the call was outstanding (or before it was made)."""


class RemoteUnhandledError(RPCError):
    """
    The peer's responder failed unexpectedly.  The peer logged the traceback
    under `reference`; look for it there.
    """

    def __init__(self, reference: str) -> None:
        super().__init__(f"unhandled error in remote responder, reference {reference}")
        self.reference = reference


class UnknownCommand(RPCError):
    """The peer does not implement the command."""


class RegistrationRejected(RPCError):
    """The region refused a cluster's registration (bad uuid, name or capabilities)."""


class InvalidArgument(RPCError):
    """An argument failed validation on the receiving side."""


class NoSuchMachine(RPCError):
    """The site's MAAS has no machine with that system_id."""

    @classmethod
    def from_system_id(cls, system_id: str) -> "NoSuchMachine":
        return cls(f"no machine {system_id}")


class MachineActionConflict(RPCError):
    """The machine is in the wrong state for the action (MAAS answered 409)."""


class PowerActionInProgress(RPCError):
    """A different power action is already running on the machine."""


class IntegrationNotConfigured(RPCError):
    """The cluster has no configuration for the integration asked for (e.g. no MAAS)."""


class IntegrationUnavailable(RPCError):
    """The site system (MAAS, CloudStack...) could not be reached or answered 5xx."""


class IntegrationAuthFailed(RPCError):
    """The site system refused the cluster's credentials."""


class RegistrationRequired(RPCError):
    """A cluster called a region command before registering on the connection."""


class VolumeJobConflict(RPCError):
    """The volume job is already being prepared or cleaned up, or is in the wrong state for this."""


# -- Infrastructure (the Ignition VIM driver contract, seed 003) ---------------
#
# Drivers raise these; they cross the wire under the names in
# `rpc.cluster.INFRASTRUCTURE_ERRORS`, and the region maps each to Ignition's
# HTTP status (`regiond.infrastructure.api`).


class InfrastructureError(RPCError):
    """General infrastructure failure (Ignition's InfrastructureError, HTTP 500)."""


class InvalidInfrastructureTemplate(InfrastructureError):
    """The template is not valid for the driver (HTTP 400)."""


class InvalidInfrastructureRequest(InfrastructureError):
    """The request cannot be handled as given, e.g. an unknown location type (HTTP 400)."""


class InfrastructureNotFound(InfrastructureError):
    """No infrastructure with that id at the location (HTTP 400)."""


class InfrastructureRequestNotFound(InfrastructureError):
    """No request with that id for the infrastructure (HTTP 400)."""


class TemporaryInfrastructureError(InfrastructureError):
    """The location cannot take the request now; try again later (HTTP 503; monitoring requeues)."""


class UnreachableDeploymentLocation(InfrastructureError):
    """The deployment location cannot be reached (HTTP 400; monitoring requeues)."""

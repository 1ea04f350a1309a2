"""
Commands answered by region processes (called by clusters).

Only `amp.Command` declarations live here.
"""

from __future__ import annotations

from twisted.protocols import amp

from rpc import errors as rpc_errors
from rpc.arguments import UUID, Structure
from rpc.common import Authenticate, Identify, Ping, RPCCommand

__all__ = ["Authenticate", "Identify", "Ping", "RegisterCluster", "GetRegionEndpoints", "ReportPowerOutcome", "ReportEvent", "ReportVolumeState", "ReportVolumeJob", "GetTrackedVolumeJobs", "ReportInfrastructureTask"]


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
    response = []
    errors = {rpc_errors.RegistrationRejected: b"REGISTRATION_REJECTED"}


class GetRegionEndpoints(RPCCommand):
    """
    List the RPC endpoints of every live region process.

    Answers ``{"endpoints": [{"host": ..., "port": ...}, ...]}``; clusters keep
    one connection to each.

    :since: 0.1
    """

    arguments = []
    response = [(b"endpoints", Structure())]


class ReportPowerOutcome(RPCCommand):
    """
    How a power action started by `rpc.cluster.PowerMachine` ended.

    `outcome` is ``ok`` or ``failed``; `state` the last power state seen;
    `error` says why it failed ("" when it did not).  The region updates the
    machine and records an event carrying `request_id`.

    :since: 0.2
    """

    arguments = [
        (b"system_id", amp.Unicode()),
        (b"action", amp.Unicode()),
        (b"request_id", amp.Unicode()),
        (b"outcome", amp.Unicode()),
        (b"state", amp.Unicode()),
        (b"error", amp.Unicode()),
    ]
    response = []
    errors = {rpc_errors.RegistrationRequired: b"REGISTRATION_REQUIRED"}


class ReportEvent(RPCCommand):
    """
    Record something that happened at the cluster in the region's event log.

    :since: 0.2
    """

    arguments = [
        (b"type", amp.Unicode()),
        (b"subject", amp.Unicode()),
        (b"outcome", amp.Unicode()),
        (b"data", Structure()),
    ]
    response = []
    errors = {rpc_errors.RegistrationRequired: b"REGISTRATION_REQUIRED"}


class ReportVolumeState(RPCCommand):
    """
    A migration volume changed state (``Allocated``, ``Ready``, ``Attached``,
    ``Mounted``, ``Unmounted``, ``Detached``, ``Deleted``, ``Failed``).

    :since: 0.3
    """

    arguments = [
        (b"job_id", amp.Unicode()),
        (b"disk_name", amp.Unicode()),
        (b"state", amp.Unicode()),
        (b"details", Structure()),
    ]
    response = []
    errors = {rpc_errors.RegistrationRequired: b"REGISTRATION_REQUIRED"}


class ReportVolumeJob(RPCCommand):
    """
    How a prepare or cleanup of job `job_id` ended: `outcome` ``ok`` or
    ``failed``, with what was undone after a failure and why it failed.

    :since: 0.3
    """

    arguments = [
        (b"job_id", amp.Unicode()),
        (b"operation", amp.Unicode()),
        (b"outcome", amp.Unicode()),
        (b"undone", Structure()),
        (b"error", amp.Unicode()),
    ]
    response = []
    errors = {rpc_errors.RegistrationRequired: b"REGISTRATION_REQUIRED"}


class GetTrackedVolumeJobs(RPCCommand):
    """
    The volume jobs the region tracks for the calling cluster, so it can
    find orphaned volumes.  Answers ``{"job_ids": [...], "busy": {job_id:
    "prepare"|"cleanup"}}``: `busy` are those the region believes the
    cluster is working on (a cluster that has just started is not, so it
    ends them).

    :since: 0.3
    """

    arguments = []
    response = [(b"job_ids", Structure()), (b"busy", Structure())]
    errors = {rpc_errors.RegistrationRequired: b"REGISTRATION_REQUIRED"}


class ReportInfrastructureTask(RPCCommand):
    """
    An infrastructure task ended (COMPLETE or FAILED).

    `task` is Ignition's task event ``{"requestId", "infrastructureId",
    "status", "failureDetails"?, "outputs"?}``; `operation` is ``create`` or
    ``delete``; `deployment_location` is the location it ran at.  A plain
    answer is the acknowledgement: the cluster forgets the report only then.
    Reports are at-least-once; the region de-duplicates by request id.

    :since: 0.5
    """

    arguments = [
        (b"task", Structure()),
        (b"operation", amp.Unicode()),
        (b"deployment_location", Structure()),
    ]
    response = []
    errors = {rpc_errors.RegistrationRequired: b"REGISTRATION_REQUIRED"}

"""
Commands answered by cluster daemons (called by region processes).

Only `amp.Command` declarations live here.  The handshake and `Ping` are in
`rpc.common` and answered by both sides.  Machines travel as `Structure`
values in the shape `clusterd.machines.summarize` gives them.
"""

from __future__ import annotations

from twisted.protocols import amp

from rpc import errors as rpc_errors
from rpc.arguments import Structure
from rpc.common import Authenticate, Identify, Ping, RPCCommand

__all__ = [
    "Authenticate",
    "Identify",
    "Ping",
    "ListMachines",
    "GetMachines",
    "PowerMachine",
    "QueryPowerStates",
    "CommissionMachine",
    "DeployMachine",
    "ReleaseMachine",
    "ListNetworks",
    "ListZones",
    "ListPools",
    "TestMAASConnection",
    "ConfigureCloudStack",
    "TestCloudStackConnection",
    "PrepareVolumes",
    "CleanupVolumes",
    "ReconcileVolumes",
    "INFRASTRUCTURE_ERRORS",
    "CreateInfrastructure",
    "DeleteInfrastructure",
    "FindInfrastructure",
]

#: Errors any MAAS-backed command may answer with.
_MAAS_ERRORS: dict[type[Exception], bytes] = {
    rpc_errors.IntegrationNotConfigured: b"NOT_CONFIGURED",
    rpc_errors.IntegrationUnavailable: b"UNAVAILABLE",
    rpc_errors.IntegrationAuthFailed: b"AUTH_FAILED",
}
_MACHINE_ERRORS: dict[type[Exception], bytes] = {
    **_MAAS_ERRORS,
    rpc_errors.NoSuchMachine: b"NO_SUCH_MACHINE",
    rpc_errors.MachineActionConflict: b"CONFLICT",
}


class ListMachines(RPCCommand):
    """
    Every machine the site's MAAS has, optionally filtered
    (``{"hostname": [...], "status": [...], "zone": [...], "pool": [...], "tags": [...]}``).

    Answers ``{"machines": [summary, ...]}``; any size.

    :since: 0.2
    """

    arguments = [(b"filters", Structure())]
    response = [(b"machines", Structure())]
    errors = _MAAS_ERRORS


class GetMachines(RPCCommand):
    """
    Read the given machines afresh from MAAS.

    Answers ``{"machines": [summary...], "missing": [system_id...]}``.

    :since: 0.2
    """

    arguments = [(b"system_ids", Structure())]
    response = [(b"machines", Structure()), (b"missing", Structure())]
    errors = _MAAS_ERRORS


class PowerMachine(RPCCommand):
    """
    Start a power action (``on``, ``off`` or ``cycle``) on a machine.

    Answers as soon as the action is accepted; the outcome comes back later
    through `rpc.region.ReportPowerOutcome` with the same `request_id`.  The
    same action already running is joined; a different one is refused.

    :since: 0.2
    """

    arguments = [
        (b"system_id", amp.Unicode()),
        (b"action", amp.Unicode()),
        (b"stop_mode", amp.Unicode()),
        (b"request_id", amp.Unicode()),
    ]
    response = [(b"joined", amp.Boolean())]
    errors = {**_MACHINE_ERRORS, rpc_errors.PowerActionInProgress: b"POWER_IN_PROGRESS"}


class QueryPowerStates(RPCCommand):
    """
    Ask each machine's BMC (through MAAS) for its power state.

    Answers ``{"states": {system_id: "on"|"off"|"unknown"|"error"},
    "errors": {system_id: message}}``.

    :since: 0.2
    """

    arguments = [(b"system_ids", Structure())]
    response = [(b"states", Structure()), (b"errors", Structure())]
    errors = _MAAS_ERRORS


class CommissionMachine(RPCCommand):
    """
    Commission a machine (``enable_ssh``, ``skip_networking``, ``skip_storage``,
    ``testing_scripts`` in `options`).  Answers the machine as MAAS left it.

    :since: 0.2
    """

    arguments = [(b"system_id", amp.Unicode()), (b"options", Structure())]
    response = [(b"machine", Structure())]
    errors = _MACHINE_ERRORS


class DeployMachine(RPCCommand):
    """
    Deploy a machine (``distro_series``, ``hwe_kernel``, ``user_data`` as base64
    text, ``hostname`` in `options`).  Answers the machine as MAAS left it.

    :since: 0.2
    """

    arguments = [(b"system_id", amp.Unicode()), (b"options", Structure())]
    response = [(b"machine", Structure())]
    errors = _MACHINE_ERRORS


class ReleaseMachine(RPCCommand):
    """
    Release a machine (``erase``, ``secure_erase``, ``quick_erase`` in
    `options`).  Answers the machine as MAAS left it.

    :since: 0.2
    """

    arguments = [(b"system_id", amp.Unicode()), (b"options", Structure())]
    response = [(b"machine", Structure())]
    errors = _MACHINE_ERRORS


class ListNetworks(RPCCommand):
    """
    The site's subnets, VLANs (across fabrics) and spaces.

    :since: 0.2
    """

    arguments = []
    response = [(b"subnets", Structure()), (b"vlans", Structure()), (b"spaces", Structure())]
    errors = _MAAS_ERRORS


class ListZones(RPCCommand):
    """The site's MAAS zones.  :since: 0.2"""

    arguments = []
    response = [(b"zones", Structure())]
    errors = _MAAS_ERRORS


class ListPools(RPCCommand):
    """The site's MAAS resource pools.  :since: 0.2"""

    arguments = []
    response = [(b"pools", Structure())]
    errors = _MAAS_ERRORS


class TestMAASConnection(RPCCommand):
    """
    Check the site's MAAS: reachable, version, credentials accepted.

    Answers ``{"ok": bool, "checks": [{"name", "ok", "detail"}...]}``; never
    fails for a MAAS problem (that is what the checks report).

    :since: 0.2
    """

    arguments = []
    response = [(b"ok", amp.Boolean()), (b"checks", Structure())]
    errors = {rpc_errors.IntegrationNotConfigured: b"NOT_CONFIGURED"}


_VOLUME_ERRORS: dict[type[Exception], bytes] = {
    rpc_errors.IntegrationNotConfigured: b"NOT_CONFIGURED",
    rpc_errors.IntegrationUnavailable: b"UNAVAILABLE",
    rpc_errors.IntegrationAuthFailed: b"AUTH_FAILED",
    rpc_errors.VolumeJobConflict: b"JOB_CONFLICT",
}


class ConfigureCloudStack(RPCCommand):
    """
    Give the cluster its CloudStack (OSSEA) configuration, secrets included;
    ``None`` removes it.  Sent after registration and on every change.

    :since: 0.3
    """

    arguments = [(b"configuration", Structure(optional=True))]
    response = []


class TestCloudStackConnection(RPCCommand):
    """
    Check the configured CloudStack: credentials accepted, the zone exists,
    the appliance VM exists.  Answers ``{"ok", "checks": [{"name", "ok", "detail"}]}``.

    :since: 0.3
    """

    arguments = []
    response = [(b"ok", amp.Boolean()), (b"checks", Structure())]
    errors = {rpc_errors.IntegrationNotConfigured: b"NOT_CONFIGURED"}


class PrepareVolumes(RPCCommand):
    """
    Create, attach and mount one volume per disk (``[{"name", "size_gb"}]``)
    for migration job `job_id`, disks in parallel.  Answers once accepted;
    progress comes back as `rpc.region.ReportVolumeState` and the end as
    `rpc.region.ReportVolumeJob`.  A failure undoes the completed steps.

    :since: 0.3
    """

    arguments = [(b"job_id", amp.Unicode()), (b"disks", Structure())]
    response = []
    errors = _VOLUME_ERRORS


class CleanupVolumes(RPCCommand):
    """
    Unmount and detach job `job_id`'s volumes, then delete them (or keep
    them when `delete` is false).  Answers once accepted; progress and end
    as for `PrepareVolumes`.

    :since: 0.3
    """

    arguments = [(b"job_id", amp.Unicode()), (b"delete", amp.Boolean())]
    response = []
    errors = _VOLUME_ERRORS


class ReconcileVolumes(RPCCommand):
    """
    Compare the job-tagged volumes in CloudStack with `tracked` (the job ids
    the region knows).  Answers ``{"orphans": [{"job_id", "volume_id", "name",
    "state"}...], "cleaned": [volume_id...]}``; with `clean` true, orphans are
    unmounted, detached and deleted.

    :since: 0.3
    """

    arguments = [(b"tracked", Structure()), (b"clean", amp.Boolean())]
    response = [(b"orphans", Structure()), (b"cleaned", Structure())]
    errors = _VOLUME_ERRORS


#: Errors every infrastructure command may answer with (Ignition's error classes).
INFRASTRUCTURE_ERRORS: dict[type[Exception], bytes] = {
    rpc_errors.InvalidInfrastructureTemplate: b"INVALID_TEMPLATE",
    rpc_errors.InvalidInfrastructureRequest: b"INVALID_REQUEST",
    rpc_errors.InfrastructureNotFound: b"INFRASTRUCTURE_NOT_FOUND",
    rpc_errors.InfrastructureRequestNotFound: b"REQUEST_NOT_FOUND",
    rpc_errors.TemporaryInfrastructureError: b"TEMPORARY",
    rpc_errors.UnreachableDeploymentLocation: b"UNREACHABLE",
    rpc_errors.InfrastructureError: b"INFRASTRUCTURE_ERROR",
}


class CreateInfrastructure(RPCCommand):
    """
    Start creating infrastructure with the driver for
    ``deployment_location["type"]``.

    `request` is ``{"template", "template_type", "system_properties",
    "properties", "deployment_location"}`` (the Ignition create body, snake
    case).  Answers as soon as the driver accepted it; the cluster then
    monitors the task and reports its end through
    `rpc.region.ReportInfrastructureTask`, journalled until the region
    acknowledges it.

    :since: 0.5
    """

    arguments = [(b"request", Structure())]
    response = [(b"infrastructure_id", amp.Unicode()), (b"request_id", amp.Unicode())]
    errors = INFRASTRUCTURE_ERRORS


class DeleteInfrastructure(RPCCommand):
    """
    Start deleting infrastructure `infrastructure_id` at `deployment_location`.
    Answers as soon as the driver accepted it; the end is reported as for
    `CreateInfrastructure`.

    :since: 0.5
    """

    arguments = [(b"infrastructure_id", amp.Unicode()), (b"deployment_location", Structure())]
    response = [(b"infrastructure_id", amp.Unicode()), (b"request_id", amp.Unicode())]
    errors = INFRASTRUCTURE_ERRORS


class FindInfrastructure(RPCCommand):
    """
    Find existing infrastructure by instance name.  `request` is
    ``{"template", "template_type", "instance_name", "deployment_location"}``.
    Answers ``{"result": {"infrastructureId", "outputs"}}`` or ``{"result": None}``.

    :since: 0.5
    """

    arguments = [(b"request", Structure())]
    response = [(b"result", Structure(optional=True))]
    errors = INFRASTRUCTURE_ERRORS

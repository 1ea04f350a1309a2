"""The cluster's responders: a few lines each, calling the cluster's domain services."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from clusterd.infrastructure.work import InfrastructureWork
from clusterd.machines import MachineWork
from clusterd.volumes.work import VolumeWork
from rpc import cluster as commands

__all__ = ["ClusterResponders"]


def _run(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


class ClusterResponders(amp.CommandLocator):
    def __init__(
        self, machines: MachineWork, volumes: VolumeWork | None = None, infrastructure: InfrastructureWork | None = None
    ) -> None:
        self._machines = machines
        self._volumes = volumes
        self._infrastructure = infrastructure

    def _volume_work(self) -> VolumeWork:
        if self._volumes is None:
            from rpc.errors import IntegrationNotConfigured

            raise IntegrationNotConfigured("this cluster does no volume work")
        return self._volumes

    def _infrastructure_work(self) -> InfrastructureWork:
        if self._infrastructure is None:
            from rpc.errors import InvalidInfrastructureRequest

            raise InvalidInfrastructureRequest("this cluster does no infrastructure work")
        return self._infrastructure

    @commands.CreateInfrastructure.responder
    def create_infrastructure(self, request: Any) -> Deferred[Any]:
        return _run(self._infrastructure_work().create(request))

    @commands.DeleteInfrastructure.responder
    def delete_infrastructure(self, infrastructure_id: str, deployment_location: Any) -> Deferred[Any]:
        return _run(self._infrastructure_work().delete(infrastructure_id, deployment_location))

    @commands.FindInfrastructure.responder
    def find_infrastructure(self, request: Any) -> Deferred[Any]:
        return _run(self._infrastructure_work().find(request))

    @commands.ConfigureCloudStack.responder
    def configure_cloudstack(self, configuration: Any) -> Deferred[Any]:
        async def configure() -> dict[str, Any]:
            await self._volume_work().configure(configuration)
            return {}

        return _run(configure())

    @commands.TestCloudStackConnection.responder
    def test_cloudstack(self) -> Deferred[Any]:
        return _run(self._volume_work().test_connection())

    @commands.PrepareVolumes.responder
    def prepare_volumes(self, job_id: str, disks: Any) -> dict[str, Any]:
        return self._volume_work().prepare(job_id, disks)

    @commands.CleanupVolumes.responder
    def cleanup_volumes(self, job_id: str, delete: bool) -> dict[str, Any]:
        return self._volume_work().cleanup(job_id, delete)

    @commands.ReconcileVolumes.responder
    def reconcile_volumes(self, tracked: Any, clean: bool) -> Deferred[Any]:
        return _run(self._volume_work().reconcile(tracked if isinstance(tracked, list) else [], clean))

    @commands.ListMachines.responder
    def list_machines(self, filters: Any) -> Deferred[Any]:
        return _run(self._machines.list_machines(filters))

    @commands.GetMachines.responder
    def get_machines(self, system_ids: Any) -> Deferred[Any]:
        return _run(self._machines.get_machines(system_ids))

    @commands.PowerMachine.responder
    def power_machine(self, system_id: str, action: str, stop_mode: str, request_id: str) -> dict[str, Any]:
        return self._machines.start_power(system_id, action, stop_mode, request_id)

    @commands.QueryPowerStates.responder
    def query_power_states(self, system_ids: Any) -> Deferred[Any]:
        return _run(self._machines.query_power_states(system_ids))

    @commands.CommissionMachine.responder
    def commission(self, system_id: str, options: Any) -> Deferred[Any]:
        return _run(self._machines.commission(system_id, options))

    @commands.DeployMachine.responder
    def deploy(self, system_id: str, options: Any) -> Deferred[Any]:
        return _run(self._machines.deploy(system_id, options))

    @commands.ReleaseMachine.responder
    def release(self, system_id: str, options: Any) -> Deferred[Any]:
        return _run(self._machines.release(system_id, options))

    @commands.ListNetworks.responder
    def list_networks(self) -> Deferred[Any]:
        return _run(self._machines.list_networks())

    @commands.ListZones.responder
    def list_zones(self) -> Deferred[Any]:
        return _run(self._machines.list_zones())

    @commands.ListPools.responder
    def list_pools(self) -> Deferred[Any]:
        return _run(self._machines.list_pools())

    @commands.TestMAASConnection.responder
    def test_maas_connection(self) -> Deferred[Any]:
        return _run(self._machines.test_connection())

"""
The cluster's site integrations, brought up once the daemon starts: this
site's MAAS client (or a simulated MAAS in this process, for ``make run``
and demos), handed to the machine work the responders use; and, when
configured, simulated CloudStack and VIM services in this process (the
VIM's URL is given to the ``simulated`` infrastructure driver).
"""

from __future__ import annotations

import secrets
from typing import Any, cast

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from clusterd.config import ClusterConfig
from clusterd.machines import MachineWork
from clusterd.maas.client import MAASClient
from clusterd.maas.power import PowerOrchestrator
from clusterd.volumes.mount import SimulatedMounter
from clusterd.volumes.work import VolumeWork

__all__ = ["SiteService", "DeviceFollower", "plug_devices", "virtio_name", "virtio_serial"]

log = Logger()


def virtio_name(device_id: int) -> str:
    """The kernel's name for the virtio disk at CloudStack device id `device_id` (0: vda, 1: vdb ... 26: vdaa)."""
    letters = ""
    n = device_id
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return "vd" + letters


def virtio_serial(volume_id: str) -> str:
    """The serial KVM gives the disk of a CloudStack volume: its uuid without hyphens, 20 characters."""
    return volume_id.replace("-", "")[:20]


def plug_devices(simulator: Any, mounter: SimulatedMounter) -> None:
    """
    Make `mounter`'s simulated block devices appear and go as the in-process
    CloudStack `simulator` attaches and detaches volumes, as KVM would.
    """
    names: dict[str, str] = {}

    def attached(volume: dict[str, Any], vm: dict[str, Any], device_id: int) -> None:
        names[volume["id"]] = name = virtio_name(device_id)
        mounter.add_device(name, serial=virtio_serial(volume["id"]))

    def detached(volume: dict[str, Any], vm: dict[str, Any]) -> None:
        name = names.pop(volume["id"], None)
        if name is not None:
            mounter.remove_device(name)

    simulator.on_attach.append(attached)
    simulator.on_detach.append(detached)


@attrs.define(eq=False)
class SiteService(Service):
    reactor: Any = attrs.field(repr=False)
    config: ClusterConfig
    machines: MachineWork
    volumes: VolumeWork | None = None
    #: Counts the MAAS client's calls (outpost.metrics.ExternalCallMetrics); None records nothing.
    external_metrics: Any = attrs.field(default=None, repr=False)
    #: The cluster's `clusterd.infrastructure.work.InfrastructureWork`: a simulated VIM is given to its ``simulated`` driver.
    infrastructure: Any = attrs.field(default=None, repr=False)
    _vim: Any = attrs.field(init=False, default=None, repr=False)
    _simulator: Any = attrs.field(init=False, default=None, repr=False)
    _cloudstack: Any = attrs.field(init=False, default=None, repr=False)
    _started: Deferred[None] | None = attrs.field(init=False, default=None, repr=False)

    def startService(self) -> None:  # noqa: N802
        Service.startService(self)
        self._started = Deferred.fromCoroutine(self._start())
        self._started.addErrback(lambda f: log.failure("Site integrations failed to start", f))

    async def _start(self) -> None:
        if self.config.simulate_cloudstack is not None and self.volumes is not None:
            await self._simulate_cloudstack()
        if self.config.simulate_vim is not None and self.infrastructure is not None:
            await self._simulate_vim()
        if self.config.simulate_maas is not None:
            from simulators.maas.faults import Durations
            from simulators.maas.web import simulator_url, start_maas_simulator

            sim = self.config.simulate_maas
            api_key = f"{secrets.token_hex(9)}:{secrets.token_hex(9)}:{secrets.token_hex(16)}"
            base = Durations()
            durations = Durations(**{f.name: getattr(base, f.name) * sim.speed for f in attrs.fields(Durations)})
            port, simulator = await start_maas_simulator(
                self.reactor, api_key=api_key, machines=sim.machines, seed=sim.seed, durations=durations
            )
            self._simulator = (port, simulator)
            url = simulator_url(port)
            log.info("Simulated MAAS with {n} machines at {url}", n=sim.machines, url=url)
            self._use(MAASClient(self.reactor, url, api_key))
        elif self.config.maas is not None:
            maas = self.config.maas
            self._use(MAASClient(self.reactor, maas.url, maas.api_key, timeout=maas.timeout, retry=maas.retry))
            log.info("MAAS at {url} (key from {source})", url=maas.url, source=maas.api_key_source)

    async def _simulate_cloudstack(self) -> None:
        from simulators.cloudstack import simulator_url, start_cloudstack_simulator

        sim = self.config.simulate_cloudstack
        assert sim is not None and self.volumes is not None
        port, simulator = await start_cloudstack_simulator(
            self.reactor, sim.listen, api_key=sim.api_key, secret_key=sim.secret_key, job_duration=sim.job_duration
        )
        self._cloudstack = (port, simulator)
        # build_service gives VolumeWork a SimulatedMounter whenever CloudStack is simulated.
        plug_devices(simulator, cast(SimulatedMounter, self.volumes.mounter))
        log.info("Simulated CloudStack at {url} (give the region this URL and keys as the cluster's configuration)",
                 url=simulator_url(port))

    async def _simulate_vim(self) -> None:
        from simulators.vim import simulator_url, start_vim_simulator

        sim = self.config.simulate_vim
        assert sim is not None
        port, simulator = await start_vim_simulator(
            self.reactor, listen=sim.listen, create_duration=sim.create_duration, delete_duration=sim.delete_duration,
            capacity=sim.capacity,
        )
        self._vim = (port, simulator)
        url = simulator_url(port)
        registry = self.infrastructure.registry
        registry.configure("simulated", {**registry.configs.get("simulated", {}), "url": url})
        log.info("Simulated VIM at {url} (deployment locations of type simulated use it)", url=url)

    def _use(self, client: MAASClient) -> None:
        client.metrics = self.external_metrics
        self.machines.client = client
        self.machines.power = PowerOrchestrator(self.reactor, client)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._started is not None and not self._started.called:
            try:
                await self._started
            except Exception:
                pass
        client, self.machines.client = self.machines.client, None
        if client is not None:
            await client.close()
        if self._simulator is not None:
            from simulators.maas.web import stop_maas_simulator

            await stop_maas_simulator(*self._simulator)
            self._simulator = None
        if self.volumes is not None:
            await self.volumes.configure(None)
        if self._vim is not None:
            from simulators.vim import stop_vim_simulator

            await stop_vim_simulator(*self._vim)
            self._vim = None
        if self._cloudstack is not None:
            from simulators.cloudstack import stop_cloudstack_simulator

            await stop_cloudstack_simulator(*self._cloudstack)
            self._cloudstack = None


@attrs.define(eq=False)
class DeviceFollower(Service):
    """
    For a cluster whose CloudStack runs elsewhere (a ``cloudstack-sim``
    process, say) but whose block devices are simulated: every `interval`
    seconds, make the simulated mounter's devices match the volumes
    CloudStack shows attached to the appliance VM, as the hypervisor would.
    """

    reactor: Any = attrs.field(repr=False)
    volumes: VolumeWork
    interval: float = 0.2
    _loop: Any = attrs.field(init=False, default=None, repr=False)
    _names: dict[str, str] = attrs.field(init=False, factory=dict, repr=False)

    def startService(self) -> None:  # noqa: N802
        from twisted.internet.task import LoopingCall

        Service.startService(self)
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.follow()))
        self._loop.clock = self.reactor
        self._loop.start(self.interval).addErrback(lambda f: log.failure("Following CloudStack's attachments stopped", f))

    def stopService(self) -> None:  # noqa: N802
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def follow(self) -> None:
        configuration, client = self.volumes.configuration, self.volumes.client
        if configuration is None or client is None:
            return
        try:
            attached = {
                v["id"]: int(v["deviceid"])
                for v in await client.list_volumes(virtualmachineid=configuration["oma_vm_id"])
                if v.get("deviceid") is not None and v.get("type") != "ROOT"
            }
        except Exception as e:
            log.debug("Could not read attachments: {error}", error=str(e))
            return
        # build_service adds a follower only with simulated devices, i.e. a SimulatedMounter.
        mounter = cast(SimulatedMounter, self.volumes.mounter)
        for volume_id in set(self._names) - set(attached):
            mounter.remove_device(self._names.pop(volume_id))
        for volume_id, device_id in attached.items():
            if volume_id not in self._names:
                self._names[volume_id] = name = virtio_name(device_id)
                mounter.add_device(name, serial=virtio_serial(volume_id))

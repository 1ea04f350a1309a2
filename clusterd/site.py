"""
The cluster's site integrations, brought up once the daemon starts: this
site's MAAS client (or a simulated MAAS in this process, for ``make run``
and demos), handed to the machine work the responders use.
"""

from __future__ import annotations

import secrets
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from clusterd.config import ClusterConfig
from clusterd.machines import MachineWork
from clusterd.maas.client import MAASClient
from clusterd.maas.power import PowerOrchestrator

__all__ = ["SiteService"]

log = Logger()


@attrs.define(eq=False)
class SiteService(Service):
    reactor: Any = attrs.field(repr=False)
    config: ClusterConfig
    machines: MachineWork
    _simulator: Any = attrs.field(init=False, default=None, repr=False)
    _started: Deferred[None] | None = attrs.field(init=False, default=None, repr=False)

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._started = Deferred.fromCoroutine(self._start())
        self._started.addErrback(lambda f: log.failure("Site integrations failed to start", f))

    async def _start(self) -> None:
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

    def _use(self, client: MAASClient) -> None:
        self.machines.client = client
        self.machines.power = PowerOrchestrator(self.reactor, client)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
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

"""
Helpers for the MAAS tests: a simulator served on 127.0.0.1 by the test's
reactor with its machine changes on a `task.Clock`, clients with fast
retries, and an in-memory transport (StubTreq) for client tests on a clock.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock

from clusterd.maas import MAASClient, RetryPolicy
from simulators.maas import (
    Durations,
    MAASResource,
    MAASSimulator,
    Status,
    simulator_url,
    start_maas_simulator,
    stop_maas_simulator,
)

API_KEY = "Xq9consumer:Tk7tokenkey:s3cr3t-token-secret"
FAST_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.02)
DURATIONS = Durations(commissioning=30, testing=10, deploying=60, releasing=5, disk_erasing=20, power=3, soft_power_off=10)


@attrs.define
class MAASSite:
    """A simulator on loopback; its machines change only when `clock` is advanced."""

    port: Any
    sim: MAASSimulator
    clock: Clock
    url: str
    clients: list[MAASClient] = attrs.field(factory=list)

    def client(self, api_key: str = API_KEY, **kwargs: Any) -> MAASClient:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("timeout", 5.0)
        client = MAASClient(reactor, self.url, api_key, rng=lambda: 0.5, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await stop_maas_simulator(self.port, self.sim)


async def serve(machines: int = 40, seed: int = 7) -> MAASSite:
    clock = Clock()
    port, sim = await start_maas_simulator(
        reactor, api_key=API_KEY, machines=machines, seed=seed, clock=clock, durations=attrs.evolve(DURATIONS)
    )
    return MAASSite(port, sim, clock, simulator_url(port))


@asynccontextmanager
async def serving(machines: int = 40, seed: int = 7) -> AsyncIterator[MAASSite]:
    """A simulator on loopback for the length of the block (modules wrap it in a ``maas_site`` fixture)."""
    site = await serve(machines, seed)
    try:
        yield site
    finally:
        await site.close()


class PumpedStubTreq:
    """StubTreq over the simulator's resource, pumped at once: answers arrive without a reactor."""

    def __init__(self, resource: Any) -> None:
        self._stub = StubTreq(resource)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        d = self._stub.request(method, url, **kwargs)
        self._stub.flush()
        return d


def in_memory_client(sim: MAASSimulator, clock: Clock, api_key: str = API_KEY, **kwargs: Any) -> MAASClient:
    """A real `MAASClient` talking to `sim` through memory, timed by `clock`."""
    kwargs.setdefault("retry", FAST_RETRY)
    return MAASClient(
        clock, "http://maas.test:5240/MAAS/", api_key, http=PumpedStubTreq(MAASResource(sim, clock)), rng=lambda: 0.5, **kwargs
    )


def pick(sim: MAASSimulator, status: int, power_type: str = "ipmi") -> str:
    """The first machine with `status` and a controllable BMC."""
    return sim.find(status=status, power_type=power_type)[0].system_id


def owned_off(sim: MAASSimulator) -> str:
    """An Allocated ipmi machine (owned, so MAAS lets us power it), powered off."""
    system_id = pick(sim, Status.ALLOCATED)
    sim.set_machine(system_id, power_state="off")
    return system_id

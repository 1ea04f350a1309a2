"""
Helpers for the CloudStack tests: a simulator served on 127.0.0.1 by the
test's reactor (jobs on the reactor, short), clients with fast retries and
polling, and an in-memory client (StubTreq) where the client and the
simulator's jobs share one `task.Clock`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock

from clusterd.cloudstack import CloudStackClient, PollPolicy, RetryPolicy
from simulators.cloudstack import (
    CloudStackResource,
    CloudStackSimulator,
    Faults,
    Limits,
    simulator_url,
    start_cloudstack_simulator,
    stop_cloudstack_simulator,
)

API_KEY = "GdsWBVHco0OOW4vBlgfnyzjru65FV-U1l1kKJ7n2WwH0gn3soTaZQZZyXfgUsxX7PyP06WrOOOcNRKmhRWDSlA"
SECRET_KEY = "uTCroKUkHZaNybhBXkcQsCb_eKDvZKbhHaZK4I1nHrGJYLKN-s3cr3t"
FAST_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.02)
FAST_POLL = PollPolicy(initial=0.01, factor=2.0, cap=0.05)
JOB_DURATION = 0.05


@attrs.define
class CloudStackSite:
    """A simulator on loopback whose jobs take `JOB_DURATION` seconds of real time."""

    port: Any
    sim: CloudStackSimulator
    url: str
    clients: list[CloudStackClient] = attrs.field(factory=list)

    def client(self, api_key: str = API_KEY, secret_key: str = SECRET_KEY, **kwargs: Any) -> CloudStackClient:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("poll", FAST_POLL)
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("job_timeout", 5.0)
        client = CloudStackClient(reactor, self.url, api_key, secret_key, rng=lambda: 0.5, **kwargs)
        self.clients.append(client)
        return client

    def commands(self, command: str) -> int:
        """How many `command` requests the simulator has served (after the signature check)."""
        return sum(1 for logged, _ in self.sim.request_log if logged == command)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await stop_cloudstack_simulator(self.port, self.sim)


@asynccontextmanager
async def serving(
    *, job_duration: float = JOB_DURATION, faults: Faults | None = None, limits: Limits | None = None
) -> AsyncIterator[CloudStackSite]:
    port, sim = await start_cloudstack_simulator(
        reactor, api_key=API_KEY, secret_key=SECRET_KEY, job_duration=job_duration, faults=faults, limits=limits, seed=3
    )
    site = CloudStackSite(port, sim, simulator_url(port))
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


def clocked(job_duration: float = 3.0, **kwargs: Any) -> tuple[CloudStackSimulator, Clock, CloudStackClient]:
    """A simulator and a real client talking through memory, both timed by one `task.Clock`."""
    clock = Clock()
    sim = CloudStackSimulator.create(clock, api_key=API_KEY, secret_key=SECRET_KEY, job_duration=job_duration, seed=5)
    kwargs.setdefault("retry", FAST_RETRY)
    client = CloudStackClient(
        clock, "http://cloudstack.test:8080/client/api", API_KEY, SECRET_KEY,
        http=PumpedStubTreq(CloudStackResource(sim, clock)), rng=lambda: 0.5, **kwargs,
    )
    return sim, clock, client

"""
A faithful simulator of MAAS's REST API 2.0, for tests, benchmarks and demos.

In-process::

    port, sim = await start_maas_simulator(reactor, api_key="c:t:s", machines=100, clock=task_clock)
    client = MAASClient(reactor, simulator_url(port), "c:t:s")
    ...
    await stop_maas_simulator(port, sim)

As a daemon: ``twistd -n maas-sim --listen tcp:5240:interface=127.0.0.1
--machines 100 --api-key c:t:s``.  Without HTTP: `FakeMAASClient(sim)`.
Faults are set with `MAASSimulator.set_faults` / `script_faults` /
`fail_bmc` / `fail_next`, or over the test-only ``/_sim/`` interface.
"""

from simulators.maas.fake import FakeMAASClient
from simulators.maas.faults import Durations, Faults
from simulators.maas.model import STATUS_NAMES, Machine, Status, generate_machines
from simulators.maas.state import MAASSimulator, User
from simulators.maas.web import MAASResource, make_site, simulator_url, start_maas_simulator, stop_maas_simulator

__all__ = [
    "MAASSimulator",
    "User",
    "Machine",
    "Status",
    "STATUS_NAMES",
    "Durations",
    "Faults",
    "generate_machines",
    "MAASResource",
    "make_site",
    "start_maas_simulator",
    "stop_maas_simulator",
    "simulator_url",
    "FakeMAASClient",
]

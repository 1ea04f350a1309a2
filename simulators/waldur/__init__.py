"""
A simulated Waldur Mastermind: marketplace storage resources and offering customers.

In-process::

    port, sim = await start_waldur_simulator(reactor, token="t", resources=500)
    url = simulator_url(port)          # http://127.0.0.1:PORT/api/  (waldur_api_url)
    ...
    await stop_waldur_simulator(port, sim)

As a daemon: ``twistd -n waldur-sim --listen tcp:8079 --resources 5000``.
Without sockets: `WaldurSimulator.handle`.  Faults: `WaldurSimulator.fail_next`
(a status, ``"drop"`` or ``"hang"``) and ``sim.faults.latency``.
"""

from simulators.waldur.model import BASE, DATA_TYPES, ORDER_STATES, RESOURCE_STATES, Customer, Offering, Project, WaldurData, generate, make_resource
from simulators.waldur.state import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, FaultPlan, SimResponse, WaldurSimulator
from simulators.waldur.web import WaldurResource, make_site, simulator_url, start_waldur_simulator, stop_waldur_simulator

__all__ = [
    "BASE",
    "DATA_TYPES",
    "ORDER_STATES",
    "RESOURCE_STATES",
    "Customer",
    "Offering",
    "Project",
    "WaldurData",
    "generate",
    "make_resource",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "FaultPlan",
    "SimResponse",
    "WaldurSimulator",
    "WaldurResource",
    "make_site",
    "simulator_url",
    "start_waldur_simulator",
    "stop_waldur_simulator",
]

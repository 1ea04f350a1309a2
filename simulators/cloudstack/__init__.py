"""
A faithful simulator of the CloudStack API's volume lifecycle, for tests,
benchmarks and demos: signatures verified, async jobs on an injected clock,
device ids assigned, tags, capacity limits and fault injection.

In-process::

    port, sim = await start_cloudstack_simulator(reactor, api_key=KEY, secret_key=SECRET, job_duration=2.0, clock=task_clock)
    client = CloudStackClient(reactor, simulator_url(port), KEY, SECRET)
    sim.on_attach.append(lambda volume, vm, device_id: ...)   # a fake block device appears
    sim.on_detach.append(lambda volume, vm: ...)              # ... and goes
    ...
    await stop_cloudstack_simulator(port, sim)

As a daemon: ``twistd -n cloudstack-sim --listen tcp:8080:interface=127.0.0.1
--api-key KEY --secret-key SECRET``.  Faults: `CloudStackSimulator.set_faults`
or ``POST /_sim/faults``.
"""

from simulators.cloudstack.errors import ApiError
from simulators.cloudstack.faults import Faults
from simulators.cloudstack.model import GIB, Limits
from simulators.cloudstack.state import AttachHook, CloudStackSimulator, DetachHook
from simulators.cloudstack.web import (
    API_PATH,
    CloudStackResource,
    make_site,
    simulator_url,
    start_cloudstack_simulator,
    stop_cloudstack_simulator,
)

__all__ = [
    "CloudStackSimulator",
    "AttachHook",
    "DetachHook",
    "Faults",
    "Limits",
    "GIB",
    "ApiError",
    "API_PATH",
    "CloudStackResource",
    "make_site",
    "simulator_url",
    "start_cloudstack_simulator",
    "stop_cloudstack_simulator",
]

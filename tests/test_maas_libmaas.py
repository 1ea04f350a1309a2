"""
The official python-libmaas client (asyncio/aiohttp) works against the simulator.

It runs in a child process (its own event loop) against a simulator served
by this test's reactor, so the test can look at what the simulator saw.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from typing import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from simulators.maas import Status
from tests.maashelpers import API_KEY, MAASSite, pick, serving

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("maas") is None or importlib.util.find_spec("maas.client") is None,
    reason="python-libmaas is not installed (pip install python-libmaas)",
)


@pytest_twisted.async_yield_fixture
async def maas_site() -> AsyncIterator[MAASSite]:
    async with serving() as site:
        yield site


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from maas.client import connect
    from maas.client.enum import NodeStatus, PowerState

    url, key, system_id, deployed_id = sys.argv[1:5]
    client = connect(url, apikey=key)
    out = {"version": client.version.get().version, "whoami": client.users.whoami().username}
    machines = client.machines.list()
    out["listed"] = len(machines)
    out["ready"] = sorted(m.system_id for m in machines if m.status == NodeStatus.READY)
    m = client.machines.get(system_id)
    out["read"] = [m.hostname, m.architecture, m.cpus, m.memory, m.zone.name, m.pool.name,
                   m.power_state.value, [nic.mac_address for nic in m.interfaces]]
    m.deploy(distro_series="jammy", user_data=b"#cloud-config\\nruncmd: [echo hi]\\n")
    out["deployed"] = [m.status.value, m.status_name, m.osystem, m.distro_series, m.owner.username]
    m.power_on()
    m.power_off()
    out["power_state"] = m.query_power_state().value
    m.release(erase=True, quick_erase=True)
    out["released"] = m.status_name
    d = client.machines.get(deployed_id)
    d.power_off(stop_mode=__import__("maas.client.enum").client.enum.PowerStopMode.SOFT)
    out["zones"] = sorted(z.name for z in client.zones.list())
    out["pools"] = sorted(p.name for p in client.resource_pools.list())
    out["subnets"] = [s.cidr for s in client.subnets.list()]
    out["fabrics"] = [f.name for f in client.fabrics.list()]
    out["spaces"] = [s.name for s in client.spaces.list()]
    print(json.dumps(out))
    """
)


@pytest_twisted.ensureDeferred
async def test_python_libmaas_connects_lists_reads_deploys_powers_and_releases(maas_site: MAASSite) -> None:
    sim = maas_site.sim
    system_id, deployed_id = pick(sim, Status.READY), pick(sim, Status.DEPLOYED)
    ready = sorted(m.system_id for m in sim.find(status=Status.READY))
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-W", "ignore", "-c", SCRIPT, maas_site.url, API_KEY, system_id, deployed_id],
        env=dict(os.environ),
        reactor=reactor,
    )
    assert code == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["version"] == "3.4.0" and result["whoami"] == "admin"
    assert result["listed"] == 40
    assert result["ready"] == ready
    machine = sim.get(system_id)
    assert result["read"][0] == machine.hostname and result["read"][7] == [n["mac_address"] for n in machine.interfaces]
    assert result["deployed"] == [Status.DEPLOYING, "Deploying", "ubuntu", "jammy", "admin"]
    assert machine.user_data == b"#cloud-config\nruncmd: [echo hi]\n"  # base64 inside a base64 MIME part
    assert result["power_state"] == "off"
    assert result["released"] == "Disk erasing"
    assert machine.erase == {"erase": True, "secure_erase": False, "quick_erase": True}
    assert result["zones"] == ["az1", "az2", "az3", "default"]
    assert result["subnets"] == ["10.0.0.0/16", "10.1.0.0/16"] and result["spaces"] == ["management", "storage"]
    ops = [op for method, _, op in sim.request_log if method == "POST"]
    assert ops == ["deploy", "power_on", "power_off", "release", "power_off"]
    maas_site.clock.advance(10)
    assert sim.get(deployed_id).power_state == "off"  # the soft power-off took its 10 s

"""10,000 machines from one site reach the region's database in one sync, over real RPC."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from clusterd.machines import MachineWork
from clusterd.maas.client import MAASClient
from clusterd.responders import ClusterResponders
from simulators.maas.web import simulator_url, start_maas_simulator, stop_maas_simulator
from tests.regionstack import RegionStack, region_stack  # noqa: F401

API_KEY = "consumer0000:token0000000:secret00000000000000000000"
CLUSTER = "cccccccc-0000-4000-8000-000000010000"


@pytest_twisted.ensureDeferred
async def test_an_inventory_of_ten_thousand_machines_syncs_in_one_piece(region_stack: RegionStack) -> None:
    port, simulator = await start_maas_simulator(reactor, api_key=API_KEY, machines=10_000, seed=5)
    client = MAASClient(reactor, simulator_url(port), API_KEY, timeout=120)
    try:
        work = MachineWork(reactor, client, region=lambda: None)
        app = region_stack.app
        await region_stack.connect_cluster(CLUSTER, "big", locator=ClusterResponders(work), capabilities=["maas/1"])
        report = await app.sync.sync_cluster(CLUSTER)
        outcome = report["clusters"][CLUSTER]
        assert outcome["outcome"] == "ok", outcome
        assert outcome["machines"] == 10_000
        items, total = await app.machines.list(cluster=["big"], limit=5)
        assert total == 10_000 and len(items) == 5
    finally:
        await client.close()
        await stop_maas_simulator(port, simulator)

"""
Machines end to end: a real region and two real clusters, each with its own
simulated MAAS (in the cluster's process), over real sockets.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest_twisted
import treq

from outpost.secret import write_secret
from regiond.machines.api import signature_for
from tests.daemons import api_get, api_post, eventually, make_cluster, make_region, state_dir

WEBHOOK_SECRET = b"w" * 32


async def events_for(region: Any, token: str, request_id: str) -> list[dict[str, Any]]:
    code, body = await api_get(region, f"/api/v1/events?request_id={request_id}", token)
    assert code == 200, body
    return body["items"]


@pytest_twisted.ensureDeferred
async def test_sync_deploy_power_cycle_webhook_and_a_killed_cluster() -> None:
    base = state_dir()
    write_secret(base / "webhook.secret", WEBHOOK_SECRET)
    region = make_region(base, maas={"sync_interval": 2, "transitional_interval": 0.5, "webhook_secret_file": str(base / "webhook.secret")})
    east = make_cluster(base, "east", region, simulate_maas={"machines": 12, "seed": 1})
    west = make_cluster(base, "west", region, simulate_maas={"machines": 8, "seed": 2})
    try:
        region.start()
        await region.wait_healthy()
        token = await region.make_token("admin")
        east.start()
        west.start()

        # Inventory sync brings in both sites' machines.
        async def synced() -> Any:
            code, body = await api_get(region, "/api/v1/machines?page_size=1000", token)
            return body if code == 200 and body["total"] == 20 else None

        inventory = await eventually(synced, 40, "both inventories to sync")
        ready = [m for m in inventory["items"] if m["cluster_name"] == "east" and m["status"] == "Ready"]
        assert ready, "the simulator seeds some Ready machines"
        machine = ready[0]
        path = f"/api/v1/machines/east/{machine['system_id']}"

        # Deploy: accepted at once, then Deployed as the transitional poll follows it.
        code, body, _ = await api_post(region, path + "/deploy", token, {"distro_series": "jammy", "user_data": "I2Nsb3VkLWNvbmZpZw=="})
        assert code == 202, body
        assert body["machine"]["status"] == "Deploying"

        async def deployed() -> bool:
            code, m = await api_get(region, path, token)
            return m["status"] == "Deployed"

        await eventually(deployed, 30, "the machine to reach Deployed")
        code, changes = await api_get(region, f"/api/v1/events?type=machine.status&subject={machine['system_id']}", token)
        assert [e["data"]["to"] for e in changes["items"]][-1] == "Deployed"

        # Power cycle: off, verify, on, verify; the outcome arrives as an event.
        code, body, _ = await api_post(region, path + "/power", token, {"action": "cycle"})
        assert code == 202, body
        request_id = body["request_id"]

        async def cycled() -> Any:
            done = [e for e in await events_for(region, token, request_id) if e["type"] == "machine.power"]
            return done[0] if done else None

        outcome = await eventually(cycled, 30, "the power cycle outcome")
        assert outcome["outcome"] == "ok" and outcome["data"]["state"] == "on"

        # A signed webhook updates the machine at once.
        hook = json.dumps({"type": "MACHINE_STATUS_CHANGED", "system_id": machine["system_id"], "status": "Releasing"}).encode()
        response = await treq.post(region.url + "/api/v1/webhooks/maas/east", data=hook, headers={
            "Content-Type": ["application/json"], "X-Hub-Signature-256": [signature_for(WEBHOOK_SECRET, hook)]})
        assert response.code == 200, await response.text()
        code, m = await api_get(region, path, token)
        assert m["status"] == "Releasing"
        response = await treq.post(region.url + "/api/v1/webhooks/maas/east", data=hook, headers={
            "Content-Type": ["application/json"], "X-Hub-Signature-256": ["sha256=" + "0" * 64]})
        assert response.code == 401

        # Fleet power query: every machine of both sites answered.
        code, body, _ = await api_post(region, "/api/v1/machines/power-query", token, {"timeout": 20})
        assert code == 200 and body["failures"] == [] and len(body["results"]) == 20

        # West is killed in the middle of a power action: the action is
        # recorded as interrupted, its machines stay listed, and calls to it
        # fail fast with 503.
        west_machine = next(m for m in inventory["items"] if m["cluster_name"] == "west")
        code, body, _ = await api_post(region, f"/api/v1/machines/west/{west_machine['system_id']}/power", token, {"action": "off"})
        assert code == 202, body
        west.kill()

        async def interrupted() -> Any:
            done = [e for e in await events_for(region, token, body["request_id"]) if e["type"] == "machine.power"]
            return done[0] if done else None

        lost = await eventually(interrupted, 15, "the interrupted power action to be recorded")
        assert lost["outcome"] == "interrupted"

        async def west_gone() -> bool:
            code, body = await api_get(region, "/api/v1/clusters?name=west", token)
            return not body["items"][0]["connected"]

        await eventually(west_gone, 15, "west to show disconnected")
        started = time.monotonic()
        code, body, headers = await api_post(region, f"/api/v1/machines/west/{west_machine['system_id']}/power", token, {"action": "on"})
        assert code == 503 and headers.getRawHeaders("retry-after")
        assert time.monotonic() - started < 2
        code, body, _ = await api_post(region, "/api/v1/machines/power-query", token, {"timeout": 5})
        assert [f["status"] for f in body["failures"]] == ["unavailable"] and body["failures"][0]["machines"] == 8
        assert len(body["results"]) == 12
        code, body = await api_get(region, "/api/v1/machines?cluster=west", token)
        assert body["total"] == 8
    finally:
        for daemon in (east, west):
            await daemon.stop()
        await region.stop()
    for daemon in (region, east, west):
        assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]
    shutil.rmtree(base, ignore_errors=True)

"""
Volumes end to end: a real region and a real cluster running a simulated
CloudStack with simulated block devices; configuration pushed by the
region, a 4-disk job prepared, mounted, and cleaned up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from tests.daemons import api_get, env, eventually, free_port, make_cluster, make_region, state_dir

KEY, SECRET = "e2e-api-key-0123456789", "e2e-secret-key-0123456789"


async def call(region: Any, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    response = await treq.request(method, region.url + path, json=body, headers={"Authorization": [f"Bearer {token}"]}, timeout=30)
    return response.code, await response.json()


@pytest_twisted.ensureDeferred
async def test_prepare_a_four_disk_job_see_it_mounted_and_clean_it_up() -> None:
    base = state_dir()
    region = make_region(base)
    cs_port = free_port()
    cluster = make_cluster(base, "vol-site", region)
    config = base / "vol-site.yaml"
    config.write_text(json.dumps({"simulate": {"cloudstack": {"listen": f"tcp:{cs_port}:interface=127.0.0.1",
                                                              "api_key": KEY, "secret_key": SECRET, "job_duration": 0.05}}}))
    cluster.argv[cluster.argv.index("clusterd") + 1 : cluster.argv.index("clusterd") + 1] = ["--config", str(config)]
    try:
        region.start()
        await region.wait_healthy()
        token = await region.make_token("admin")
        cluster.start()

        async def registered() -> bool:
            code, body = await api_get(region, "/api/v1/clusters?connected=true", token)
            return body["total"] == 1

        await eventually(registered, 30, "the cluster to register")
        # The region is told where the site's CloudStack is; the cluster gets it pushed.
        code, body = await call(region, "POST", "/api/v1/ossea/config", token, {"action": "create", "configuration": {
            "cluster": "vol-site", "name": "sim-cs", "api_url": f"http://127.0.0.1:{cs_port}/client/api",
            "api_key": KEY, "secret_key": SECRET, "zone": "OSSEA-Zone",
            "oma_vm_id": "00000000-0000-4000-8000-000000000000"}})
        assert code == 201 and body["applied"] is True, body
        code, checks = await call(region, "POST", "/api/v1/ossea/config", token, {"action": "test", "configuration": {"name": "sim-cs"}})
        assert code == 200 and {c["name"]: c["ok"] for c in checks["checks"]} == {"credentials": True, "zone": True, "appliance_vm": False}
        # The appliance VM check failed: point the configuration at the real appliance VM.
        appliance = await _appliance_id(cs_port)
        code, body = await call(region, "PUT", "/api/v1/clusters/vol-site/cloudstack", token, {"oma_vm_id": appliance})
        assert code == 200 and body["applied"] is True
        code, checks = await call(region, "POST", "/api/v1/clusters/vol-site/cloudstack/test", token, {})
        assert code == 200 and checks["ok"] is True, checks

        disks = [{"name": f"disk-{i}", "size_gb": 10 * (i + 1)} for i in range(4)]
        code, job = await call(region, "POST", "/api/v1/volume-jobs", token, {"cluster": "vol-site", "job_id": "mig-1", "disks": disks})
        assert code == 202, job

        async def state(wanted: str) -> Any:
            code, job = await api_get(region, "/api/v1/volume-jobs/mig-1", token)
            return job if job["state"] == wanted else None

        job = await eventually(lambda: state("prepared"), 30, "the job to be prepared")
        assert [(d["disk_name"], d["state"]) for d in job["disks"]] == [(f"disk-{i}", "Mounted") for i in range(4)]
        assert all(d["mount_point"] == f"/mnt/migration/mig-1/{d['disk_name']}" and d["device"].startswith("/dev/vd") for d in job["disks"])

        # The admin command sees the same.
        shown = await outpost(region, token, "--json", "volumes", "show", "mig-1")
        assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "prepared"
        listed = await outpost(region, token, "ossea", "config", "list")
        assert listed.returncode == 0 and "sim-cs" in listed.stdout and SECRET not in listed.stdout
        tested = await outpost(region, token, "ossea", "config", "test", "--name", "sim-cs")
        assert tested.returncode == 0 and "ok   appliance_vm" in tested.stdout
        busy = await outpost(region, token, "volumes", "prepare", "vol-site", "mig-1", "--disk", "d:1")
        assert busy.returncode == 1 and "exists" in busy.stderr
        code, job = await call(region, "DELETE", "/api/v1/volume-jobs/mig-1", token)
        assert code == 202 and job["state"] == "cleaning"
        job = await eventually(lambda: state("cleaned"), 30, "the job to be cleaned up")
        assert all(d["state"] == "Deleted" for d in job["disks"])
        code, found = await call(region, "POST", "/api/v1/clusters/vol-site/cloudstack/reconcile", token, {})
        assert code == 200 and found["orphans"] == []
    finally:
        await cluster.stop()
        await region.stop()
    for daemon in (region, cluster):
        log = daemon.log_text()
        assert "Traceback" not in log, log[-3000:]
        assert SECRET not in log and KEY not in log
    shutil.rmtree(base, ignore_errors=True)


async def outpost(region: Any, token: str, *args: str) -> Any:
    return await deferToThread(subprocess.run, [sys.executable, "-m", "outpost", "--url", region.url, "--token", token, *args],
                               env=env(), capture_output=True, text=True, timeout=60)


async def _appliance_id(port: int) -> str:
    """The simulator's appliance VM id, read through the CloudStack API as any client would."""
    from twisted.internet import reactor

    from clusterd.cloudstack.client import CloudStackClient

    client = CloudStackClient(reactor, f"http://127.0.0.1:{port}/client/api", KEY, SECRET)
    try:
        vms = await client.list_virtual_machines()
        return str(next(vm["id"] for vm in vms if vm["name"] == "oma-appliance"))
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_cluster_restarted_mid_prepare_leaves_no_orphan() -> None:
    """CloudStack runs in its own process (it must outlive the cluster); the cluster's devices follow its attachments."""
    from tests.daemons import TWISTD, Daemon

    base = state_dir()
    region = make_region(base)
    cs_port = free_port()
    cloudstack = Daemon(
        name="cloudstack-sim",
        argv=[TWISTD, "-n", "--pidfile=", "cloudstack-sim", "--listen", f"tcp:{cs_port}:interface=127.0.0.1",
              "--api-key", KEY, "--secret-key", SECRET, "--job-duration", "0.7"],
        log=base / "cloudstack-sim.log",
    )
    cluster = make_cluster(base, "vol-site", region)
    config = base / "vol-site.yaml"
    config.write_text(json.dumps({"simulate": {"devices": True}}))
    cluster.argv[cluster.argv.index("clusterd") + 1 : cluster.argv.index("clusterd") + 1] = ["--config", str(config)]
    try:
        cloudstack.start()
        region.start()
        await region.wait_healthy()
        token = await region.make_token("admin")
        cluster.start()

        async def registered() -> bool:
            code, body = await api_get(region, "/api/v1/clusters?connected=true", token)
            return body["total"] == 1

        await eventually(registered, 30, "the cluster to register")
        appliance = await eventually(lambda: _appliance_id(cs_port), 20, "the CloudStack simulator")
        code, body = await call(region, "PUT", "/api/v1/clusters/vol-site/cloudstack", token, {
            "name": "sim-cs", "api_url": f"http://127.0.0.1:{cs_port}/client/api", "api_key": KEY, "secret_key": SECRET,
            "zone": "OSSEA-Zone", "oma_vm_id": appliance})
        assert code == 201 and body["applied"] is True, body
        disks = [{"name": f"disk-{i}", "size_gb": 5} for i in range(4)]
        code, job = await call(region, "POST", "/api/v1/volume-jobs", token, {"cluster": "vol-site", "job_id": "mig-r", "disks": disks})
        assert code == 202, job

        async def some_allocated() -> bool:
            code, job = await api_get(region, "/api/v1/volume-jobs/mig-r", token)
            return any(d["state"] != "Pending" for d in job["disks"])

        await eventually(some_allocated, 30, "the first volume to be created")
        cluster.kill()  # mid-prepare
        cluster.start()

        async def ended() -> Any:
            code, job = await api_get(region, "/api/v1/volume-jobs/mig-r", token)
            return job if job["state"] == "failed" else None

        job = await eventually(ended, 60, "the restarted cluster to end the interrupted job")
        assert "interrupted" in job["error"]
        code, found = await call(region, "POST", "/api/v1/clusters/vol-site/cloudstack/reconcile", token, {})
        assert code == 200 and found["orphans"] == [], found
        assert await _job_volumes(cs_port, "mig-r") == []
    finally:
        await cluster.stop()
        await region.stop()
        await cloudstack.stop()
    for daemon in (region, cluster):
        assert SECRET not in daemon.log_text()
    shutil.rmtree(base, ignore_errors=True)


async def _job_volumes(port: int, job_id: str) -> list[dict[str, Any]]:
    from twisted.internet import reactor

    from clusterd.cloudstack.client import CloudStackClient

    client = CloudStackClient(reactor, f"http://127.0.0.1:{port}/client/api", KEY, SECRET)
    try:
        return await client.list_volumes(tags={"outpost-job": job_id})
    finally:
        await client.close()

"""
Infrastructure end to end: real ``twistd`` processes for the region, the
cluster and the VIM simulator (its own process, so it outlives a cluster
restart), driven through the Ignition-compatible API, with the task event
followed on the server-sent event stream.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from tests.daemons import TWISTD, Daemon, Region, api_get, env, eventually, free_port, make_cluster, make_region, state_dir

TEMPLATE = """
parameters:
  flavor: {default: small}
resources:
  server:
    type: Simulated::Server
    properties: {flavor: {get_param: flavor}}
outputs:
  server_ip: {value: {get_attr: [server, ip]}}
  flavor: {get_attr: [server, flavor]}
"""


LOCATION_PASSWORD = "location-password-0123456789"


def location(name: str) -> dict[str, Any]:
    return {"name": name, "type": "simulated", "properties": {}}


def vim_sim(base: Path, create_duration: float) -> tuple[Daemon, str]:
    port = free_port()
    daemon = Daemon(
        name="vim-sim",
        argv=[TWISTD, "-n", "--pidfile=", "vim-sim", "--listen", f"tcp:{port}:interface=127.0.0.1",
              "--create-duration", str(create_duration), "--delete-duration", "0.2"],
        log=base / "vim-sim.log",
    )
    return daemon, f"http://127.0.0.1:{port}"


def infra_cluster(base: Path, name: str, region: Region, vim_url: str) -> Daemon:
    cluster = make_cluster(base, name, region)
    config = base / f"{name}.yaml"
    config.write_text(json.dumps({"infrastructure": {"drivers": {"simulated": {"url": vim_url}},
                                                     "monitor": {"interval": 0.1, "max_interval": 0.5}}}))
    at = cluster.argv.index("clusterd") + 1
    cluster.argv[at:at] = ["--config", str(config)]
    return cluster


async def ignition(region: Region, operation: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await treq.post(f"{region.url}/api/infrastructure/{operation}", json=body,
                               headers={"Authorization": [f"Bearer {token}"]}, timeout=30)
    return response.code, await response.json()


class EventStream:
    """A live subscription to GET /api/v1/events/stream, parsed as it arrives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self.done: Deferred[Any] | None = None

    async def open(self, region: Region, token: str, query: str) -> None:
        response = await treq.get(f"{region.url}/api/v1/events/stream?{query}", unbuffered=True,
                                  headers={"Authorization": [f"Bearer {token}"], "Accept": ["text/event-stream"]})
        assert response.code == 200 and response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
        self.done = treq.collect(response, self._received)
        self.done.addErrback(lambda _: None)  # the connection is dropped at the end of the test

    def _received(self, data: bytes) -> None:
        self._buffer += data
        while b"\n\n" in self._buffer:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in frame.decode().split("\n"):
                if line and not line.startswith(":"):
                    key, _, value = line.partition(":")
                    fields[key] = fields.get(key, "") + value.removeprefix(" ")
            if "data" in fields:
                self.events.append({"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])})

    def tasks(self, request_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "infrastructure.task" and e["data"]["data"]["requestId"] == request_id]


async def registered(region: Region, token: str, count: int = 1) -> None:
    async def check() -> bool:
        code, body = await api_get(region, "/api/v1/clusters?connected=true", token)
        return code == 200 and body["total"] == count

    await eventually(check, 30, "the cluster to register")


async def status(region: Region, token: str, name: str, ids: dict[str, str]) -> dict[str, Any]:
    code, task = await ignition(region, "query", token, {**ids, "deploymentLocation": location(name)})
    assert code == 200, task
    return task


def site(base: Path, name: str, create_duration: float) -> tuple[Region, Daemon, Daemon, EventStream]:
    """A region, a VIM simulator and a cluster `name` using it (not started)."""
    region = make_region(base)
    vim, vim_url = vim_sim(base, create_duration=create_duration)
    return region, vim, infra_cluster(base, name, region, vim_url), EventStream()


async def start(region: Region, vim: Daemon, cluster: Daemon, stream: EventStream) -> str:
    """Start them, wait for the cluster to register and follow the task events; an admin token."""
    vim.start()
    region.start()
    await region.wait_healthy()
    token = await region.make_token("admin")
    cluster.start()
    await registered(region, token)
    await stream.open(region, token, "type=infrastructure.task")
    return token


@pytest_twisted.ensureDeferred
async def test_create_query_complete_find_and_delete_with_the_event_on_the_stream() -> None:
    base = state_dir()
    region, vim, cluster, stream = site(base, "infra-site", create_duration=1.5)
    try:
        token = await start(region, vim, cluster, stream)

        code, accepted = await ignition(region, "create", token, {
            "deploymentLocation": {**location("infra-site"), "properties": {"password": LOCATION_PASSWORD}},
            "template": TEMPLATE, "templateType": "simulated",
            "systemProperties": {"resourceName": "web-1"}, "properties": {"flavor": "large"}})
        assert code == 202 and set(accepted) == {"infrastructureId", "requestId"}, accepted
        assert (await status(region, token, "infra-site", accepted))["status"] == "IN_PROGRESS"

        async def complete() -> Any:
            task = await status(region, token, "infra-site", accepted)
            return task if task["status"] != "IN_PROGRESS" else None

        task = await eventually(complete, 30, "the create to complete")
        assert task["status"] == "COMPLETE", task
        assert task["outputs"]["flavor"] == "large" and task["outputs"]["server_ip"]
        await eventually(lambda: _true(stream.tasks(accepted["requestId"])), 10, "the task event on the stream")
        [event] = stream.tasks(accepted["requestId"])
        assert event["data"]["data"] == {"requestId": accepted["requestId"], "infrastructureId": accepted["infrastructureId"],
                                         "status": "COMPLETE", "outputs": task["outputs"]}

        code, found = await ignition(region, "find", token, {"deploymentLocation": location("infra-site"), "template": TEMPLATE,
                                                             "templateType": "simulated", "instanceName": "web-1"})
        assert code == 200 and found["result"]["infrastructureId"] == accepted["infrastructureId"], found
        code, missing = await ignition(region, "find", token, {"deploymentLocation": location("infra-site"), "template": TEMPLATE,
                                                               "templateType": "simulated", "instanceName": "nobody"})
        assert code == 200 and missing == {"result": None}

        code, deleting = await ignition(region, "delete", token, {"deploymentLocation": location("infra-site"),
                                                                  "infrastructureId": accepted["infrastructureId"]})
        assert code == 202 and deleting["requestId"] != accepted["requestId"], deleting

        async def deleted() -> Any:
            return (await status(region, token, "infra-site", deleting))["status"] == "COMPLETE"

        await eventually(deleted, 30, "the delete to complete")
        code, record = await api_get(region, f"/api/v1/infrastructures/infra-site/{accepted['infrastructureId']}", token)
        assert code == 200 and record["state"] == "deleted", record

        # The admin command: a create that fails (the VIM is out of room) exits 1 with the failure.
        failing = base / "full.yaml"
        failing.write_text(TEMPLATE + "simulation: {fail_create: INSUFFICIENT_CAPACITY, create_duration: 0.2}\n")
        result = await outpost(region, token, "--json", "infra", "create", "infra-site", "--template-file", str(failing),
                               "--name", "web-2", "--wait")
        assert result.returncode == 1, result.stderr
        failed = json.loads(result.stdout)
        assert failed["status"] == "FAILED" and failed["failureDetails"]["failureCode"] == "INSUFFICIENT_CAPACITY"
        listed = await outpost(region, token, "--json", "infra", "list", "--cluster", "infra-site")
        assert listed.returncode == 0, listed.stderr
        states = {i["infrastructure_id"]: i["state"] for i in json.loads(listed.stdout)["items"]}
        assert states == {accepted["infrastructureId"]: "deleted", failed["infrastructureId"]: "create_failed"}
        shown = await outpost(region, token, "infra", "show", "infra-site", accepted["infrastructureId"])
        assert shown.returncode == 0 and "deleted" in shown.stdout and deleting["requestId"] in shown.stdout, shown.stdout
        gone = await outpost(region, token, "infra", "query", "infra-site", "no-such-id", "no-such-request")
        assert gone.returncode == 1 and "(HTTP 400)" in gone.stderr and "Traceback" not in gone.stderr

        # An unknown location is Ignition's UnreachableDeploymentLocation, in Ignition's error shape.
        code, error = await ignition(region, "create", token, {"deploymentLocation": location("nowhere"), "template": TEMPLATE,
                                                               "templateType": "simulated"})
        assert code == 400 and set(error) == {"localizedMessage", "status"} and error["status"] == 400, error
    finally:
        for daemon in (cluster, region, vim):
            await daemon.stop()
    # Nothing secret reached a log: the RPC secret, the token, a location's credentials.
    rpc_secret = region.secret.read_text().split()[-1]
    for daemon in (cluster, region, vim):
        log = daemon.log_text()
        assert rpc_secret not in log and token not in log and LOCATION_PASSWORD not in log
        assert "Traceback" not in log, log[-3000:]


@pytest_twisted.ensureDeferred
async def test_a_cluster_killed_while_a_task_runs_still_delivers_its_completion_exactly_once() -> None:
    base = state_dir()
    region, vim, cluster, stream = site(base, "restart-site", create_duration=3.0)
    try:
        token = await start(region, vim, cluster, stream)

        code, accepted = await ignition(region, "create", token, {
            "deploymentLocation": location("restart-site"), "template": TEMPLATE, "templateType": "simulated",
            "systemProperties": {"resourceName": "db-1"}})
        assert code == 202, accepted
        # No goodbye: the cluster has only its journal to go on.
        await cluster.stop(signal.SIGKILL)
        assert (await status(region, token, "restart-site", accepted))["status"] == "IN_PROGRESS"

        cluster.start()

        async def complete() -> Any:
            task = await status(region, token, "restart-site", accepted)
            return task if task["status"] == "COMPLETE" else None

        task = await eventually(complete, 60, "the completion after the restart")
        assert task["outputs"]["server_ip"]
        # The cluster forgets the completion once acknowledged: a second restart
        # redelivers nothing, and clients saw the completion once.
        await _journal_empty(base / "restart-site")
        await cluster.stop()
        cluster.start()
        await registered(region, token)
        code, events = await api_get(region, f"/api/v1/events?type=infrastructure.task&request_id={accepted['requestId']}", token)
        assert code == 200 and len(events["items"]) == 1, events
        await eventually(lambda: _true(stream.tasks(accepted["requestId"])), 10, "the task event on the stream")
        assert len(stream.tasks(accepted["requestId"])) == 1
    finally:
        for daemon in (cluster, region, vim):
            await daemon.stop()


async def outpost(region: Region, token: str, *args: str) -> Any:
    return await deferToThread(subprocess.run, [sys.executable, "-m", "outpost", "--url", region.url, "--token", token, *args],
                               env=env(), capture_output=True, text=True, timeout=120)


async def _true(value: Any) -> Any:
    return value


async def _journal_empty(directory: Path) -> None:
    journal = directory / "infrastructure" / "journal.json"

    async def empty() -> bool:
        data = json.loads(journal.read_text())
        return not any(data.get(k) for k in ("tasks", "completions", "undelivered", "monitored"))

    await eventually(empty, 20, "the cluster's journal to empty")


del reactor  # imported for its side effect of installing the reactor first

"""
``make demo``: a narrated run of the whole system on the embedded default.

Starts a private PostgreSQL (inside the first region), two ``regiond``
processes sharing it, a simulated Waldur, and three ``clusterd`` processes
with simulated MAAS sites (the third also with a simulated CloudStack and
block devices), each told of the first region only.  Then it walks through
the system, printing what each step returned, and stops everything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, cast

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
CS_KEY, CS_SECRET = "demo-cloudstack-key", "demo-cloudstack-secret"
WALDUR_TOKEN = "demo-waldur-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(text: str) -> None:
    print(f"   {text}", flush=True)


class Demo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.token = ""
        self.url = ""
        self.stopped_early = 0

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.base / f"{name}.log", "ab")
        self.procs.append((name, subprocess.Popen(argv, env=ENV, stdout=log, stderr=subprocess.STDOUT, cwd=self.base)))

    def stop(self) -> None:
        # Clusters and simulators first, regions last (the first region stops PostgreSQL).
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def call(self, method: str, path: str, body: Any = None, base: str | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request((base or self.url) + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def first_event(self, query: str) -> dict[str, Any]:
        """The first event the server-sent event stream gives for `query` (read as any SSE client would)."""
        request = urllib.request.Request(f"{self.url}/api/v1/events/stream?{query}", headers={
            "Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"})
        fields: dict[str, str] = {}
        with urllib.request.urlopen(request, timeout=30) as response:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if not line and "data" in fields:
                    return {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
                if line and not line.startswith(":"):
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
        raise SystemExit("the event stream ended without an event")

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited while waiting for {what}; see {self.base / (name + '.log')}")
            try:
                result = check()
                if result:
                    return result
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.3)
        raise SystemExit(f"timed out waiting for {what}")

    def run(self) -> None:
        waldur_port, cs_port = free_port(), free_port()
        regions = [(free_port(), free_port()), (free_port(), free_port())]
        self.url = f"http://127.0.0.1:{regions[0][0]}"
        say("Starting a simulated Waldur, two region processes sharing one PostgreSQL, and three clusters")
        self.spawn("waldur-sim", [TWISTD, "-n", "--pidfile=", "waldur-sim", "--listen", f"tcp:{waldur_port}:interface=127.0.0.1",
                                  "--resources", "60", "--token", WALDUR_TOKEN])
        storage = {"waldur_api_url": f"http://127.0.0.1:{waldur_port}/api/", "waldur_api_token": WALDUR_TOKEN,
                   "storage_systems": {"capstor": "capstor", "vast": "vast"},
                   "backend_settings": {"storage_file_system": "lustre", "development_mode": True}}
        first = {"state_dir": str(self.base / "region-1"), "storage": storage,
                 "rpc": {"listen": f"tcp:{regions[0][1]}:interface=127.0.0.1"}, "http": {"listen": f"tcp:{regions[0][0]}:interface=127.0.0.1"},
                 "maas": {"sync_interval": 3600, "transitional_interval": 1}}
        (self.base / "region-1.yaml").write_text(json.dumps(first))
        self.spawn("regiond-1", [TWISTD, "-n", "--pidfile=", "regiond", "--config", str(self.base / "region-1.yaml")])
        self.wait("region 1", lambda: self.call("GET", "/api/v1/health")[1]["status"] == "ok")
        from regiond.db import EmbeddedPostgres, IEmbeddedPostgresReactor

        # Only the DSN is read, which comes from the directory alone: no reactor is needed.
        dsn = EmbeddedPostgres(cast(IEmbeddedPostgresReactor, None), self.base / "region-1" / "postgres").dsn
        second = {**first, "state_dir": str(self.base / "region-2"), "secret_file": str(self.base / "region-1" / "secret"),
                  "database": {"dsn": dsn},
                  "rpc": {"listen": f"tcp:{regions[1][1]}:interface=127.0.0.1"}, "http": {"listen": f"tcp:{regions[1][0]}:interface=127.0.0.1"}}
        (self.base / "region-2.yaml").write_text(json.dumps(second))
        self.spawn("regiond-2", [TWISTD, "-n", "--pidfile=", "regiond", "--config", str(self.base / "region-2.yaml")])
        self.wait("region 2", lambda: self.call("GET", "/api/v1/health", base=f"http://127.0.0.1:{regions[1][0]}")[1]["status"] == "ok")
        self.token = subprocess.run([sys.executable, "-m", "outpost", "token", "--config", str(self.base / "region-1.yaml"),
                                     "create", "--role", "admin", "--name", "demo"], env=ENV, check=True, capture_output=True, text=True).stdout.strip()
        code, endpoints = self.call("GET", "/api/v1/rpc-endpoints")
        listed = ", ".join(f"{e['host']}:{e['port']}" for e in endpoints["endpoints"])
        show(f"region processes: {listed}")
        sites = {"site-a": {"simulate": {"maas": {"machines": 8, "seed": 1, "speed": 0.05}, "vim": {"create_duration": 1.0}},
                            "infrastructure": {"monitor": {"interval": 0.2, "max_interval": 1.0}}},
                 "site-b": {"simulate": {"maas": {"machines": 8, "seed": 2, "speed": 0.05}}},
                 "site-c": {"simulate": {"maas": {"machines": 6, "seed": 3, "speed": 0.05},
                                         "cloudstack": {"listen": f"tcp:{cs_port}:interface=127.0.0.1", "api_key": CS_KEY,
                                                        "secret_key": CS_SECRET, "job_duration": 0.2}}}}
        for name, config in sites.items():
            (self.base / f"{name}.yaml").write_text(json.dumps(config))
            self.spawn(name, [TWISTD, "-n", "--pidfile=", "clusterd", "--config", str(self.base / f"{name}.yaml"), "--name", name,
                              "--region", self.url + "/", "--state-dir", str(self.base / name),
                              "--secret-file", str(self.base / "region-1" / "secret")])

        say("Clusters connect to every region process (each was told of the first only)")

        def all_connected() -> Any:
            items = self.call("GET", "/api/v1/clusters")[1]["items"]
            return items if len(items) == 3 and all(c["connections"] == 2 for c in items) else None

        for cluster in self.wait("three clusters on both regions", all_connected):
            show(f"{cluster['name']}: connected, {cluster['connections']} connections, version {cluster['version']}")

        say("Inventory sync: every site's MAAS machines into the region, one transaction per cluster")
        self.wait("first syncs", lambda: self.call("GET", "/api/v1/machines")[1]["total"] == 22)
        code, body = self.call("POST", "/api/v1/sync", {})
        show(f"POST /api/v1/sync -> {code} {body}")
        time.sleep(1)
        for event in self.call("GET", "/api/v1/events?type=maas.sync&limit=1000")[1]["items"][-3:]:
            show(f"maas.sync {event['cluster_uuid'][:8]}: {event['outcome']}, {event['data'].get('machines')} machines")

        say("Deploy a Ready machine on site-a")
        ready = self.call("GET", "/api/v1/machines?cluster=site-a&status=Ready")[1]["items"][0]
        code, body = self.call("POST", f"/api/v1/machines/site-a/{ready['system_id']}/deploy", {"distro_series": "jammy"})
        show(f"POST .../deploy -> {code}: {ready['hostname']} is {body['machine']['status']} (request {body['request_id'][:8]})")
        machine = self.wait("Deployed", lambda: (m := self.call("GET", f"/api/v1/machines/site-a/{ready['system_id']}")[1])["status"] == "Deployed" and m)
        show(f"{machine['hostname']}: {machine['status']}, power {machine['power_state']}")

        say("Fleet power query, with one site taken down first")
        site_b = next(p for n, p in self.procs if n == "site-b")
        site_b.send_signal(signal.SIGTERM)
        site_b.wait(timeout=30)
        self.procs = [(n, p) for n, p in self.procs if p is not site_b]
        self.stopped_early = 1
        self.wait("site-b disconnected", lambda: not self.call("GET", "/api/v1/clusters?name=site-b")[1]["items"][0]["connected"])
        code, body = self.call("POST", "/api/v1/machines/power-query", {"timeout": 20})
        states: dict[str, int] = {}
        for result in body["results"]:
            states[result["state"]] = states.get(result["state"], 0) + 1
        show(f"{len(body['results'])} machines answered: {states}")
        for failure in body["failures"]:
            show(f"cluster {failure['cluster'][:8]}: {failure['status']} ({failure['machines']} machines not queried)")

        say("A migration volume job on site-c (simulated CloudStack and block devices)")
        appliance = self.wait("the CloudStack simulator", lambda: _appliance(cs_port))
        code, body = self.call("PUT", "/api/v1/clusters/site-c/cloudstack", {
            "name": "site-c-cloudstack", "api_url": f"http://127.0.0.1:{cs_port}/client/api", "api_key": CS_KEY,
            "secret_key": CS_SECRET, "zone": "OSSEA-Zone", "oma_vm_id": appliance})
        show(f"PUT .../cloudstack -> {code}; secret shown as {body['configuration']['secret_key']}; pushed to the cluster: {body['applied']}")
        code, body = self.call("POST", "/api/v1/volume-jobs", {"cluster": "site-c", "job_id": "demo-job", "disks": [
            {"name": "disk-0", "size_gb": 20}, {"name": "disk-1", "size_gb": 40}]})
        show(f"POST /api/v1/volume-jobs -> {code}: {body['state']}")
        job = self.wait("prepared", lambda: (j := self.call("GET", "/api/v1/volume-jobs/demo-job")[1])["state"] == "prepared" and j)
        for disk in job["disks"]:
            show(f"{disk['disk_name']}: {disk['state']} {disk['device']} at {disk['mount_point']}")
        code, body = self.call("DELETE", "/api/v1/volume-jobs/demo-job")
        job = self.wait("cleaned", lambda: (j := self.call("GET", "/api/v1/volume-jobs/demo-job")[1])["state"] == "cleaned" and j)
        show(f"cleanup: {job['state']}; disks {', '.join(d['state'] for d in job['disks'])}")

        say("Storage resources (CSCS), from the simulated Waldur")
        code, body = self.call("GET", "/api/storage-resources/?page_size=100")
        kinds: dict[str, int] = {}
        for resource in body["resources"]:
            kinds[resource["target"]["targetType"]] = kinds.get(resource["target"]["targetType"], 0) + 1
        show(f"GET /api/storage-resources/ -> {code}: {body['pagination']['total']} entries, by target type {kinds}")
        example = next(r for r in body["resources"] if r["target"]["targetType"] == "project")
        show(f"e.g. {example['mountPoint']['default']}")

        say("Infrastructure (Ignition API) on site-a's simulated VIM: create, query, then the task event")
        location = {"name": "site-a", "type": "simulated", "properties": {}}
        code, accepted = self.call("POST", "/api/infrastructure/create", {
            "deploymentLocation": location, "templateType": "simulated", "systemProperties": {"resourceName": "demo-web"},
            "properties": {"flavor": "large"}, "template": VIM_TEMPLATE})
        show(f"POST /api/infrastructure/create -> {code}: infrastructureId {accepted['infrastructureId'][:8]}, requestId {accepted['requestId'][:8]}")
        query = {**accepted, "deploymentLocation": location}
        show(f"POST /api/infrastructure/query -> {self.call('POST', '/api/infrastructure/query', query)[1]['status']}")
        task = self.wait("COMPLETE", lambda: (t := self.call("POST", "/api/infrastructure/query", query)[1])["status"] != "IN_PROGRESS" and t)
        show(f"... then {task['status']} with outputs {task['outputs']}")
        event = self.first_event(f"type=infrastructure.task&request_id={accepted['requestId']}&after=0")
        show(f"GET /api/v1/events/stream: event {event['id']} {event['event']}: {event['data']['data']}")
        say("The same API on site-a's MAAS (the maas driver): two Ready machines, deployed")
        code, accepted = self.call("POST", "/api/infrastructure/create", {
            "deploymentLocation": {"name": "site-a", "type": "maas"}, "templateType": "maas",
            "systemProperties": {"resourceName": "demo-pair"}, "template": MAAS_TEMPLATE})
        show(f"POST /api/infrastructure/create -> {code}")
        query = {**accepted, "deploymentLocation": {"name": "site-a", "type": "maas"}}
        task = self.wait("COMPLETE", lambda: (t := self.call("POST", "/api/infrastructure/query", query)[1])["status"] != "IN_PROGRESS" and t,
                         timeout=120)
        machines = (task.get("outputs") or {}).get("machines", [])
        show(f"{task['status']}: " + ", ".join(f"{m['hostname']} ({m['role']})" for m in machines)
             + (f" {task['failureDetails']}" if task.get("failureDetails") else ""))
        say("Stopping everything")


VIM_TEMPLATE = """
parameters:
  flavor: {default: small}
resources:
  server: {type: Simulated::Server, properties: {flavor: {get_param: flavor}}}
outputs:
  server_ip: {get_attr: [server, ip]}
  flavor: {get_attr: [server, flavor]}
"""

MAAS_TEMPLATE = """
machines:
  - name: web
    count: 2
    deploy: {distro_series: jammy}
"""


def _appliance(port: int) -> str | None:
    """The simulated CloudStack's appliance VM id, asked for as any API client would (signed)."""
    from urllib.parse import urlencode

    from clusterd.cloudstack.signing import sign

    params = {"command": "listVirtualMachines", "response": "json", "apiKey": CS_KEY, "signatureVersion": "3",
              "expires": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(time.time() + 600))}
    signature = sign(params, CS_SECRET)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/client/api?{urlencode({**params, 'signature': signature})}", timeout=10) as r:
        vms = json.load(r)["listvirtualmachinesresponse"].get("virtualmachine", [])
    return next((vm["id"] for vm in vms if vm["name"] == "oma-appliance"), None)


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="outpost-demo-", dir="/tmp"))
    base.chmod(0o755)
    demo = Demo(base)
    try:
        demo.run()
        return 0
    finally:
        demo.stop()
        left = [name for name, proc in demo.procs if proc.poll() is None]
        print(f"   stopped {len(demo.procs) + demo.stopped_early} processes; still running: {left or 'none'}", flush=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

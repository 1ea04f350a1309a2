"""
``outpost``: the admin command.

Blocking; the reactor runs in a crochet thread and every call into Twisted
code goes through one of the `wait_for` wrappers in this module (the admin
command's blocking-API boundary).

Most subcommands talk to a region over HTTP with an API token (``--token``,
``$OUTPOST_TOKEN``, or the 0600 file ``~/.config/outpost/token``).  ``tokens``
subcommands (``token`` is an alias) talk to the region's database directly,
because making the first token cannot need a token: they read the region's
configuration to find it (``--config``, as given to ``twistd regiond``).
``secret`` subcommands work on this host's RPC secret file (see
`outpost.secret`); they never print a secret, only fingerprints.

Exit codes: 0 success; 1 error; 2 usage; 3 not found; 4 region or cluster
unavailable (including timeouts); 5 authentication or permission refused.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence, cast
from urllib.parse import quote, urlencode

import crochet

from outpost import cli_infra, cli_secret
from outpost.cliutil import (
    DEFAULT_URL,
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandError,
    api,
    emit,
    region_dsn,
    table,
)
from outpost.secret import SecretError

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE", "EXIT_AUTH"]

# -- the blocking boundary -------------------------------------------------


@crochet.wait_for(timeout=120)
def database_call(dsn: str, operation: str, **kwargs: Any) -> Any:
    """Run one token operation against the region's database."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from regiond.db import Database, IDatabaseReactor
    from regiond.tokens import TokenStore

    async def go() -> Any:
        # Twisted types the global reactor as a few common interfaces, IReactorFDSet and IReactorTime among them:
        # all that IDatabaseReactor asks.
        db = await Database.connect(cast(IDatabaseReactor, reactor), dsn, size=1)
        try:
            tokens = TokenStore(db)
            if operation == "create":
                return await tokens.create(kwargs["role"], kwargs["name"], actor="cli")
            if operation == "list":
                return await tokens.list()
            if operation == "revoke":
                return await tokens.revoke(kwargs["token_id"], actor="cli")
            raise ValueError(operation)
        finally:
            await db.close()

    return Deferred.fromCoroutine(go())


# -- subcommands -----------------------------------------------------------


def cmd_token_create(args: argparse.Namespace) -> int:
    token_id, token = database_call(region_dsn(args.config, args.dsn), "create", role=args.role, name=args.name)
    emit(args, {"id": token_id, "role": args.role, "name": args.name, "token": token}, token)
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    tokens = database_call(region_dsn(args.config, args.dsn), "list")
    emit(args, tokens, table([(t["id"], t["name"], t["role"], t["created_at"], t["last_used_at"], t["revoked_at"]) for t in tokens],
                             ["ID", "NAME", "ROLE", "CREATED", "LAST USED", "REVOKED"]))
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    if not database_call(region_dsn(args.config, args.dsn), "revoke", token_id=args.id):
        raise CommandError(f"no live token {args.id}", EXIT_NOT_FOUND)
    emit(args, {"id": args.id, "revoked": True}, f"revoked token {args.id}")
    return EXIT_OK


def _cluster_rows(items: list[dict[str, Any]]) -> str:
    return table(
        [(c["uuid"], c["name"], "yes" if c["connected"] else "no", c["connections"], c["version"], c["last_seen"]) for c in items],
        ["UUID", "NAME", "CONNECTED", "CONNS", "VERSION", "LAST SEEN"],
    )


def cmd_clusters(args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        data = api(args, "GET", f"/api/v1/clusters?page={page}&page_size=1000")
        items += data["items"]
        if len(items) >= data["total"] or not data["items"]:
            break
        page += 1
    emit(args, items, _cluster_rows(items))
    return EXIT_OK


def cmd_clusters_show(args: argparse.Namespace) -> int:
    data = api(args, "GET", f"/api/v1/clusters/{quote(args.uuid, safe='')}")
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
    return EXIT_OK


def cmd_clusters_ping(args: argparse.Namespace) -> int:
    data = api(args, "POST", f"/api/v1/clusters/{quote(args.uuid, safe='')}/ping", body={"timeout": args.timeout})
    emit(args, data, f"{data['uuid']}: {data['latency_ms']:.1f} ms")
    return EXIT_OK


def _machine_path(args: argparse.Namespace) -> str:
    return f"/api/v1/machines/{quote(args.cluster, safe='')}/{quote(args.system_id, safe='')}"


def _machine_rows(items: list[dict[str, Any]]) -> str:
    return table(
        [(m["cluster_name"], m["system_id"], m["hostname"], m["status"], m["power_state"], m["zone"], m["pool"], ",".join(m["tags"])) for m in items],
        ["CLUSTER", "SYSTEM_ID", "HOSTNAME", "STATUS", "POWER", "ZONE", "POOL", "TAGS"],
    )


def cmd_machines_list(args: argparse.Namespace) -> int:
    query = [(name, value) for name in ("status", "cluster", "tags", "hostname", "zone", "pool") for value in getattr(args, name) or []]
    if args.missing:
        query.append(("missing", "true"))
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        data = api(args, "GET", "/api/v1/machines?" + urlencode([*query, ("page", page), ("page_size", 1000)]))
        items += data["items"]
        if len(items) >= data["total"] or not data["items"]:
            break
        page += 1
    emit(args, items, _machine_rows(items))
    return EXIT_OK


def cmd_machines_show(args: argparse.Namespace) -> int:
    data = api(args, "GET", _machine_path(args))
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
    return EXIT_OK


def _wait_for_outcome(args: argparse.Namespace, request_id: str, event_type: str) -> dict[str, Any]:
    deadline = time.monotonic() + args.wait_timeout
    while time.monotonic() < deadline:
        data = api(args, "GET", "/api/v1/events?" + urlencode({"request_id": request_id, "type": event_type}))
        if data["items"]:
            outcome: dict[str, Any] = data["items"][-1]
            return outcome
        time.sleep(1)  # the admin command is a blocking client; it polls the region
    raise CommandError(f"no outcome for request {request_id} within {args.wait_timeout:g}s", EXIT_UNAVAILABLE)


def cmd_machines_power(args: argparse.Namespace) -> int:
    data = api(args, "POST", _machine_path(args) + "/power", body={"action": args.action, "stop_mode": args.stop_mode})
    if args.wait:
        event = _wait_for_outcome(args, data["request_id"], "machine.power")
        data = {**data, "outcome": event["outcome"], "state": event["data"].get("state"), "error": event["data"].get("error")}
        emit(args, data, f"power {args.action}: {data['outcome']} (now {data['state']}) {data['error'] or ''}".rstrip())
        return EXIT_OK if data["outcome"] == "ok" else EXIT_ERROR
    emit(args, data, f"power {args.action} accepted (request {data['request_id']})")
    return EXIT_OK


def cmd_machines_deploy(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.distro_series:
        body["distro_series"] = args.distro_series
    if args.hwe_kernel:
        body["hwe_kernel"] = args.hwe_kernel
    if args.user_data_file:
        body["user_data"] = base64.b64encode(Path(args.user_data_file).read_bytes()).decode("ascii")
    data = api(args, "POST", _machine_path(args) + "/deploy", body=body)
    emit(args, data, f"deploying {data['machine']['hostname']} (request {data['request_id']})")
    return EXIT_OK


def cmd_machines_release(args: argparse.Namespace) -> int:
    body = {k: True for k in ("erase", "secure_erase", "quick_erase") if getattr(args, k)}
    data = api(args, "POST", _machine_path(args) + "/release", body=body)
    emit(args, data, f"releasing {data['machine']['hostname']} (request {data['request_id']})")
    return EXIT_OK


def cmd_machines_sync(args: argparse.Namespace) -> int:
    data = api(args, "POST", "/api/v1/sync", body={})
    emit(args, data, "inventory sync started; outcomes are recorded as maas.sync events")
    return EXIT_OK


def progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on stderr, for people (not scripts or pipes)."""
    if not sys.stderr.isatty() or total == 0:
        return
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_machines_power_query(args: argparse.Namespace) -> int:
    """Fleet-wide power query, one cluster at a time so progress can be shown."""
    clusters = [c for c in api(args, "GET", "/api/v1/clusters?page_size=1000")["items"] if not args.cluster or c["name"] in args.cluster or c["uuid"] in args.cluster]
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for index, cluster in enumerate(clusters):
        progress(index, len(clusters), "clusters")
        machines = api(args, "GET", "/api/v1/machines?" + urlencode({"cluster": cluster["uuid"], "page_size": 1000}))["items"]
        if machines:
            refs = [{"cluster": cluster["uuid"], "system_id": m["system_id"]} for m in machines]
            answer = api(args, "POST", "/api/v1/machines/power-query", body={"machines": refs, "timeout": args.timeout})
            results += answer["results"]
            failures += answer["failures"]
    progress(len(clusters), len(clusters), "clusters")
    names = {c["uuid"]: c["name"] for c in clusters}
    human = table([(names.get(r["cluster"], r["cluster"]), r["system_id"], r["state"], r.get("error", "")) for r in results], ["CLUSTER", "SYSTEM_ID", "STATE", "ERROR"])
    if failures:
        human += "\n\nfailed clusters:\n" + table([(names.get(f["cluster"], f["cluster"]), f["status"], f["error"]) for f in failures], ["CLUSTER", "STATUS", "ERROR"])
    emit(args, {"results": results, "failures": failures}, human)
    return EXIT_OK if not failures else EXIT_UNAVAILABLE


def _volume_job_rows(jobs: list[dict[str, Any]]) -> str:
    return table([(j["job_id"], j["cluster"], j["state"], len(j["disks"]), j["error"]) for j in jobs], ["JOB", "CLUSTER", "STATE", "DISKS", "ERROR"])


def cmd_volumes_list(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("cluster", args.cluster), ("state", args.state)) if v}
    data = api(args, "GET", "/api/v1/volume-jobs?" + urlencode({**query, "page_size": 1000}))
    emit(args, data["items"], _volume_job_rows(data["items"]))
    return EXIT_OK


def cmd_volumes_show(args: argparse.Namespace) -> int:
    job = api(args, "GET", f"/api/v1/volume-jobs/{quote(args.job_id, safe='')}")
    human = f"{job['job_id']} on {job['cluster']}: {job['state']} {job['error']}".rstrip() + "\n" + table(
        [(d["disk_name"], d["size_gb"], d["state"], d["volume_id"], d["device"], d["mount_point"], d["error"]) for d in job["disks"]],
        ["DISK", "GB", "STATE", "VOLUME", "DEVICE", "MOUNT POINT", "ERROR"])
    emit(args, job, human)
    return EXIT_OK


def _parse_disk(text: str) -> dict[str, Any]:
    name, sep, size = text.partition(":")
    if not sep or not size.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give disks as NAME:SIZE_GB, e.g. disk-0:100")
    return {"name": name, "size_gb": int(size)}


def cmd_volumes_prepare(args: argparse.Namespace) -> int:
    job = api(args, "POST", "/api/v1/volume-jobs", body={"cluster": args.cluster, "job_id": args.job_id, "disks": args.disk})
    emit(args, job, f"preparing {len(job['disks'])} volumes for {job['job_id']}")
    return EXIT_OK


def cmd_volumes_cleanup(args: argparse.Namespace) -> int:
    job = api(args, "DELETE", f"/api/v1/volume-jobs/{quote(args.job_id, safe='')}?keep={'true' if args.keep else 'false'}")
    emit(args, job, f"cleaning up {job['job_id']} ({'keeping' if args.keep else 'deleting'} its volumes)")
    return EXIT_OK


def cmd_volumes_reconcile(args: argparse.Namespace) -> int:
    data = api(args, "POST", f"/api/v1/clusters/{quote(args.cluster, safe='')}/cloudstack/reconcile", body={"clean": args.clean})
    human = table([(o["job_id"], o["volume_id"], o["name"], o["state"]) for o in data["orphans"]], ["JOB", "VOLUME", "NAME", "STATE"])
    emit(args, data, human + (f"\ncleaned {len(data['cleaned'])} volumes" if args.clean else ""))
    return EXIT_OK


def cmd_ossea_config(args: argparse.Namespace) -> int:
    configuration: dict[str, Any] = {}
    if args.cluster:
        configuration["cluster"] = args.cluster
    for name in ("name", "api_url", "zone", "domain", "disk_offering", "oma_vm_id"):
        value = getattr(args, name, None)
        if value is not None:
            configuration[name] = value
    if getattr(args, "api_key_file", None):
        configuration["api_key"] = Path(args.api_key_file).read_text().strip()
    if getattr(args, "secret_key_file", None):
        from outpost.secret import read_private_file

        configuration["secret_key"] = read_private_file(Path(args.secret_key_file), "secret key file")
    body: dict[str, Any] = {"action": args.action}
    if args.action != "list":
        body["configuration"] = configuration
    data = api(args, "POST", "/api/v1/ossea/config", body=body)
    if args.action == "list":
        human = table([(c["name"], c["cluster"], c["api_url"], c["zone"], c["oma_vm_id"]) for c in data["configurations"]],
                      ["NAME", "CLUSTER", "API URL", "ZONE", "APPLIANCE VM"])
    elif args.action == "test":
        human = "\n".join(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}" for c in data["checks"])
    else:
        human = json.dumps(data, indent=2, sort_keys=True)
    emit(args, data, human)
    return EXIT_OK if args.action != "test" or data.get("ok") else EXIT_ERROR


def _event_rows(items: list[dict[str, Any]]) -> str:
    return table([(e["id"], e["created_at"][:19], e["type"], e["outcome"], e["subject"], e["actor"]) for e in items],
                 ["ID", "TIME", "TYPE", "OUTCOME", "SUBJECT", "ACTOR"])


def cmd_events(args: argparse.Namespace) -> int:
    """The event log after a cursor; with --follow, keep printing new events until interrupted."""
    query = {k: v for k, v in (("type", args.type), ("cluster", args.cluster), ("subject", args.subject),
                               ("request_id", args.request_id), ("outcome", args.outcome)) if v}
    after = args.after
    first = True
    try:
        while True:
            data = api(args, "GET", "/api/v1/events?" + urlencode({**query, "after": after, "limit": args.limit}))
            if data["items"] or first:
                if args.json:
                    for item in data["items"]:
                        print(json.dumps(item, sort_keys=True), flush=True)
                else:
                    rows = _event_rows(data["items"]).splitlines()
                    print("\n".join(rows if first else rows[1:]), flush=True)
            first = False
            after = data["next_after"]
            if not args.follow:
                return EXIT_OK
            if not data["items"]:
                time.sleep(args.interval)  # a blocking client polling the region
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_storage(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("storage_system", args.storage_system), ("data_type", args.data_type),
                               ("status", args.status), ("page", args.page), ("page_size", args.page_size)) if v}
    data = api(args, "GET", "/api/storage-resources/?" + urlencode(query))
    resources = data.get("resources", [])
    human = table([(r.get("itemId", ""), r.get("target", {}).get("targetType", ""), r.get("status", ""), r.get("mountPoint", {}).get("default", ""))
                   for r in resources], ["ITEM", "TARGET", "STATUS", "MOUNT POINT"])
    pagination = data.get("pagination", {})
    human += f"\npage {pagination.get('current', '?')} of {pagination.get('pages', '?')}, {pagination.get('total', '?')} in all"
    emit(args, data, human)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    health = api(args, "GET", "/api/v1/health", auth=False)
    data = api(args, "GET", "/api/v1/clusters?page_size=1000")
    connected = sum(1 for c in data["items"] if c["connected"])
    summary = {
        "region": health,
        "clusters": {"total": data["total"], "connected": connected, "disconnected": data["total"] - connected},
    }
    human = (
        f"region {health['region']['hostname']} (process {health['region']['id']}): {health['status']}, database {health['database']}\n"
        f"clusters: {data['total']} known, {connected} connected, {data['total'] - connected} disconnected"
    )
    emit(args, summary, human)
    return EXIT_OK if health["status"] == "ok" else EXIT_UNAVAILABLE


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="outpost", description="Administer an Outpost region.")
    top.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    top.add_argument("--url", default=os.environ.get("OUTPOST_URL", DEFAULT_URL), help="region API URL (default $OUTPOST_URL or %(default)s)")
    top.add_argument("--token", help="API token (default $OUTPOST_TOKEN or ~/.config/outpost/token)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = sub.add_parser("tokens", aliases=["token"], help="make, list and revoke API tokens (talks to the region's database)")
    token.add_argument("--config", help="the region's YAML config (to find its database)")
    token.add_argument("--dsn", help="the region database's DSN (instead of --config)")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="make a token and print it (shown only once)")
    create.add_argument("--role", choices=["admin", "read"], required=True)
    create.add_argument("--name", default="", help="what the token is for")
    create.set_defaults(func=cmd_token_create)
    tsub.add_parser("list", help="list tokens (never their values)").set_defaults(func=cmd_token_list)
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=cmd_token_revoke)

    cli_secret.add_parser(sub)
    cli_infra.add_parser(sub)

    clusters = sub.add_parser("clusters", help="list clusters; show or ping one")
    clusters.set_defaults(func=cmd_clusters)
    csub = clusters.add_subparsers(dest="clusters_command", metavar="ACTION")
    show = csub.add_parser("show", help="one cluster's record")
    show.add_argument("uuid")
    show.set_defaults(func=cmd_clusters_show)
    ping = csub.add_parser("ping", help="round-trip an RPC ping to a cluster")
    ping.add_argument("uuid")
    ping.add_argument("--timeout", type=float, default=10.0)
    ping.set_defaults(func=cmd_clusters_ping)

    sub.add_parser("status", help="region health and cluster counts").set_defaults(func=cmd_status)

    events = sub.add_parser("events", help="the event log (the audit trail); --follow keeps printing new ones")
    for name in ("type", "cluster", "subject", "request-id", "outcome"):
        events.add_argument(f"--{name}", dest=name.replace("-", "_"))
    events.add_argument("--after", type=int, default=0, help="only events after this id")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--follow", action="store_true")
    events.add_argument("--interval", type=float, default=1.0, help="seconds between polls when following")
    events.set_defaults(func=cmd_events)

    storage = sub.add_parser("storage", help="the CSCS storage resources the region serves")
    storage.add_argument("--storage-system", dest="storage_system")
    storage.add_argument("--data-type", dest="data_type")
    storage.add_argument("--status")
    storage.add_argument("--page", type=int)
    storage.add_argument("--page-size", dest="page_size", type=int)
    storage.set_defaults(func=cmd_storage)

    machines = sub.add_parser("machines", help="MAAS machines across every site")
    msub = machines.add_subparsers(dest="machines_command", required=True, metavar="ACTION")
    listing = msub.add_parser("list", help="list machines (filters repeat)")
    for name in ("status", "cluster", "tags", "hostname", "zone", "pool"):
        listing.add_argument(f"--{name}", action="append", help=f"only machines with this {name}")
    listing.add_argument("--missing", action="store_true", help="include machines MAAS no longer lists")
    listing.set_defaults(func=cmd_machines_list)

    def machine_parser(name: str, help: str) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help)
        p.add_argument("cluster", help="cluster uuid or name")
        p.add_argument("system_id")
        return p

    machine_parser("show", "one machine").set_defaults(func=cmd_machines_show)
    power = machine_parser("power", "power on, off or cycle (off, verify, on, verify)")
    power.add_argument("action", choices=["on", "off", "cycle"])
    power.add_argument("--stop-mode", choices=["hard", "soft"], default="hard")
    power.add_argument("--wait", action="store_true", help="wait for the outcome")
    power.add_argument("--wait-timeout", type=float, default=330.0)
    power.set_defaults(func=cmd_machines_power)
    deploy = machine_parser("deploy", "deploy a machine")
    deploy.add_argument("--distro-series")
    deploy.add_argument("--hwe-kernel")
    deploy.add_argument("--user-data-file", help="cloud-init user data (sent base64)")
    deploy.set_defaults(func=cmd_machines_deploy)
    release = machine_parser("release", "release a machine")
    for flag in ("erase", "secure-erase", "quick-erase"):
        release.add_argument(f"--{flag}", action="store_true")
    release.set_defaults(func=cmd_machines_release)
    msub.add_parser("sync", help="run an inventory sync of every site now").set_defaults(func=cmd_machines_sync)
    query = msub.add_parser("power-query", help="query every machine's power state, site by site (progress on a terminal)")
    query.add_argument("--cluster", action="append", help="only these clusters (uuid or name)")
    query.add_argument("--timeout", type=float, default=30.0)
    query.set_defaults(func=cmd_machines_power_query)

    volumes = sub.add_parser("volumes", help="migration volume jobs (CloudStack)")
    vsub = volumes.add_subparsers(dest="volumes_command", required=True, metavar="ACTION")
    vlist = vsub.add_parser("list", help="list volume jobs")
    vlist.add_argument("--cluster")
    vlist.add_argument("--state")
    vlist.set_defaults(func=cmd_volumes_list)
    vshow = vsub.add_parser("show", help="one job: per-disk state, device, mount point")
    vshow.add_argument("job_id")
    vshow.set_defaults(func=cmd_volumes_show)
    vprep = vsub.add_parser("prepare", help="create, attach and mount a job's volumes")
    vprep.add_argument("cluster")
    vprep.add_argument("job_id")
    vprep.add_argument("--disk", type=_parse_disk, action="append", required=True, help="NAME:SIZE_GB (repeat per disk)")
    vprep.set_defaults(func=cmd_volumes_prepare)
    vclean = vsub.add_parser("cleanup", help="unmount, detach and delete (or --keep) a job's volumes")
    vclean.add_argument("job_id")
    vclean.add_argument("--keep", action="store_true", help="keep the volumes, detached")
    vclean.set_defaults(func=cmd_volumes_cleanup)
    vrec = vsub.add_parser("reconcile", help="find volumes of jobs the region does not track")
    vrec.add_argument("cluster")
    vrec.add_argument("--clean", action="store_true", help="also unmount, detach and delete them")
    vrec.set_defaults(func=cmd_volumes_reconcile)

    ossea = sub.add_parser("ossea", help="OSSEA/CloudStack configuration of each cluster")
    osub = ossea.add_subparsers(dest="ossea_command", required=True, metavar="WHAT")
    config = osub.add_parser("config", help="create, update, delete, get, list or test a configuration")
    config.add_argument("action", choices=["create", "update", "delete", "get", "list", "test"])
    config.add_argument("--cluster", help="the cluster (uuid or name) it is for")
    config.add_argument("--name")
    config.add_argument("--api-url", dest="api_url")
    config.add_argument("--zone")
    config.add_argument("--domain")
    config.add_argument("--disk-offering", dest="disk_offering")
    config.add_argument("--oma-vm-id", dest="oma_vm_id")
    config.add_argument("--api-key-file", help="file holding the API key")
    config.add_argument("--secret-key-file", help="file (mode 0600) holding the secret key")
    config.set_defaults(func=cmd_ossea_config)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    crochet.setup()
    try:
        return int(args.func(args))
    except CommandError as e:
        print(f"outpost: {e}", file=sys.stderr)
        return e.code
    except SecretError as e:  # says what is wrong with the file, never what it holds
        print(f"outpost: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a clear line, not a traceback, for an operator
        print(f"outpost: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

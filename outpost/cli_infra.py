"""
``outpost infra``: infrastructure through the region's Ignition-compatible
API (``/api/infrastructure/...``) and its records (``/api/v1/infrastructures``).

``create`` and ``delete`` answer with the request at once, as the API does;
``--wait`` follows the request until it completes and exits 1 if it failed,
so a script can chain on it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from outpost.cliutil import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CommandError, api, emit, table

__all__ = ["add_parser"]

#: Seconds between polls when waiting for a request.
POLL_INTERVAL = 1.0


def _location(args: argparse.Namespace) -> dict[str, Any]:
    location: dict[str, Any] = {"name": args.location}
    if getattr(args, "type", None):
        location["type"] = args.type
    return location


def _template(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"cannot read the template {path}: {e}", EXIT_USAGE) from None


def _property(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _task_line(task: dict[str, Any]) -> str:
    line = f"{task['infrastructureId']}  request {task['requestId']}  {task['status']}"
    failure = task.get("failureDetails")
    if failure:
        line += f"  {failure.get('failureCode')}: {failure.get('description', '')}"
    if task.get("outputs"):
        line += "\n" + "\n".join(f"  {k} = {json.dumps(v)}" for k, v in sorted(task["outputs"].items()))
    return line


def _wait(args: argparse.Namespace, accepted: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + args.wait_timeout
    body = {"infrastructureId": accepted["infrastructureId"], "requestId": accepted["requestId"], "deploymentLocation": _location(args)}
    while True:
        task: dict[str, Any] = api(args, "POST", "/api/infrastructure/query", body)
        if task["status"] != "IN_PROGRESS":
            return task
        if time.monotonic() >= deadline:
            raise CommandError(f"request {accepted['requestId']} still in progress after {args.wait_timeout:g}s")
        time.sleep(POLL_INTERVAL)


def _finish(args: argparse.Namespace, accepted: dict[str, Any], verb: str) -> int:
    if not args.wait:
        emit(args, accepted, f"{verb} {accepted['infrastructureId']}: request {accepted['requestId']} accepted")
        return EXIT_OK
    task = _wait(args, accepted)
    emit(args, task, _task_line(task))
    return EXIT_OK if task["status"] == "COMPLETE" else EXIT_ERROR


def cmd_create(args: argparse.Namespace) -> int:
    system = {"resourceName": args.name} if args.name else {}
    accepted = api(args, "POST", "/api/infrastructure/create", {
        "deploymentLocation": _location(args), "template": _template(args.template_file), "templateType": args.template_type,
        "systemProperties": system, "properties": dict(args.property or []),
    })
    return _finish(args, accepted, "creating")


def cmd_delete(args: argparse.Namespace) -> int:
    accepted = api(args, "POST", "/api/infrastructure/delete",
                   {"deploymentLocation": _location(args), "infrastructureId": args.infrastructure_id})
    return _finish(args, accepted, "deleting")


def cmd_query(args: argparse.Namespace) -> int:
    task = api(args, "POST", "/api/infrastructure/query", {
        "deploymentLocation": _location(args), "infrastructureId": args.infrastructure_id, "requestId": args.request_id})
    emit(args, task, _task_line(task))
    return EXIT_OK


def cmd_find(args: argparse.Namespace) -> int:
    found = api(args, "POST", "/api/infrastructure/find", {
        "deploymentLocation": _location(args), "template": _template(args.template_file), "templateType": args.template_type,
        "instanceName": args.name})
    result = found.get("result")
    if result is None:
        emit(args, found, f"no infrastructure named {args.name} at {args.location}")
        return EXIT_OK
    outputs = "".join(f"\n  {k} = {json.dumps(v)}" for k, v in sorted((result.get("outputs") or {}).items()))
    emit(args, found, f"{result['infrastructureId']}{outputs}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("cluster", args.cluster), ("state", args.state), ("location", args.location)) if v}
    data = api(args, "GET", "/api/v1/infrastructures" + (f"?{urlencode(query)}" if query else ""))
    rows = [(i["cluster_name"], i["infrastructure_id"], i["location"]["name"], i["instance_name"], i["state"], i["updated_at"])
            for i in data["items"]]
    emit(args, data, table(rows, ["CLUSTER", "ID", "LOCATION", "NAME", "STATE", "UPDATED"]))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    found = api(args, "GET", f"/api/v1/infrastructures/{quote(args.cluster, safe='')}/{quote(args.infrastructure_id, safe='')}")
    lines = [f"{found['infrastructure_id']} on {found['cluster_name']} ({found['location']['name']}, {found['location']['type']}): "
             f"{found['state']}"]
    lines += [f"  {k} = {json.dumps(v)}" for k, v in sorted((found.get("outputs") or {}).items())]
    requests = found.get("requests") or []
    if requests:
        lines.append(table([(r["request_id"], r["operation"], r["status"], r["failure_code"] or "", r["completed_at"] or "")
                            for r in requests], ["REQUEST", "OPERATION", "STATUS", "FAILURE", "COMPLETED"]))
    emit(args, found, "\n".join(lines))
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``infra`` and its actions to the top-level subparsers `sub`."""
    infra = sub.add_parser("infra", help="infrastructure at deployment locations (the Ignition-compatible API)")
    isub = infra.add_subparsers(dest="infra_command", required=True, metavar="ACTION")

    listing = isub.add_parser("list", help="infrastructure the region knows, oldest first")
    listing.add_argument("--cluster", help="cluster uuid or name")
    listing.add_argument("--state", help="creating, created, create_failed, deleting, deleted or delete_failed")
    listing.add_argument("--location", help="deployment location name")
    listing.set_defaults(func=cmd_list)

    show = isub.add_parser("show", help="one infrastructure's record with its requests")
    show.add_argument("cluster", help="cluster uuid or name")
    show.add_argument("infrastructure_id")
    show.set_defaults(func=cmd_show)

    def located(name: str, help: str) -> argparse.ArgumentParser:
        p = isub.add_parser(name, help=help)
        p.add_argument("location", help="the deployment location (cluster) name")
        p.add_argument("--type", default="simulated", help="the location's type, which picks the driver (default %(default)s)")
        return p

    def waits(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true", help="follow the request until it ends; exit 1 if it failed")
        p.add_argument("--wait-timeout", type=float, default=600.0, help="seconds to wait (default %(default)s)")

    create = located("create", "create infrastructure from a template")
    create.add_argument("--template-file", required=True, help="the template (its syntax is the driver's)")
    create.add_argument("--template-type", default="simulated", help="the template's type (default %(default)s)")
    create.add_argument("--name", help="the instance name (systemProperties.resourceName); find looks it up")
    create.add_argument("--property", type=_property, action="append", metavar="NAME=VALUE", help="a property (repeatable)")
    waits(create)
    create.set_defaults(func=cmd_create)

    delete = located("delete", "delete infrastructure")
    delete.add_argument("infrastructure_id")
    waits(delete)
    delete.set_defaults(func=cmd_delete)

    query = located("query", "where a create or delete request stands")
    query.add_argument("infrastructure_id")
    query.add_argument("request_id")
    query.set_defaults(func=cmd_query)

    find = located("find", "find infrastructure by instance name")
    find.add_argument("name", help="the instance name")
    find.add_argument("--template-file", required=True)
    find.add_argument("--template-type", default="simulated")
    find.set_defaults(func=cmd_find)

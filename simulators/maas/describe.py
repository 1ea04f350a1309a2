"""
The simulated MAAS's handlers, declared once: the same declarations route
requests (`web.py`) and make the ``describe/`` document, so the two cannot
drift.  python-libmaas connects by fetching ``describe/`` and following the
absolute URIs in it, so those carry the host:port the client used.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import attrs

from simulators.maas.model import API

__all__ = ["Action", "Handler", "HANDLERS", "describe", "match"]

_CRUD = {"GET": "read", "POST": "create", "PUT": "update", "DELETE": "delete"}


@attrs.frozen
class Action:
    method: str
    op: str | None
    doc: str

    def describe(self) -> dict[str, Any]:
        name = self.op if self.op is not None else _CRUD[self.method]
        return {"method": self.method, "name": name, "doc": self.doc, "op": self.op, "restful": self.op is None}


@attrs.frozen
class Handler:
    name: str
    path: str  # under the API root, e.g. "machines/{system_id}/"
    doc: str
    actions: tuple[Action, ...]
    anonymous: bool = False
    params: tuple[str, ...] = attrs.field(init=False)
    pattern: re.Pattern[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(re.findall(r"\{(\w+)\}", self.path)))
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    def action(self, method: str, op: str | None) -> Action | None:
        return next((a for a in self.actions if a.method == method and a.op == op), None)

    def describe(self, base_uri: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "doc": self.doc,
            "params": list(self.params),
            "path": API + self.path,
            "uri": base_uri + API + self.path,
            "actions": sorted((a.describe() for a in self.actions), key=lambda a: a["name"]),
        }


def _read(doc: str) -> Action:
    return Action("GET", None, doc)


HANDLERS: tuple[Handler, ...] = (
    Handler("VersionHandler", "version/", "Information about this MAAS instance.", (_read("Version and capabilities."),), anonymous=True),
    Handler(
        "UsersHandler",
        "users/",
        "Manage the user accounts of this MAAS.",
        (_read("List users."), Action("GET", "whoami", "Returns the currently logged in user.")),
    ),
    Handler("UserHandler", "users/{username}/", "Manage a user account.", (_read("Read a user."),)),
    Handler("MachinesHandler", "machines/", "Manage the collection of all the machines in the MAAS.", (
        _read("List machines, filtered by hostname, status, zone, pool, tags, id and mac_address (repeatable)."),
    )),
    Handler("MachineHandler", "machines/{system_id}/", "Manage an individual machine.", (
        _read("Read a machine."),
        Action("PUT", None, "Update a machine (hostname)."),
        Action("POST", "commission", "Begin commissioning: enable_ssh, skip_networking, skip_storage, testing_scripts."),
        Action("POST", "deploy", "Deploy: distro_series, hwe_kernel, user_data (base64). Allocates a Ready machine first."),
        Action("POST", "release", "Release: erase, secure_erase, quick_erase. Idempotent on Ready and Releasing."),
        Action("POST", "power_on", "Turn on an allocated machine."),
        Action("POST", "power_off", "Power off: stop_mode soft or hard."),
        Action("GET", "query_power_state", "Ask the machine's BMC for its power state."),
    )),
    Handler("ZonesHandler", "zones/", "Manage physical zones.", (_read("List zones."),)),
    Handler("ZoneHandler", "zones/{name}/", "Manage a physical zone.", (_read("Read a zone."),)),
    Handler("ResourcePoolsHandler", "resourcepools/", "Manage resource pools.", (_read("List resource pools."),)),
    Handler("ResourcePoolHandler", "resourcepool/{id}/", "Manage a resource pool.", (_read("Read a resource pool."),)),
    Handler("SubnetsHandler", "subnets/", "Manage subnets.", (_read("List subnets."),)),
    Handler("SubnetHandler", "subnets/{id}/", "Manage a subnet.", (_read("Read a subnet."),)),
    Handler("FabricsHandler", "fabrics/", "Manage fabrics.", (_read("List fabrics."),)),
    Handler("FabricHandler", "fabrics/{id}/", "Manage a fabric.", (_read("Read a fabric."),)),
    Handler("VlansHandler", "fabrics/{fabric_id}/vlans/", "Manage the VLANs of a fabric.", (_read("List VLANs."),)),
    Handler("VlanHandler", "fabrics/{fabric_id}/vlans/{vid}/", "Manage a VLAN on a fabric.", (_read("Read a VLAN."),)),
    Handler("SpacesHandler", "spaces/", "Manage spaces.", (_read("List spaces."),)),
    Handler("SpaceHandler", "spaces/{id}/", "Manage a space.", (_read("Read a space."),)),
)


def match(path: str) -> tuple[Handler, dict[str, str]] | None:
    """The handler for `path` (relative to the API root) and its URI parameters."""
    for handler in HANDLERS:
        m = handler.pattern.match(path)
        if m:
            return handler, m.groupdict()
    return None


def describe(base_uri: str) -> dict[str, Any]:
    """MAAS's API description, with absolute URIs under `base_uri` (``http://host:port``)."""
    resources = []
    for handler in sorted(HANDLERS, key=lambda h: h.name):
        described = handler.describe(base_uri)
        resources.append(
            {
                "name": handler.name,
                "anon": described if handler.anonymous else None,
                "auth": None if handler.anonymous else described,
            }
        )
    document: dict[str, Any] = {"doc": "MAAS API", "resources": resources}
    document["handlers"] = [r["anon"] for r in resources if r["anon"]] + [r["auth"] for r in resources if r["auth"]]
    canonical = json.dumps([{k: v for k, v in h.items() if k != "uri"} for h in document["handlers"]], sort_keys=True)
    document["hash"] = hashlib.sha1(canonical.encode("utf-8")).hexdigest()
    return document

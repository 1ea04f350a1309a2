"""
CloudStack (OSSEA) configuration, one per cluster.

The API key and secret key are write-only: they are stored encrypted
(Fernet, with a key derived from the region's RPC secret by HKDF), sent to
the cluster over authenticated RPC, and never returned by the API or
logged.  Everything else is plain columns.
"""

from __future__ import annotations

import base64
import json
import re
import uuid as uuidlib
from typing import Any
from urllib.parse import urlsplit

import attrs
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from regiond import events
from regiond.db import Database

__all__ = ["CloudStackConfigStore", "ConfigInvalid", "check_configuration", "PUBLIC_FIELDS", "SECRET_FIELDS"]

PUBLIC_FIELDS = ("name", "api_url", "domain", "zone", "disk_offering", "oma_vm_id")
SECRET_FIELDS = ("api_key", "secret_key")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,63}")


class ConfigInvalid(ValueError):
    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("invalid configuration")
        self.problems = problems


def check_configuration(data: Any, *, partial: bool = False) -> dict[str, Any]:
    """
    The configuration's fields, checked (every problem at once, by field);
    `partial` for updates, where absent fields keep their values.
    """
    if not isinstance(data, dict):
        raise ConfigInvalid({"configuration": "must be an object"})
    problems: dict[str, str] = {}
    allowed = set(PUBLIC_FIELDS) | set(SECRET_FIELDS) | {"cluster"}
    for key in data:
        if key not in allowed:
            problems[key] = "unknown field"
    required = () if partial else ("name", "api_url", "api_key", "secret_key", "zone", "oma_vm_id")
    for key in required:
        if key not in data:
            problems[key] = "required"
    out: dict[str, Any] = {}

    def text(key: str, limit: int) -> str | None:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > limit or "\x00" in value:
            problems[key] = f"must be a non-empty string of at most {limit} characters"
            return None
        return value

    for key in PUBLIC_FIELDS + SECRET_FIELDS:
        if key not in data:
            continue
        if key == "name":
            value = text(key, 64)
            if value is not None and not _NAME.fullmatch(value):
                problems[key] = "letters, digits, '.', '_', '-' and spaces, starting with a letter or digit"
        elif key == "api_url":
            value = text(key, 2048)
            if value is not None:
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    problems[key] = "must be an http:// or https:// URL"
        elif key == "oma_vm_id":
            value = text(key, 64)
            if value is not None:
                try:
                    value = str(uuidlib.UUID(value))
                except ValueError:
                    problems[key] = "must be a UUID (the appliance VM's id in CloudStack)"
        elif key == "domain":
            value = text(key, 255)
        elif key == "disk_offering":
            value = data[key]
            if value not in ("", None):
                value = text(key, 255)
            else:
                value = ""
        else:
            value = text(key, 1024)
        out[key] = value
    if problems:
        raise ConfigInvalid(problems)
    return out


def _fernet(region_secret: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"outpost cloudstack credentials").derive(region_secret)
    return Fernet(base64.urlsafe_b64encode(key))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "cluster": row["cluster_uuid"],
        **{k: (str(row[k]) if row[k] is not None else None) for k in PUBLIC_FIELDS},
        "api_key": "********",
        "secret_key": "********",
        "revision": row["revision"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


_SELECT = (
    "SELECT cluster_uuid::text AS cluster_uuid, name, api_url, domain, zone, disk_offering, oma_vm_id::text AS oma_vm_id,"
    " credentials, revision, created_at, updated_at FROM cloudstack_configs"
)


@attrs.frozen
class CloudStackConfigStore:
    db: Database
    region_secret: bytes = attrs.field(repr=False)

    def _seal(self, api_key: str, secret_key: str) -> bytes:
        return _fernet(self.region_secret).encrypt(json.dumps({"api_key": api_key, "secret_key": secret_key}).encode())

    def _open(self, token: bytes) -> dict[str, str]:
        return json.loads(_fernet(self.region_secret).decrypt(bytes(token)))

    async def create(self, cluster_uuid: str, config: dict[str, Any], actor: str) -> dict[str, Any]:
        async def work(tx: Any) -> dict[str, Any]:
            await tx.execute(
                "INSERT INTO cloudstack_configs (cluster_uuid, name, api_url, domain, zone, disk_offering, oma_vm_id, credentials)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (cluster_uuid, config["name"], config["api_url"], config.get("domain") or "/", config["zone"],
                 config.get("disk_offering") or "", config["oma_vm_id"], self._seal(config["api_key"], config["secret_key"])),
            )
            await events.record(tx, "cloudstack.config.created", actor=actor, cluster_uuid=cluster_uuid, subject=config["name"], outcome="ok")
            return _public(await tx.fetchone(_SELECT + " WHERE cluster_uuid = %s", (cluster_uuid,)))

        return await self.db.transaction(work)

    async def update(self, cluster_uuid: str, changes: dict[str, Any], actor: str) -> dict[str, Any] | None:
        async def work(tx: Any) -> dict[str, Any] | None:
            row = await tx.fetchone(_SELECT + " WHERE cluster_uuid = %s FOR UPDATE", (cluster_uuid,))
            if row is None:
                return None
            sets = {k: v for k, v in changes.items() if k in PUBLIC_FIELDS}
            if "api_key" in changes or "secret_key" in changes:
                current = self._open(row["credentials"])
                sets["credentials"] = self._seal(changes.get("api_key", current["api_key"]), changes.get("secret_key", current["secret_key"]))
            if sets:
                await tx.execute(
                    "UPDATE cloudstack_configs SET " + ", ".join(f"{k} = %s" for k in sets)
                    + ", revision = revision + 1, updated_at = now() WHERE cluster_uuid = %s",
                    (*sets.values(), cluster_uuid),
                )
            await events.record(tx, "cloudstack.config.updated", actor=actor, cluster_uuid=cluster_uuid, subject=row["name"],
                                outcome="ok", data={"fields": sorted(changes)})
            return _public(await tx.fetchone(_SELECT + " WHERE cluster_uuid = %s", (cluster_uuid,)))

        return await self.db.transaction(work)

    async def delete(self, cluster_uuid: str, actor: str) -> bool:
        async def work(tx: Any) -> bool:
            row = await tx.fetchone("DELETE FROM cloudstack_configs WHERE cluster_uuid = %s RETURNING name", (cluster_uuid,))
            if row is not None:
                await events.record(tx, "cloudstack.config.deleted", actor=actor, cluster_uuid=cluster_uuid, subject=row["name"], outcome="ok")
            return row is not None

        return await self.db.transaction(work)

    async def get(self, cluster_uuid: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(_SELECT + " WHERE cluster_uuid = %s", (cluster_uuid,))
        return None if row is None else _public(row)

    async def find_by_name(self, name: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(_SELECT + " WHERE name = %s", (name,))
        return None if row is None else _public(row)

    async def list(self) -> list[dict[str, Any]]:
        return [_public(r) for r in await self.db.fetch(_SELECT + " ORDER BY name")]

    async def for_cluster(self, cluster_uuid: str) -> dict[str, Any] | None:
        """The whole configuration with its secrets, for sending to the cluster only."""
        row = await self.db.fetchone(_SELECT + " WHERE cluster_uuid = %s", (cluster_uuid,))
        if row is None:
            return None
        return {**{k: (str(row[k]) if row[k] is not None else "") for k in PUBLIC_FIELDS}, **self._open(row["credentials"]), "revision": row["revision"]}

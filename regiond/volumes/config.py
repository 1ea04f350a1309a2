"""
CloudStack (OSSEA) configuration, one per cluster.

The API key and secret key are write-only: they are stored encrypted
(Fernet, with a key derived from the region's RPC secret by HKDF), sent to
the cluster over authenticated RPC, and never returned by the API or
logged.  Everything else is plain columns.

The region's secret file may hold several secrets while it is rotated
(`outpost.secret`): values are sealed with the key of the *prover* (the
first secret) and opened with the key of any secret in the file
(`MultiFernet`).  `CredentialResealer` watches the file and, when the
prover changes, re-encrypts every stored value with the new prover's key in
one transaction, so by the time the old secret is retired nothing needs it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid as uuidlib
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from outpost.secret import Secrets
from regiond import events
from regiond.db import Database
from rpc.protocol import SecretKeys, SecretSource

__all__ = [
    "CloudStackConfigStore", "ConfigInvalid", "CredentialsUnreadable", "CredentialResealer", "SealReport",
    "check_configuration", "PUBLIC_FIELDS", "SECRET_FIELDS", "RESEAL_CHECK_INTERVAL",
]

log = Logger()

#: Seconds between looks at the secret file for a new prover.
RESEAL_CHECK_INTERVAL = 5.0

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


class CredentialsUnreadable(RuntimeError):
    """Stored credentials that no secret in the region's secret file opens."""


@functools.lru_cache(maxsize=64)
def _fernet(region_secret: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"outpost cloudstack credentials").derive(region_secret)
    return Fernet(base64.urlsafe_b64encode(key))


def _fernets(keys: SecretKeys) -> tuple[Fernet, MultiFernet]:
    """(the prover's key alone, every accepted secret's key with the prover's first)."""
    return _fernet(keys.prover), MultiFernet([_fernet(keys.prover)] + [_fernet(s) for s in keys.accepted if s != keys.prover])


@attrs.frozen
class SealReport:
    """How the stored credentials stand against the region's secrets (cluster names, never values)."""

    #: Fingerprint of the prover, whose key seals new values.
    prover: str
    total: int
    #: Sealed with the prover's key: nothing else is needed to read them.
    current: int
    #: Re-encrypted now (`reseal`) or still sealed with an older accepted secret (`report`).
    older: tuple[str, ...] = ()
    #: Opened by no secret in the file.
    unreadable: tuple[str, ...] = ()

    @property
    def retire_safe(self) -> bool:
        """Whether dropping every secret but the prover leaves every value that is readable now readable."""
        return not self.older

    def as_dict(self) -> dict[str, Any]:
        return {"prover": self.prover, "total": self.total, "current": self.current,
                "older": list(self.older), "unreadable": list(self.unreadable), "retire_safe": self.retire_safe}


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
    #: The region's secret file (`outpost.secret.SecretFile`, read at each use), or one fixed secret.
    region_secret: bytes | SecretSource = attrs.field(repr=False)

    def keys(self) -> SecretKeys:
        """The region's secrets now."""
        source = self.region_secret
        return Secrets.of(source) if isinstance(source, bytes) else source.current()

    def _seal(self, api_key: str, secret_key: str) -> bytes:
        prover, _ = _fernets(self.keys())
        return prover.encrypt(json.dumps({"api_key": api_key, "secret_key": secret_key}).encode())

    def _open(self, token: bytes, cluster: str = "") -> dict[str, str]:
        keys = self.keys()
        try:
            # What _seal wrote: {"api_key": ..., "secret_key": ...}.
            return cast(dict[str, str], json.loads(_fernets(keys)[1].decrypt(bytes(token))))
        except InvalidToken:
            raise CredentialsUnreadable(
                f"the stored CloudStack credentials{' of ' + cluster if cluster else ''} open with none of the region's "
                f"RPC secrets ({', '.join(keys.fingerprints)}): the secret that sealed them was retired before they "
                "were re-encrypted; enter them again (outpost ossea config update --api-key-file ... --secret-key-file ...)"
            ) from None

    async def report(self) -> SealReport:
        """How the stored credentials stand against the secrets now in the file (reads only)."""
        keys = self.keys()
        prover, every = _fernets(keys)
        rows = await self.db.fetch("SELECT name, credentials FROM cloudstack_configs ORDER BY name")
        current = 0
        older: list[str] = []
        unreadable: list[str] = []
        for row in rows:
            state = _state(prover, every, bytes(row["credentials"]))
            if state == "current":
                current += 1
            else:
                (older if state == "older" else unreadable).append(row["name"])
        return SealReport(keys.fingerprints[0], len(rows), current, tuple(older), tuple(unreadable))

    async def reseal(self, actor: str = "region") -> SealReport:
        """
        Re-encrypt, in one transaction, every stored value not sealed with
        the prover's key (`MultiFernet.rotate`; values already sealed with
        it are left alone, so this is cheap to repeat).
        """
        keys = self.keys()
        prover, every = _fernets(keys)

        async def work(tx: Any) -> SealReport:
            rows = await tx.fetch(
                "SELECT cluster_uuid::text AS cluster_uuid, name, credentials FROM cloudstack_configs ORDER BY name FOR UPDATE"
            )
            current, resealed, unreadable = 0, [], []
            for row in rows:
                token = bytes(row["credentials"])
                state = _state(prover, every, token)
                if state == "current":
                    current += 1
                elif state == "older":
                    await tx.execute(
                        "UPDATE cloudstack_configs SET credentials = %s WHERE cluster_uuid = %s",
                        (every.rotate(token), row["cluster_uuid"]),
                    )
                    current += 1
                    resealed.append(row["name"])
                else:
                    unreadable.append(row["name"])
            if resealed:
                await events.record(tx, "cloudstack.credentials.resealed", actor=actor, subject=keys.fingerprints[0],
                                    outcome="ok", data={"configurations": resealed, "prover": keys.fingerprints[0]})
            return SealReport(keys.fingerprints[0], len(rows), current, tuple(resealed), tuple(unreadable))

        return await self.db.transaction(work)

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
                current = self._open(row["credentials"], row["name"])
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
        return {**{k: (str(row[k]) if row[k] is not None else "") for k in PUBLIC_FIELDS}, **self._open(row["credentials"], row["name"]),
                "revision": row["revision"]}


def _state(prover: Fernet, every: MultiFernet, token: bytes) -> str:
    """"current" (the prover's key opens it), "older" (another accepted secret's does) or "unreadable"."""
    try:
        prover.decrypt(token)
        return "current"
    except InvalidToken:
        pass
    try:
        every.decrypt(token)
        return "older"
    except InvalidToken:
        return "unreadable"


@attrs.define(eq=False)
class CredentialResealer:
    """
    Re-encrypts the stored credentials whenever the region's prover changes
    (and once at start, for a promotion made while the region was down).

    It looks at the secret file every `interval` seconds (a stat; the file
    is parsed only when it changed) and logs what it did, so an operator
    knows when `outpost secret rotate retire` is safe: within `interval`
    seconds of the promotion on every region host, or at once by
    ``outpost secret status --region``, which checks the database.
    """

    clock: IReactorTime
    store: CloudStackConfigStore
    interval: float = RESEAL_CHECK_INTERVAL
    #: The prover everything was last resealed with (None: not yet).
    sealed_with: str | None = attrs.field(default=None, init=False)
    _loop: LoopingCall | None = attrs.field(default=None, init=False)
    _done: Deferred[Any] | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.check()))
        self._loop.clock = self.clock
        self._done = self._loop.start(self.interval, now=True)
        self._done.addErrback(lambda f: log.failure("Credential re-encryption stopped", f))

    async def stop(self) -> None:
        """Stop looking; waits for a re-encryption in progress."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._done is not None:
            await self._done

    async def check(self) -> SealReport | None:
        """Reseal if the prover changed since the last time; the report, or None if there was nothing to do."""
        try:
            prover = self.store.keys().fingerprints[0]
            if prover == self.sealed_with:
                return None
            report = await self.store.reseal()
        except Exception:
            log.failure("Re-encrypting the stored CloudStack credentials failed; will try again")
            return None
        self.sealed_with = report.prover
        if report.older:
            log.info(
                "Re-encrypted the stored CloudStack credentials of {configurations} with the RPC secret {prover}",
                configurations=", ".join(report.older), prover=report.prover,
            )
        if report.unreadable:
            log.error(
                "The stored CloudStack credentials of {configurations} open with no RPC secret in this region's "
                "secret file (proving with {prover}); enter them again, or restore the secret they were sealed with",
                configurations=", ".join(report.unreadable), prover=report.prover,
            )
        return report

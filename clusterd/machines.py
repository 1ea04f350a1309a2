"""
The cluster's machine work: the region's MAAS commands, done through this
site's MAAS client, with MAAS's errors turned into the RPC errors the
region understands.

`summarize` is the one place a MAAS machine becomes the shape the region
stores; everything sent to the region goes through it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Awaitable, Callable, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from clusterd.maas.errors import (
    MAASAuthError,
    MAASConflict,
    MAASError,
    MAASNotFound,
    MAASUnavailable,
    MAASValidationError,
    PowerActionAlreadyInProgress,
)
from clusterd.maas.interfaces import IMAASClient
from clusterd.maas.power import ACTIONS, PowerOrchestrator
from rpc import errors as rpc_errors
from rpc.region import ReportPowerOutcome

__all__ = ["MachineWork", "summarize", "rpc_error_for"]

log = Logger()

_T = TypeVar("_T")

#: Power queries in flight at once against one MAAS (MAAS itself does 5 at a time per batch).
QUERY_CONCURRENCY = 10
#: How long a power outcome keeps being offered to the region before it is only logged.
REPORT_PATIENCE = 300.0


def _name(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name", ""))
    return "" if value is None else str(value)


def summarize(machine: dict[str, Any]) -> dict[str, Any]:
    """A MAAS machine (its API JSON) as the region records it."""
    macs = [i.get("mac_address") for i in machine.get("interface_set") or [] if isinstance(i, dict) and i.get("mac_address")]
    if not macs and machine.get("boot_interface"):
        macs = [machine["boot_interface"].get("mac_address")] if machine["boot_interface"].get("mac_address") else []
    return {
        "system_id": str(machine["system_id"]),
        "hostname": str(machine.get("hostname") or ""),
        "status": str(machine.get("status_name") or ""),
        "status_code": machine.get("status") if isinstance(machine.get("status"), int) else None,
        "power_state": str(machine.get("power_state") or "unknown"),
        "power_type": str(machine.get("power_type") or ""),
        "architecture": str(machine.get("architecture") or ""),
        "cpu_count": int(machine.get("cpu_count") or 0),
        "memory_mb": int(machine.get("memory") or 0),
        "storage_mb": int(float(machine.get("storage") or 0)),
        "zone": _name(machine.get("zone")),
        "pool": _name(machine.get("pool")),
        "tags": [str(t) for t in machine.get("tag_names") or []],
        "ip_addresses": [str(a) for a in machine.get("ip_addresses") or []],
        "macs": [str(m) for m in macs],
        "owner": str(machine.get("owner") or ""),
        "osystem": str(machine.get("osystem") or ""),
        "distro_series": str(machine.get("distro_series") or ""),
    }


def rpc_error_for(e: Exception) -> Exception:
    """The error to answer the region with for a MAAS failure."""
    if isinstance(e, MAASNotFound):
        return rpc_errors.NoSuchMachine(str(e))
    if isinstance(e, PowerActionAlreadyInProgress):
        return rpc_errors.PowerActionInProgress(str(e))
    if isinstance(e, MAASConflict):
        return rpc_errors.MachineActionConflict(str(e))
    if isinstance(e, MAASValidationError):
        return rpc_errors.InvalidArgument(str(e))
    if isinstance(e, MAASAuthError):
        return rpc_errors.IntegrationAuthFailed(str(e))
    if isinstance(e, (MAASUnavailable, MAASError)):
        return rpc_errors.IntegrationUnavailable(str(e))
    return e


RegionClientSource = Callable[[], Any]


@attrs.define(eq=False)
class MachineWork:
    """
    `client` is this site's MAAS client (None: no MAAS here, and every
    command says so); `region` gives a client for some region connection.
    """

    clock: IReactorTime = attrs.field(repr=False)
    client: IMAASClient | None = attrs.field(repr=False)
    region: RegionClientSource = attrs.field(repr=False)
    power: PowerOrchestrator | None = attrs.field(default=None, repr=False)
    _semaphore: DeferredSemaphore = attrs.field(init=False, factory=lambda: DeferredSemaphore(QUERY_CONCURRENCY))

    def __attrs_post_init__(self) -> None:
        if self.client is not None and self.power is None:
            self.power = PowerOrchestrator(self.clock, self.client)

    def _maas(self) -> IMAASClient:
        if self.client is None:
            raise rpc_errors.IntegrationNotConfigured("this cluster has no MAAS configured (maas: in its config)")
        return self.client

    async def _guard(self, work: Awaitable[_T]) -> _T:
        try:
            return await work
        except MAASError as e:
            raise rpc_error_for(e) from None

    async def username(self) -> str:
        """The MAAS user this cluster acts as (who owns what it deploys)."""
        answer = await self._guard(self._maas().whoami())
        return str(answer.get("username") or "")

    async def list_machines(self, filters: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(filters, dict) or not set(filters) <= {"hostname", "status", "zone", "pool", "tags"}:
            raise rpc_errors.InvalidArgument("filters may have hostname, status, zone, pool and tags")
        for key, value in filters.items():
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) and v for v in values):
                raise rpc_errors.InvalidArgument(f"filters.{key} must be a non-empty string or a list of them")
        machines = await self._guard(self._maas().list_machines(**filters))
        return {"machines": [summarize(m) for m in machines]}

    async def get_machines(self, system_ids: list[str]) -> dict[str, Any]:
        client = self._maas()
        found, missing = [], []

        async def one(system_id: str) -> None:
            try:
                found.append(summarize(await client.get_machine(system_id)))
            except MAASNotFound:
                missing.append(system_id)

        await self._guard(_each(self._semaphore, [one(s) for s in _ids(system_ids)]))
        return {"machines": found, "missing": missing}

    async def query_power_states(self, system_ids: list[str]) -> dict[str, Any]:
        client = self._maas()
        states: dict[str, str] = {}
        errors: dict[str, str] = {}

        async def one(system_id: str) -> None:
            try:
                states[system_id] = await client.query_power_state(system_id)
            except MAASError as e:
                states[system_id] = "error"
                errors[system_id] = str(e)

        await _each(self._semaphore, [one(s) for s in _ids(system_ids)])
        return {"states": states, "errors": errors}

    async def commission(self, system_id: str, options: dict[str, Any]) -> dict[str, Any]:
        allowed = {"enable_ssh", "skip_networking", "skip_storage", "testing_scripts"}
        return {"machine": summarize(await self._guard(self._maas().commission(system_id, **_options(options, allowed))))}

    async def deploy(self, system_id: str, options: dict[str, Any]) -> dict[str, Any]:
        opts = _options(options, {"distro_series", "hwe_kernel", "user_data", "hostname"})
        if opts.get("user_data") is not None:
            try:
                opts["user_data"] = base64.b64decode(opts["user_data"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise rpc_errors.InvalidArgument("user_data must be base64") from None
        return {"machine": summarize(await self._guard(self._maas().deploy(system_id, **opts)))}

    async def release(self, system_id: str, options: dict[str, Any]) -> dict[str, Any]:
        opts = _options(options, {"erase", "secure_erase", "quick_erase"})
        return {"machine": summarize(await self._guard(self._maas().release(system_id, **opts)))}

    def start_power(self, system_id: str, action: str, stop_mode: str, request_id: str) -> dict[str, Any]:
        """Start (or join) a power action; the outcome goes to the region as `ReportPowerOutcome`."""
        self._maas()
        if action not in ACTIONS or stop_mode not in ("hard", "soft"):
            raise rpc_errors.InvalidArgument(f"action must be one of {', '.join(ACTIONS)}; stop_mode hard or soft")
        assert self.power is not None
        joined = self.power.in_progress().get(system_id) == action
        running = Deferred.fromCoroutine(self.power.power(system_id, action, stop_mode=stop_mode))
        if running.called:  # refused at once (a different action is running)
            failures: list[Failure] = []
            running.addErrback(failures.append)
            if failures:
                raise rpc_error_for(cast(Exception, failures[0].value))  # a coroutine's failure wraps an exception
        running.addBoth(self._finished, system_id, action, request_id)
        return {"joined": joined}

    def _finished(self, result: Any, system_id: str, action: str, request_id: str) -> None:
        if isinstance(result, Failure):
            outcome, state, error = "failed", self._last_state(result), result.getErrorMessage()
        else:
            outcome, state, error = "ok", str(result), ""
        log.info("Power {action} of {system_id}: {outcome} {error}", action=action, system_id=system_id, outcome=outcome, error=error)
        Deferred.fromCoroutine(self._report(system_id, action, request_id, outcome, state, error)).addErrback(
            lambda f: log.failure("Reporting power outcome of {system_id} failed", f, system_id=system_id)
        )

    @staticmethod
    def _last_state(failure: Failure) -> str:
        return str(getattr(failure.value, "state", "") or "")

    async def _report(self, system_id: str, action: str, request_id: str, outcome: str, state: str, error: str) -> None:
        """Offer the outcome to the region until one region process takes it (or patience runs out)."""
        deadline = self.clock.seconds() + REPORT_PATIENCE
        delay = 1.0
        while True:
            try:
                client = self.region()
                await client(ReportPowerOutcome, system_id=system_id, action=action, request_id=request_id,
                             outcome=outcome, state=state, error=error, timeout=30)
                return
            except rpc_errors.RPCError as e:
                if self.clock.seconds() + delay > deadline:
                    log.warn("Gave up reporting power outcome of {system_id} ({request_id}): {error}",
                             system_id=system_id, request_id=request_id, error=str(e))
                    return
            await deferLater(self.clock, delay, lambda: None)
            delay = min(delay * 2, 30.0)

    async def list_networks(self) -> dict[str, Any]:
        client = self._maas()

        async def gather() -> dict[str, Any]:
            subnets = await client.subnets()
            vlans = []
            for fabric in await client.fabrics():
                for vlan in await client.vlans(fabric["id"]):
                    vlans.append({**vlan, "fabric": fabric.get("name", fabric["id"])})
            return {"subnets": subnets, "vlans": vlans, "spaces": await client.spaces()}

        return await self._guard(gather())

    async def list_zones(self) -> dict[str, Any]:
        return {"zones": await self._guard(self._maas().zones())}

    async def list_pools(self) -> dict[str, Any]:
        return {"pools": await self._guard(self._maas().resource_pools())}

    async def test_connection(self) -> dict[str, Any]:
        client = self._maas()
        checks = []

        async def version() -> str:
            return str((await client.version()).get("version", ""))

        async def credentials() -> str:
            return str((await client.whoami()).get("username", ""))

        async def zones() -> str:
            return f"{len(await client.zones())} zones"

        for name, check in (("version", version), ("credentials", credentials), ("zones", zones)):
            try:
                checks.append({"name": name, "ok": True, "detail": await check()})
            except MAASError as e:
                checks.append({"name": name, "ok": False, "detail": str(e)})
        return {"ok": all(c["ok"] for c in checks), "checks": checks}


def _ids(system_ids: Any) -> list[str]:
    if not isinstance(system_ids, list) or not all(isinstance(s, str) and 0 < len(s) <= 64 for s in system_ids):
        raise rpc_errors.InvalidArgument("system_ids must be a list of system ids")
    return list(dict.fromkeys(system_ids))


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _word(value: Any) -> bool:
    return isinstance(value, str)


def _scripts(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


#: What each MAAS action option may be (None, for any of them, is "not given").
_OPTION_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "enable_ssh": (_flag, "true or false"),
    "skip_networking": (_flag, "true or false"),
    "skip_storage": (_flag, "true or false"),
    "testing_scripts": (_scripts, "a script name or a list of them"),
    "distro_series": (_word, "a string"),
    "hwe_kernel": (_word, "a string"),
    "user_data": (_word, "a string"),
    "hostname": (_word, "a string"),
    "erase": (_flag, "true or false"),
    "secure_erase": (_flag, "true or false"),
    "quick_erase": (_flag, "true or false"),
}


def _options(options: Any, allowed: set[str]) -> dict[str, Any]:
    """The options that are given, each of the type MAAS takes; InvalidArgument naming the first that is not."""
    if not isinstance(options, dict) or not set(options) <= allowed:
        raise rpc_errors.InvalidArgument(f"options may have {', '.join(sorted(allowed))}")
    given = {k: v for k, v in options.items() if v is not None}
    for key, value in given.items():
        check, what = _OPTION_TYPES[key]
        if not check(value):
            raise rpc_errors.InvalidArgument(f"options.{key} must be {what}, not {type(value).__name__}")
    return given


async def _each(semaphore: DeferredSemaphore, coroutines: list[Any]) -> None:
    """Run the coroutines, at most the semaphore's limit at once; the first failure propagates after all finish."""
    await gatherResults(
        [semaphore.run(Deferred.fromCoroutine, c) for c in coroutines], consumeErrors=True
    ).addErrback(lambda f: cast(FirstError, f.value).subFailure)

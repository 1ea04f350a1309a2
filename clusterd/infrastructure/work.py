"""
The cluster's infrastructure work: what the region's Create, Delete and
Find Infrastructure calls do here.

Each call's arguments are checked (shape, types, sizes: `InvalidArgument`
with the key at fault), the driver is picked by
``deployment_location["type"]`` and called.  An accepted create or delete is
written to the journal *before* the region is answered, then monitored
until it ends; its end is reported to the region until acknowledged (see
`clusterd.infrastructure.monitor`).  As a service, it loads the journal on
start and resumes what a previous run left: tasks still to poll,
completions still to deliver.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from clusterd.infrastructure.driver import Accepted, Found
from clusterd.infrastructure.journal import Journal, JournalError, Watched, Writer, write_in_thread
from clusterd.infrastructure.monitor import TaskMonitor
from clusterd.infrastructure.registry import LOCATION_TYPE, DriverRegistry
from rpc import errors as rpc_errors

__all__ = ["InfrastructureWork", "MAX_TEMPLATE", "MAX_PROPERTIES", "MAX_ID"]

log = Logger()

#: Characters in a template (TOSCA or Heat text).
MAX_TEMPLATE = 4 * 1024 * 1024
#: Bytes of JSON in a properties mapping or a deployment location.
MAX_PROPERTIES = 1024 * 1024
#: Characters in an id, an instance name, a template type or a location name.
MAX_ID = 255
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")

_CREATE_KEYS = ("template", "template_type", "system_properties", "properties", "deployment_location")
_FIND_KEYS = ("template", "template_type", "instance_name", "deployment_location")


def _invalid(message: str) -> rpc_errors.InvalidArgument:
    return rpc_errors.InvalidArgument(message)


def _request(value: Any, keys: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"request must be a mapping, not {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise _invalid(f"request has unknown keys {', '.join(unknown)} (known: {', '.join(keys)})")
    missing = [k for k in required if value.get(k) is None]
    if missing:
        raise _invalid(f"request needs {', '.join(missing)}")
    return value


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key} must be a non-empty string, not {type(value).__name__ if not isinstance(value, str) else 'empty'}")
    if len(value) > MAX_ID:
        raise _invalid(f"{key} is longer than {MAX_ID} characters")
    if not _PRINTABLE.fullmatch(value):
        raise _invalid(f"{key} must not hold control characters")
    return value


def _template(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEMPLATE:
        raise _invalid(f"{key} is longer than {MAX_TEMPLATE} characters")
    return value


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{key} must be a mapping, not {type(value).__name__}")
    try:
        size = len(json.dumps(value, separators=(",", ":")))
    except (TypeError, ValueError):
        raise _invalid(f"{key} must be JSON") from None
    if size > MAX_PROPERTIES:
        raise _invalid(f"{key} is larger than {MAX_PROPERTIES} bytes of JSON")
    return value


def _location(value: Any, key: str = "deployment_location") -> dict[str, Any]:
    if value is None:
        raise _invalid(f"{key} is required")
    location = _mapping(value, key)
    _name(location.get("name"), f"{key}.name")
    kind = location.get("type")
    if not isinstance(kind, str) or not LOCATION_TYPE.fullmatch(kind):
        raise _invalid(f"{key}.type must be a location type (1-64 letters, digits, '.', '_' or '-'), not {kind!r}")
    if location.get("properties") is not None and not isinstance(location["properties"], dict):
        raise _invalid(f"{key}.properties must be a mapping, not {type(location['properties']).__name__}")
    return location


def _message(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.define(eq=False)
class InfrastructureWork(Service):
    reactor: Any = attrs.field(repr=False)
    registry: DriverRegistry
    #: Where the journal lives (``<cluster state_dir>/infrastructure``).
    state_dir: Path
    #: A client for some live region connection (`RegionConnector.getClient`).
    region: Callable[[], Any] = attrs.field(repr=False)
    #: First poll (and report retry) delay, doubled up to `max_interval`.
    interval: float = 1.0
    max_interval: float = 30.0
    #: How the journal writes (default: in the reactor's thread pool; tests on a `Clock` write at once).
    write_journal: Writer | None = attrs.field(default=None, repr=False)
    _journal: Journal | None = attrs.field(init=False, default=None, repr=False)
    _monitor: TaskMonitor | None = attrs.field(init=False, default=None, repr=False)

    # -- lifecycle -----------------------------------------------------------

    @property
    def journal(self) -> Journal:
        """The journal, opened on first use (at start, or at the first call if one comes before)."""
        if self._journal is None:
            self._journal = Journal.open(self.state_dir, self.write_journal or write_in_thread(self.reactor))
        return self._journal

    @property
    def monitor(self) -> TaskMonitor:
        if self._monitor is None:
            self._monitor = TaskMonitor(
                self.reactor, self.journal, self.registry.driver, self.region, interval=self.interval,
                max_interval=self.max_interval,
            )
        return self._monitor

    def start(self) -> None:
        """Load the journal and resume: poll the tasks it holds, send the completions it holds."""
        journal = self.journal
        if journal.monitored_count or journal.undelivered_count:
            log.info("Resuming infrastructure work: {watched} task(s) to monitor, {undelivered} report(s) to deliver",
                     watched=journal.monitored_count, undelivered=journal.undelivered_count)
        self.monitor.start()

    async def stop(self) -> None:
        """Stop monitoring (the journal keeps what is unfinished), let its last write finish, and close the drivers."""
        if self._monitor is not None:
            self._monitor.stop()
        if self._journal is not None:
            await self._journal.idle()
        await self.registry.close()

    def startService(self) -> None:  # noqa: N802
        Service.startService(self)
        self.start()

    def stopService(self) -> Deferred[None]:  # noqa: N802
        Service.stopService(self)
        return Deferred.fromCoroutine(self.stop())

    # -- for metrics ---------------------------------------------------------

    @property
    def monitored_count(self) -> int:
        return 0 if self._journal is None else self._journal.monitored_count

    @property
    def undelivered_count(self) -> int:
        return 0 if self._journal is None else self._journal.undelivered_count

    # -- the region's calls --------------------------------------------------

    async def create(self, request: Any) -> dict[str, str]:
        """Start creating (`rpc.cluster.CreateInfrastructure`): ``{infrastructure_id, request_id}``."""
        request = _request(request, _CREATE_KEYS, ("template", "template_type", "deployment_location"))
        template = _template(request["template"], "request.template")
        template_type = _name(request["template_type"], "request.template_type")
        system_properties = _mapping(request.get("system_properties"), "request.system_properties")
        properties = _mapping(request.get("properties"), "request.properties")
        location = _location(request["deployment_location"], "request.deployment_location")
        driver = self.registry.driver(location["type"])
        accepted = await self._call(
            location, "create infrastructure",
            lambda: driver.create_infrastructure(template, template_type, system_properties, properties, location),
        )
        return await self._track(location, "create", accepted)

    async def delete(self, infrastructure_id: Any, deployment_location: Any) -> dict[str, str]:
        """Start deleting (`rpc.cluster.DeleteInfrastructure`): ``{infrastructure_id, request_id}``."""
        infrastructure_id = _name(infrastructure_id, "infrastructure_id")
        location = _location(deployment_location)
        driver = self.registry.driver(location["type"])
        accepted = await self._call(
            location, "delete infrastructure", lambda: driver.delete_infrastructure(infrastructure_id, location)
        )
        return await self._track(location, "delete", accepted)

    async def find(self, request: Any) -> dict[str, Any]:
        """Find by instance name (`rpc.cluster.FindInfrastructure`): ``{result: {infrastructureId, outputs} | None}``."""
        request = _request(request, _FIND_KEYS, _FIND_KEYS)
        template = _template(request["template"], "request.template")
        template_type = _name(request["template_type"], "request.template_type")
        instance_name = _name(request["instance_name"], "request.instance_name")
        location = _location(request["deployment_location"], "request.deployment_location")
        driver = self.registry.driver(location["type"])
        found = await self._call(
            location, "find infrastructure",
            lambda: driver.find_infrastructure(template, template_type, instance_name, location),
        )
        if found is None:
            return {"result": None}
        if not isinstance(found, Found) or not isinstance(found.infrastructure_id, str) or not found.infrastructure_id:
            raise rpc_errors.InfrastructureError(f"the {location['type']} driver answered find with {found!r}")
        outputs = dict(found.outputs)
        try:
            json.dumps(outputs, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise rpc_errors.InfrastructureError(f"the {location['type']} driver found outputs that are not JSON: {e}") from None
        return {"result": {"infrastructureId": found.infrastructure_id, "outputs": outputs}}

    # -- helpers -------------------------------------------------------------

    async def _call(self, location: Mapping[str, Any], what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a driver call; its errors other than Ignition's become `InfrastructureError` with their message."""
        try:
            return await call()
        except rpc_errors.InfrastructureError:
            raise
        except rpc_errors.RPCError as e:
            log.warn("The {type} driver could not {what}: {error}", type=location["type"], what=what, error=_message(e))
            raise rpc_errors.InfrastructureError(f"the {location['type']} driver could not {what}: {e}") from None
        except Exception as e:
            log.failure("The {type} driver failed to {what}", type=location["type"], what=what)
            raise rpc_errors.InfrastructureError(f"the {location['type']} driver failed to {what}: {_message(e)}") from None

    async def _track(self, location: dict[str, Any], operation: str, accepted: Any) -> dict[str, str]:
        """Journal the accepted request (on disk before the region hears of it), then monitor it; the answer for the region."""
        if not (
            isinstance(accepted, Accepted)
            and all(isinstance(v, str) and v for v in (accepted.infrastructure_id, accepted.request_id))
        ):
            raise rpc_errors.InfrastructureError(f"the {location['type']} driver answered {operation} with {accepted!r}")
        task = Watched(accepted.request_id, accepted.infrastructure_id, operation, location)
        log.info("Infrastructure {operation} accepted: request {request} of {infrastructure} at {location}",
                 operation=operation, request=task.request_id, infrastructure=task.infrastructure_id,
                 location=location.get("name"))
        try:
            await self.journal.watch(task)
        except JournalError as e:
            # Still watched in memory (and written with the next change), but nothing
            # durable backs it: say so rather than promise a report a restart would lose.
            self.monitor.watch(task)
            raise rpc_errors.InfrastructureError(
                f"{operation} was accepted as request {task.request_id} of {task.infrastructure_id}, "
                f"but the cluster could not record it: {e}"
            ) from None
        self.monitor.watch(task)
        return {"infrastructure_id": task.infrastructure_id, "request_id": task.request_id}


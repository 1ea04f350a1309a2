"""
The ``maas`` infrastructure driver: bare-metal machines from this site's
MAAS, picked by count and constraints, deployed, and optionally given
CloudStack volumes, behind Ignition's infrastructure contract.

Why it is built this way:

- Choosing and claiming machines happen with no await in between, and the
  claim set is every machine that any infrastructure still holds, so two
  concurrent creates never pick the same machine.
- MAAS has nowhere for us to note who holds a machine (our client has no
  tag or owner-data calls), so ownership lives in a small JSON file in the
  driver's state directory, replaced atomically on every change.  After a
  restart the driver still knows its infrastructures, their machines and
  their requests, and picks the unfinished ones up again.
- The work is a state machine stepped by one watcher per request (every
  ``poll_interval``) and by each `get_infrastructure_task` call.  Every step
  reads MAAS first and is safe to repeat, so a step lost to a crash is
  simply done again.  A deploy MAAS took before a crash let us record it
  shows as a machine no longer Ready that the file says we never deployed:
  it is ours (to wait for, or to release) only if MAAS names our user its
  owner.
- Ignition's rule: an accepted request whose work fails is a FAILED task,
  not an error.  So `create_infrastructure` raises only when it cannot
  accept the request (bad template, no MAAS here, MAAS unreachable or
  answering 5xx); too few matching machines is a task that ends FAILED with
  INSUFFICIENT_CAPACITY.  A create whose work fails first undoes itself
  (releases what it took and removes its volumes), then reports FAILED.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from clusterd.cloudstack.errors import (
    CloudStackAuthError,
    CloudStackError,
    CloudStackUnavailable,
)
from clusterd.infrastructure.driver import (
    COMPLETE,
    FAILED,
    IN_PROGRESS,
    INFRASTRUCTURE_ERROR,
    INSUFFICIENT_CAPACITY,
    INTERNAL_ERROR,
    RESOURCE_ALREADY_EXISTS,
    Accepted,
    DriverContext,
    FailureDetails,
    Found,
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InfrastructureTask,
    InvalidInfrastructureRequest,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from clusterd.infrastructure.maas_template import Template, allocate, parse_template
from clusterd.maas.errors import MAASError, MAASUnavailable
from clusterd.machines import MachineWork, rpc_error_for
from clusterd.volumes.lifecycle import INFRASTRUCTURE_JOB_PREFIX, TAG_DISK
from clusterd.volumes.work import VolumeWork
from outpost.config import ConfigError, Field, boolean, load_section, positive_float
from outpost.files import write_private_atomically
from rpc import errors as rpc_errors

__all__ = ["STATE_FILE", "MAASInfrastructureDriver", "Settings", "make_driver"]

log = Logger()
T = TypeVar("T")

#: The driver's state file, in its state directory.
STATE_FILE = "infrastructures.json"
STATE_VERSION = 1

# MAAS status codes the driver acts on (DESIGN.md's table).
READY, DEPLOYED, DEPLOYING, ALLOCATED = 4, 6, 9, 10
RELEASING, FAILED_RELEASING, DISK_ERASING, FAILED_DISK_ERASING = 12, 13, 14, 15

# Where an infrastructure stands.  "Live" ones hold their instance name.
CREATING, CREATED, BROKEN, DELETING, DELETED = "creating", "created", "failed", "deleting", "deleted"
LIVE = (CREATING, CREATED, DELETING)
# Phases of a request: a create deploys, then prepares volumes; a failed one
# undoes; a delete tears down.
DEPLOY, VOLUMES, UNDO, TEARDOWN = "deploying", "volumes", "undoing", "releasing"


@attrs.frozen
class Settings:
    """The driver's configuration (the cluster's ``infrastructure.drivers.maas``)."""

    #: Seconds between two steps of an unfinished request.
    poll_interval: float = 5.0
    #: A create whose machines are not all Deployed by then fails (and is undone).
    deploy_timeout: float = 3600.0
    #: A delete (or undo) whose machines are not all Ready again by then fails.
    release_timeout: float = 1800.0
    #: Erase disks when releasing machines.
    erase: bool = False
    #: Seconds a deleted (or failed and fully undone) infrastructure is remembered.
    keep_finished: float = 86400.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Settings:
        problems: list[str] = []
        fields = [Field(a.name, boolean if a.type in (bool, "bool") else positive_float, a.default)
                  for a in attrs.fields(cls)]
        data = dict(config) if isinstance(config, Mapping) else config
        values = load_section(data, "infrastructure.drivers.maas", fields, problems)
        if problems:
            raise ConfigError(problems)
        return cls(**values)


# -- records (what the state file holds) ------------------------------------


@attrs.define
class Member:
    """A machine an infrastructure holds (until `released`)."""

    system_id: str
    role: str
    hostname: str = ""
    addresses: list[str] = attrs.field(factory=list)
    #: MAAS took our deploy (or showed the machine Deploying/Deployed).
    deployed: bool = False
    #: Seen Ready (or gone) after a release: no longer ours.
    released: bool = False

    def output(self) -> dict[str, Any]:
        return {"system_id": self.system_id, "hostname": self.hostname, "addresses": list(self.addresses), "role": self.role}


@attrs.define
class Request:
    request_id: str
    operation: str  # "create" or "delete"
    started: float
    phase: str
    status: str = IN_PROGRESS
    failure_code: str | None = None
    description: str = ""
    teardown_started: float | None = None
    ended: float | None = None
    #: A completed create's outputs, as they were when it completed.
    outputs: dict[str, Any] | None = None


@attrs.define
class Infrastructure:
    infrastructure_id: str
    instance_name: str
    template: str
    template_type: str
    state: str
    created: float
    members: list[Member] = attrs.field(factory=list)
    requests: dict[str, Request] = attrs.field(factory=dict)
    #: The VolumeWork job id of its volumes.
    volume_job: str = ""
    #: A prepare was started: volumes may exist and must be removed on delete/undo.
    volumes_started: bool = False
    volume_outputs: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def held(self) -> list[Member]:
        return [m for m in self.members if not m.released]

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Infrastructure:
        data = dict(data)
        data["members"] = [Member(**m) for m in data.get("members", [])]
        data["requests"] = {k: Request(**r) for k, r in data.get("requests", {}).items()}
        return cls(**data)


def _instance_name(system_properties: Mapping[str, Any], template: Template) -> str:
    """systemProperties.resourceName (a plain value or Ignition's ``{"type", "value"}``), else the template's name."""
    value: Any = (system_properties or {}).get("resourceName") if isinstance(system_properties, Mapping) else None
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, str) and value.strip():
        return value
    return template.name or ""


# -- the driver --------------------------------------------------------------


@attrs.define(eq=False)
class MAASInfrastructureDriver:
    """
    `machines` is the cluster's `clusterd.machines.MachineWork` (None, or one
    without a client: no MAAS here), `volumes` its
    `clusterd.volumes.work.VolumeWork` (None: no volumes).
    """

    reactor: Any = attrs.field(repr=False)
    machines: MachineWork | None = attrs.field(repr=False)
    volumes: VolumeWork | None = attrs.field(repr=False)
    state_path: Path
    settings: Settings = attrs.field(factory=Settings)
    _infrastructures: dict[str, Infrastructure] = attrs.field(init=False, factory=dict, repr=False)
    _locks: dict[str, DeferredLock] = attrs.field(init=False, factory=dict, repr=False)
    _watchers: dict[str, Deferred[None]] = attrs.field(init=False, factory=dict, repr=False)
    #: (infrastructure id, system_id) whose release this process sent.
    _release_sent: set[tuple[str, str]] = attrs.field(init=False, factory=set, repr=False)
    #: (volume job, operation) this process started, and how each ended.
    _volume_runs: dict[tuple[str, str], dict[str, Any] | None] = attrs.field(init=False, factory=dict, repr=False)
    _specs: dict[str, Template] = attrs.field(init=False, factory=dict, repr=False)
    _written: str = attrs.field(init=False, default="", repr=False)
    _resume: Any = attrs.field(init=False, default=None, repr=False)
    _closed: bool = attrs.field(init=False, default=False, repr=False)
    _user: str | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._load()
        if any(r.status == IN_PROGRESS for i in self._infrastructures.values() for r in i.requests.values()):
            # Requests a previous run left unfinished go on once the reactor turns.
            self._resume = self.reactor.callLater(0, self._watch_all)

    # -- the driver contract -------------------------------------------------

    async def create_infrastructure(
        self,
        template: str,
        template_type: str,
        system_properties: Mapping[str, Any],
        properties: Mapping[str, Any],
        deployment_location: Mapping[str, Any],
    ) -> Accepted:
        spec = parse_template(template, template_type)
        work = self._machine_work()
        if spec.volumes:
            self._volume_work()
        name = _instance_name(system_properties, spec)
        ready = (await self._maas(work.list_machines({"status": "ready"})))["machines"]
        # No await from here to the save: choosing and claiming are one step.
        now = self.reactor.seconds()
        infrastructure_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
        request = Request(request_id, "create", now, DEPLOY)
        infra = Infrastructure(infrastructure_id, name, template, template_type, CREATING, now,
                               requests={request_id: request}, volume_job=INFRASTRUCTURE_JOB_PREFIX + infrastructure_id)
        other = self._named(name)
        if other is not None:
            self._end(infra, request, FAILED, RESOURCE_ALREADY_EXISTS,
                      f"infrastructure {other.infrastructure_id} is already named {name!r} at this location")
        else:
            picks, shortfalls = allocate(spec.groups, ready, self._claimed())
            if shortfalls:
                self._end(infra, request, FAILED, INSUFFICIENT_CAPACITY, "not enough Ready machines: " + "; ".join(shortfalls))
            else:
                infra.members = [Member(str(m["system_id"]), group.name, str(m.get("hostname") or "")) for group, m in picks]
        self._infrastructures[infrastructure_id] = infra
        self._specs[infrastructure_id] = spec
        self._save()
        log.info("Infrastructure {id} ({name}): create accepted, {n} machine(s) claimed{failed}", id=infrastructure_id,
                 name=name or "unnamed", n=len(infra.members),
                 failed="" if request.status == IN_PROGRESS else f"; {request.failure_code}: {request.description}")
        self._watch(infra, request)
        return Accepted(infrastructure_id, request_id)

    async def get_infrastructure_task(
        self, infrastructure_id: str, request_id: str, deployment_location: Mapping[str, Any]
    ) -> InfrastructureTask:
        infra = self._get(infrastructure_id)
        request = infra.requests.get(request_id)
        if request is None:
            raise InfrastructureRequestNotFound(f"infrastructure {infrastructure_id} has no request {request_id}")
        if request.status == IN_PROGRESS:
            await self._step(infra, request)
        return self._task(infra, request)

    async def delete_infrastructure(self, infrastructure_id: str, deployment_location: Mapping[str, Any]) -> Accepted:
        work = self._machine_work()
        infra = self._get(infrastructure_id)
        if infra.state == DELETED:
            raise InfrastructureNotFound(f"infrastructure {infrastructure_id} has been deleted")
        running = self._running(infra, "delete")
        if running is not None:
            return Accepted(infrastructure_id, running.request_id)
        # MAAS must be reachable to take the request; nothing changes before that.
        held = [m.system_id for m in infra.held]
        await self._maas(work.get_machines(held) if held else work.list_zones())
        lock = self._lock(infra)
        await lock.acquire()
        try:
            running = self._running(infra, "delete")
            if running is not None:
                return Accepted(infrastructure_id, running.request_id)
            now = self.reactor.seconds()
            for create in [r for r in infra.requests.values() if r.status == IN_PROGRESS]:
                if create.phase == UNDO:
                    self._end(infra, create, FAILED, create.failure_code or INFRASTRUCTURE_ERROR,
                              create.description + " (a delete took over undoing it)")
                else:
                    self._end(infra, create, FAILED, INFRASTRUCTURE_ERROR, "deleted before its creation finished")
            request = Request(str(uuid.uuid4()), "delete", now, TEARDOWN, teardown_started=now)
            infra.requests[request.request_id] = request
            infra.state = DELETING
            self._save()
        finally:
            lock.release()
        log.info("Infrastructure {id}: delete accepted, releasing {n} machine(s)", id=infrastructure_id, n=len(held))
        self._watch(infra, request)
        return Accepted(infrastructure_id, request.request_id)

    async def find_infrastructure(
        self, template: str, template_type: str, instance_name: str, deployment_location: Mapping[str, Any]
    ) -> Found | None:
        parse_template(template, template_type)
        work = self._machine_work()
        infra = self._named(instance_name) if isinstance(instance_name, str) and instance_name else None
        if infra is None or infra.state == DELETING:
            await self._maas(work.list_zones())  # an unreachable MAAS is an error even when nothing matches
            return None
        held = [m.system_id for m in infra.held]
        fresh = {m["system_id"]: m for m in (await self._maas(work.get_machines(held)))["machines"]} if held else {}
        return Found(infra.infrastructure_id, self._outputs(infra, fresh))

    async def close(self) -> None:
        """Stop the watchers (the state file already holds everything)."""
        self._closed = True
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        for watcher in list(self._watchers.values()):
            watcher.cancel()

    # -- for operators and tests -----------------------------------------------

    def unfinished(self) -> list[tuple[str, str]]:
        """(infrastructure id, request id) of every request still in progress."""
        return [(i.infrastructure_id, r.request_id) for i in self._infrastructures.values()
                for r in i.requests.values() if r.status == IN_PROGRESS]

    def claimed(self) -> frozenset[str]:
        """system_ids of the machines infrastructures hold."""
        return frozenset(self._claimed())

    # -- stepping ----------------------------------------------------------------

    def _watch_all(self) -> None:
        self._resume = None
        for infra in list(self._infrastructures.values()):
            for request in list(infra.requests.values()):
                self._watch(infra, request)

    def _watch(self, infra: Infrastructure, request: Request) -> None:
        if self._closed or request.status != IN_PROGRESS or request.request_id in self._watchers:
            return
        watcher = Deferred.fromCoroutine(self._follow(infra, request))

        def done(result: Any) -> None:
            self._watchers.pop(request.request_id, None)
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("Following request {request} of {id} failed", result, request=request.request_id,
                            id=infra.infrastructure_id)

        watcher.addBoth(done)
        if not watcher.called:
            self._watchers[request.request_id] = watcher

    async def _follow(self, infra: Infrastructure, request: Request) -> None:
        while not self._closed and request.status == IN_PROGRESS:
            try:
                await self._step(infra, request)
            except (TemporaryInfrastructureError, UnreachableDeploymentLocation) as e:
                log.warn("Infrastructure {id}: {operation} waits for MAAS: {error}", id=infra.infrastructure_id,
                         operation=request.operation, error=str(e))
            if request.status != IN_PROGRESS:
                return
            await deferLater(self.reactor, self.settings.poll_interval, lambda: None)

    def _lock(self, infra: Infrastructure) -> DeferredLock:
        return self._locks.setdefault(infra.infrastructure_id, DeferredLock())

    async def _step(self, infra: Infrastructure, request: Request) -> None:
        """Move the request on as far as it goes now; transient MAAS or CloudStack trouble is raised."""
        lock = self._lock(infra)
        await lock.acquire()
        try:
            while request.status == IN_PROGRESS:
                phase = request.phase
                try:
                    if phase == DEPLOY:
                        await self._deploying(infra, request)
                    elif phase == VOLUMES:
                        await self._preparing(infra, request)
                    else:
                        await self._tearing_down(infra, request)
                except (TemporaryInfrastructureError, UnreachableDeploymentLocation, CancelledError):
                    raise
                except InfrastructureError as e:
                    self._give_up(infra, request, INFRASTRUCTURE_ERROR, str(e))
                except Exception as e:
                    log.failure("Infrastructure {id}: step {phase} failed unexpectedly", id=infra.infrastructure_id, phase=phase)
                    self._end(infra, request, FAILED, INTERNAL_ERROR, f"{phase}: unexpected error: {e}")
                if request.phase == phase:
                    break
        finally:
            try:
                self._save()
            finally:
                lock.release()

    async def _deploying(self, infra: Infrastructure, request: Request) -> None:
        work = self._machine_work()
        spec = self._spec(infra)
        deploy = {g.name: g.deploy.work_options() for g in spec.groups}
        answer = await self._maas(work.get_machines([m.system_id for m in infra.members]))
        machines = {m["system_id"]: m for m in answer["machines"]}
        waiting = []
        for member in infra.members:
            machine = machines.get(member.system_id)
            if machine is None:
                raise InfrastructureError(f"machine {member.system_id} ({member.role}) no longer exists in MAAS")
            member.hostname = str(machine.get("hostname") or member.hostname)
            code, what = machine.get("status_code"), f"{member.hostname} ({member.system_id})"
            if not member.deployed:
                if code == READY:
                    try:
                        deployed = await self._maas(work.deploy(member.system_id, deploy.get(member.role, {})))
                    except (TemporaryInfrastructureError, UnreachableDeploymentLocation):
                        raise
                    except InfrastructureError as e:
                        raise InfrastructureError(f"deploying {what}: {e}") from None
                    member.deployed = True
                    member.hostname = str(deployed["machine"].get("hostname") or member.hostname)
                    self._save()
                    code = DEPLOYING
                else:
                    # No longer Ready, though the file says we never deployed it: MAAS took our
                    # deploy before a restart let us record it, if MAAS names our user its owner
                    # (then it is ours to wait for, or to release if the deployment failed).
                    owner, us = str(machine.get("owner") or ""), await self._username()
                    if owner != us:
                        raise InfrastructureError(
                            f"{what} is {machine.get('status')} for {owner or 'nobody'}, not {us}: taken by someone else"
                        )
                    member.deployed = True
                    self._save()
            if code == DEPLOYED:
                member.addresses = [str(a) for a in machine.get("ip_addresses") or []]
            elif code in (DEPLOYING, ALLOCATED):
                waiting.append(what)
            else:
                raise InfrastructureError(f"deployment of {what} failed: MAAS shows it {machine.get('status')}")
        if waiting:
            if self.reactor.seconds() - request.started > self.settings.deploy_timeout:
                raise InfrastructureError(f"not Deployed within {self.settings.deploy_timeout:g}s: {', '.join(waiting)}")
            return
        if spec.volumes:
            request.phase = VOLUMES
        else:
            self._end(infra, request, COMPLETE)

    async def _preparing(self, infra: Infrastructure, request: Request) -> None:
        volumes = self._volume_work()
        job, spec = infra.volume_job, self._spec(infra)
        if job in volumes.running:
            return
        if (job, "prepare") not in self._volume_runs:
            # Not started by this process (or a restart cut it short): prepare is idempotent.
            infra.volumes_started = True
            self._save()
            disks = [{"name": v.name, "size_gb": v.size_gb} for v in spec.volumes]
            self._start_volumes(job, "prepare", lambda lifecycle: lifecycle.prepare(job, disks))
            if job in volumes.running:
                return
        outcome = self._volume_runs.get((job, "prepare"))
        lifecycle = await self._cloudstack(volumes.lifecycle())
        found = {_tag(v, TAG_DISK): v for v in await self._cloudstack(lifecycle.volumes_of(job))}
        missing = [v.name for v in spec.volumes if not (found.get(v.name) or {}).get("virtualmachineid")]
        if missing:
            why = (outcome or {}).get("error") or "see the cluster's log"
            raise InfrastructureError(f"volumes {', '.join(missing)} could not be prepared: {why}")
        infra.volume_outputs = [
            {"name": v.name, "size_gb": v.size_gb, "volume_id": str(found[v.name]["id"]),
             "mount_point": lifecycle.mountpoint(job, v.name)}
            for v in spec.volumes
        ]
        self._end(infra, request, COMPLETE)

    async def _tearing_down(self, infra: Infrastructure, request: Request) -> None:
        """Release every machine held and remove the volumes; end the request when done (or given up)."""
        now = self.reactor.seconds()
        if request.teardown_started is None:
            request.teardown_started = now
        pending, problems = await self._release(infra)
        if infra.volumes_started:
            left = await self._remove_volumes(infra)
            if left is None:
                pending.append("volumes")
            elif left:
                problems.append(left)
        if pending:
            if now - request.teardown_started <= self.settings.release_timeout:
                return
            problems.append(f"not released within {self.settings.release_timeout:g}s: {', '.join(pending)}")
        if request.operation == "delete":
            if problems:
                self._end(infra, request, FAILED, INFRASTRUCTURE_ERROR, "; ".join(problems))
            else:
                self._end(infra, request, COMPLETE)
        else:
            left = f" (undoing it left: {'; '.join(problems)})" if problems else ""
            self._end(infra, request, FAILED, request.failure_code or INFRASTRUCTURE_ERROR, request.description + left)

    async def _release(self, infra: Infrastructure) -> tuple[list[str], list[str]]:
        """Machines still being released, and problems; sends the releases not sent yet."""
        held = infra.held
        if not held:
            return [], []
        work = self._machine_work()
        answer = await self._maas(work.get_machines([m.system_id for m in held]))
        machines = {m["system_id"]: m for m in answer["machines"]}
        pending, problems = [], []
        for member in held:
            machine, key = machines.get(member.system_id), (infra.infrastructure_id, member.system_id)
            code = None if machine is None else machine.get("status_code")
            what = f"{member.hostname} ({member.system_id})"
            if machine is None or code == READY or not member.deployed:
                # Gone, free again, or never deployed by us (so not ours to release).
                member.released = True
                self._release_sent.discard(key)
            elif code in (RELEASING, DISK_ERASING):
                pending.append(what)
            elif key in self._release_sent:
                if code in (FAILED_RELEASING, FAILED_DISK_ERASING):
                    problems.append(f"release of {what} failed: MAAS shows it {machine.get('status')}")
                else:
                    pending.append(what)
            else:
                try:
                    await self._maas(work.release(member.system_id, {"erase": self.settings.erase}))
                except (TemporaryInfrastructureError, UnreachableDeploymentLocation):
                    raise
                except InfrastructureError as e:
                    problems.append(f"releasing {what}: {e}")
                    continue
                self._release_sent.add(key)
                pending.append(what)
        return pending, problems

    async def _remove_volumes(self, infra: Infrastructure) -> str | None:
        """None while the volumes are being removed; "" once gone; else what is left."""
        if self.volumes is None or self.volumes.configuration is None:
            return f"volumes of job {infra.volume_job} cannot be removed: this cluster has no CloudStack configuration"
        job = infra.volume_job
        if job in self.volumes.running:
            return None
        if (job, "cleanup") not in self._volume_runs:
            self._start_volumes(job, "cleanup", lambda lifecycle: lifecycle.cleanup(job, True))
            if job in self.volumes.running:
                return None
        lifecycle = await self._cloudstack(self.volumes.lifecycle())
        left = await self._cloudstack(lifecycle.volumes_of(job))
        if left:
            self._volume_runs.pop((job, "cleanup"), None)  # the next teardown tries again
            return f"volumes {', '.join(str(v.get('name') or v.get('id')) for v in left)} could not be removed"
        infra.volumes_started = False
        infra.volume_outputs = []
        return ""

    def _start_volumes(self, job: str, operation: str, call: Any) -> None:
        """Run a VolumeWork job (it reports to the region as well) and note how it ended."""
        key = (job, operation)

        async def work(lifecycle: Any) -> dict[str, Any]:
            result: dict[str, Any] = await call(lifecycle)
            self._volume_runs[key] = result
            return result

        try:
            self._volume_work().start(job, operation, work)
        except rpc_errors.RPCError as e:
            raise InfrastructureError(f"volumes of job {job}: {e}") from None
        self._volume_runs.setdefault(key, None)

    def _give_up(self, infra: Infrastructure, request: Request, code: str, description: str) -> None:
        """A step failed for good: a create is undone first; a teardown ends FAILED."""
        log.warn("Infrastructure {id}: {operation} failed ({code}): {description}", id=infra.infrastructure_id,
                 operation=request.operation, code=code, description=description)
        if request.operation == "create" and request.phase in (DEPLOY, VOLUMES):
            request.phase, request.failure_code, request.description = UNDO, code, description
            request.teardown_started = self.reactor.seconds()
            infra.state = BROKEN
        elif request.operation == "create":
            self._end(infra, request, FAILED, request.failure_code or code,
                      f"{request.description} (undoing it failed: {description})")
        else:
            self._end(infra, request, FAILED, code, description)

    def _end(self, infra: Infrastructure, request: Request, status: str, code: str | None = None,
             description: str = "") -> None:
        request.status, request.failure_code, request.description = status, code, description
        request.ended = self.reactor.seconds()
        if request.operation == "create":
            infra.state = CREATED if status == COMPLETE else BROKEN
            request.outputs = self._outputs(infra) if status == COMPLETE else None
        else:
            infra.state = DELETED if status == COMPLETE else BROKEN
        log.info("Infrastructure {id}: {operation} {status}{why}", id=infra.infrastructure_id, operation=request.operation,
                 status=status, why=f" ({code}: {description})" if code else "")

    # -- answers -----------------------------------------------------------------

    def _task(self, infra: Infrastructure, request: Request) -> InfrastructureTask:
        failure = FailureDetails(request.failure_code or INTERNAL_ERROR, request.description) if request.status == FAILED else None
        return InfrastructureTask(infra.infrastructure_id, request.request_id, request.status, failure, request.outputs)

    def _outputs(self, infra: Infrastructure, fresh: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        machines = []
        for member in infra.held:
            output = member.output()
            machine = (fresh or {}).get(member.system_id)
            if machine is not None and machine.get("status_code") == DEPLOYED:
                output.update(hostname=str(machine.get("hostname") or member.hostname),
                              addresses=[str(a) for a in machine.get("ip_addresses") or []])
            machines.append(output)
        return {**self._spec(infra).outputs, "machines": machines, "volumes": [dict(v) for v in infra.volume_outputs]}

    # -- lookups -------------------------------------------------------------------

    def _get(self, infrastructure_id: str) -> Infrastructure:
        infra = self._infrastructures.get(infrastructure_id) if isinstance(infrastructure_id, str) else None
        if infra is None:
            raise InfrastructureNotFound(f"no infrastructure {infrastructure_id!r} at this maas location")
        return infra

    def _named(self, name: str) -> Infrastructure | None:
        if not name:
            return None
        return next((i for i in self._infrastructures.values() if i.instance_name == name and i.state in LIVE), None)

    @staticmethod
    def _running(infra: Infrastructure, operation: str) -> Request | None:
        return next((r for r in infra.requests.values() if r.operation == operation and r.status == IN_PROGRESS), None)

    def _claimed(self) -> set[str]:
        return {m.system_id for i in self._infrastructures.values() for m in i.held}

    def _spec(self, infra: Infrastructure) -> Template:
        spec = self._specs.get(infra.infrastructure_id)
        if spec is None:
            spec = self._specs[infra.infrastructure_id] = parse_template(infra.template, infra.template_type)
        return spec

    # -- the site's systems ----------------------------------------------------------

    def _machine_work(self) -> MachineWork:
        if self.machines is None or getattr(self.machines, "client", None) is None:
            raise InvalidInfrastructureRequest(
                "this cluster has no MAAS configured (maas: in its configuration), so it cannot serve maas locations"
            )
        return self.machines

    async def _username(self) -> str:
        """The MAAS user the cluster deploys as, asked once per driver (it is in the cluster's configuration)."""
        if self._user is not None:
            return self._user
        try:
            name: str = await self._maas(self._machine_work().username())
        except (TemporaryInfrastructureError, UnreachableDeploymentLocation):
            raise
        except InfrastructureError as e:
            # Without knowing who we are, no machine can be judged ours or not: ask again later.
            raise TemporaryInfrastructureError(f"cannot tell which MAAS user this cluster is: {e}") from None
        if not name:
            raise TemporaryInfrastructureError("MAAS did not say which user this cluster is (whoami named no user)")
        self._user = name
        return name

    def _volume_work(self) -> VolumeWork:
        if self.volumes is None or self.volumes.configuration is None:
            raise InvalidInfrastructureRequest(
                "the template asks for volumes, but this cluster has no CloudStack configuration from the region"
            )
        return self.volumes

    async def _maas(self, work: Awaitable[T]) -> T:
        """Await a MachineWork call, with its errors as the infrastructure errors Ignition expects."""
        try:
            return await work
        except InfrastructureError:
            raise
        except MAASError as e:
            raise _from_rpc(rpc_error_for(e), e) from None
        except rpc_errors.RPCError as e:
            # MachineWork raises its RPC error while handling MAAS's, so the MAAS error is the context.
            raise _from_rpc(e, e.__context__) from None

    async def _cloudstack(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except (CloudStackAuthError, CloudStackUnavailable) as e:
            if isinstance(e, CloudStackUnavailable) and e.status is not None:
                raise TemporaryInfrastructureError(f"CloudStack is unavailable: {e}") from None
            raise UnreachableDeploymentLocation(f"CloudStack cannot be used: {e}") from None
        except CloudStackError as e:
            if e.status is not None and e.status >= 500:
                raise TemporaryInfrastructureError(f"CloudStack: {e}") from None
            raise InfrastructureError(f"CloudStack: {e}") from None
        except rpc_errors.IntegrationUnavailable as e:
            raise TemporaryInfrastructureError(f"CloudStack is unavailable: {e}") from None
        except rpc_errors.RPCError as e:
            raise InfrastructureError(f"CloudStack: {e}") from None

    # -- the state file ----------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return
        try:
            data = json.loads(text)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {STATE_VERSION}")
            for item in data["infrastructures"]:
                infra = Infrastructure.from_json(item)
                self._infrastructures[infra.infrastructure_id] = infra
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{self.state_path} is not a maas driver state file ({e}); fix it or move it away") from None
        self._written = text

    def _save(self) -> None:
        self._forget_finished()
        text = json.dumps({"version": STATE_VERSION, "infrastructures": [i.to_json() for i in self._infrastructures.values()]},
                          indent=1, sort_keys=True)
        if text == self._written:
            return
        # Templates may carry user data with secrets: the file is the cluster user's only.
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            write_private_atomically(self.state_path, text.encode())
        except OSError as e:
            log.error("Cannot write the maas driver's state to {path}: {error}", path=str(self.state_path), error=str(e))
            raise InfrastructureError(f"the maas driver cannot record its state ({e.strerror or e})") from None
        self._written = text

    def _forget_finished(self) -> None:
        """Drop deleted (or failed and fully undone) infrastructures after `keep_finished`."""
        horizon = self.reactor.seconds() - self.settings.keep_finished
        for infra in list(self._infrastructures.values()):
            ended = [r.ended for r in infra.requests.values()]
            if (infra.state in (DELETED, BROKEN) and not infra.held and not infra.volumes_started
                    and all(e is not None and e < horizon for e in ended)):
                del self._infrastructures[infra.infrastructure_id]
                self._locks.pop(infra.infrastructure_id, None)
                self._specs.pop(infra.infrastructure_id, None)


def _from_rpc(error: Exception, cause: BaseException | None) -> InfrastructureError:
    if isinstance(error, rpc_errors.IntegrationNotConfigured):
        return InvalidInfrastructureRequest(str(error))
    if isinstance(error, rpc_errors.IntegrationAuthFailed):
        return UnreachableDeploymentLocation(f"MAAS refused this cluster's credentials: {error}")
    if isinstance(error, rpc_errors.IntegrationUnavailable):
        if isinstance(cause, MAASUnavailable) and cause.status is None:
            return UnreachableDeploymentLocation(f"MAAS cannot be reached: {error}")
        return TemporaryInfrastructureError(f"MAAS is unavailable: {error}")
    return InfrastructureError(f"MAAS: {error}")


def _tag(volume: Mapping[str, Any], key: str) -> str | None:
    for tag in volume.get("tags") or []:
        if tag.get("key") == key:
            return str(tag.get("value"))
    return None


def make_driver(context: DriverContext) -> MAASInfrastructureDriver:
    """The ``maas`` driver for a cluster (the ``outpost.infrastructure_drivers`` entry point)."""
    return MAASInfrastructureDriver(
        context.reactor, context.machines, context.volumes, Path(context.state_dir) / STATE_FILE,
        Settings.from_config(context.config),
    )

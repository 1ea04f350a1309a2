"""
The simulated CloudStack's state and behaviour, without HTTP.

`CloudStackSimulator.handle(command, params)` answers one API command (the
value under ``<command>response``) or raises an `ApiError`.  Async commands
(createVolume, attachVolume, detachVolume, createTags, deleteTags) answer a
``jobid`` at once; the job ends `job_duration` seconds later on the injected
`clock`, as ``queryAsyncJobResult`` then shows.  As in CloudStack, ids are
checked when the command is accepted (431), limits when a volume is
allocated (532/533, synchronously), and the rest inside the job (a failed
job carries jobresultcode and ``jobresult: {errorcode, errortext}``).

Attach hook: functions in `on_attach` are called as ``f(volume, vm,
device_id)`` when an attach job completes, after the volume shows the VM and
before the job reports success; functions in `on_detach` as ``f(volume, vm)``
when a detach job completes, before the volume stops showing the VM.
`volume` and `vm` are the API's JSON dicts (copies).  The cluster's simulated
mounter uses them to make a fake block device appear and disappear.  A hook
that raises is logged; the job still succeeds.
"""

from __future__ import annotations

import collections
import random
import re
import time
import uuid
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from simulators.cloudstack.errors import (
    ACCOUNT_RESOURCE_LIMIT,
    INSUFFICIENT_CAPACITY,
    INTERNAL_ERROR,
    RESOURCE_IN_USE,
    ApiError,
)
from simulators.cloudstack.faults import Faults
from simulators.cloudstack.model import GIB, DiskOffering, Job, Limits, Tag, VirtualMachine, Volume, Zone, timestamp

__all__ = ["CloudStackSimulator", "AttachHook", "DetachHook", "ASYNC_COMMANDS", "RESOURCE_TYPES"]

log = Logger()

AttachHook = Callable[[dict[str, Any], dict[str, Any], int], None]
DetachHook = Callable[[dict[str, Any], dict[str, Any]], None]

ASYNC_COMMANDS = ("createVolume", "attachVolume", "detachVolume", "createTags", "deleteTags")
#: CloudStack's command classes, shown as a job's ``cmd``.
_CMD_CLASSES = {
    "createVolume": "org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd",
    "attachVolume": "org.apache.cloudstack.api.command.user.volume.AttachVolumeCmd",
    "detachVolume": "org.apache.cloudstack.api.command.user.volume.DetachVolumeCmd",
    "createTags": "org.apache.cloudstack.api.command.user.tag.CreateTagsCmd",
    "deleteTags": "org.apache.cloudstack.api.command.user.tag.DeleteTagsCmd",
}
#: Resource types createTags accepts here, and what they name.
RESOURCE_TYPES = ("Volume", "UserVm")
_MAP_PARAM = re.compile(r"([a-z]+)\[(\d+)\]\.([a-z]+)")
#: KVM keeps device 3 for the CD-ROM; data disks never get it automatically.
_RESERVED_DEVICES = {0, 3}


def _get(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value if value not in (None, "") else None


def _map_param(params: Mapping[str, str], name: str) -> list[dict[str, str]]:
    """``tags[0].key=a&tags[0].value=b`` → ``[{"key": "a", "value": "b"}]`` (in index order)."""
    entries: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        match = _MAP_PARAM.fullmatch(key)
        if match and match.group(1) == name:
            entries.setdefault(int(match.group(2)), {})[match.group(3)] = value
    return [entries[index] for index in sorted(entries)]


@attrs.define(eq=False)
class CloudStackSimulator:
    clock: IReactorTime = attrs.field(repr=False)
    #: api key → secret key.
    keys: dict[str, str] = attrs.field(repr=False)
    job_duration: float = 2.0
    faults: Faults = attrs.field(factory=Faults)
    limits: Limits = attrs.field(factory=Limits)
    rng: random.Random = attrs.field(factory=lambda: random.Random(0), repr=False)
    #: Wall-clock time, for ``expires`` and timestamps (tests may pin it).
    now: Callable[[], float] = attrs.field(default=time.time, repr=False)
    zones: dict[str, Zone] = attrs.field(factory=dict, repr=False)
    vms: dict[str, VirtualMachine] = attrs.field(factory=dict, repr=False)
    offerings: dict[str, DiskOffering] = attrs.field(factory=dict, repr=False)
    volumes: dict[str, Volume] = attrs.field(factory=dict, repr=False)
    jobs: dict[str, Job] = attrs.field(factory=dict, repr=False)
    tags: list[Tag] = attrs.field(factory=list, repr=False)
    on_attach: list[AttachHook] = attrs.field(factory=list, repr=False)
    on_detach: list[DetachHook] = attrs.field(factory=list, repr=False)
    #: The last API commands served, as ``(command, params)``, for tests.
    request_log: collections.deque[tuple[str, dict[str, str]]] = attrs.field(
        factory=lambda: collections.deque(maxlen=1000), repr=False
    )
    #: ``(port, factory)`` for each place it is served (see `web.start_cloudstack_simulator`).
    listeners: list[tuple[Any, Any]] = attrs.field(factory=list, repr=False)

    @classmethod
    def create(
        cls,
        clock: IReactorTime,
        *,
        api_key: str,
        secret_key: str,
        job_duration: float = 2.0,
        faults: Faults | None = None,
        limits: Limits | None = None,
        seed: int = 0,
        zone_name: str = "OSSEA-Zone",
        appliance_name: str = "oma-appliance",
        now: Callable[[], float] = time.time,
    ) -> "CloudStackSimulator":
        """A simulator with one zone, the appliance VM (with its root disk) and four disk offerings."""
        if not api_key or not secret_key:
            raise ValueError("api_key and secret_key must not be empty")
        if job_duration < 0:
            raise ValueError(f"job_duration must be at least 0, not {job_duration!r}")
        sim = cls(
            clock, {api_key: secret_key}, job_duration, faults or Faults(), limits or Limits(), random.Random(seed), now
        )
        zone = sim.add_zone(zone_name)
        sim.add_vm(appliance_name, zone)
        for name, size in (("Custom", 0), ("Small", 5), ("Medium", 20), ("Large", 100)):
            offering = DiskOffering(sim.new_id(), name, size, sim.timestamp())
            sim.offerings[offering.id] = offering
        return sim

    # -- set-up and inspection (for tests and the tap) -------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def timestamp(self) -> str:
        return timestamp(self.now())

    def add_zone(self, name: str) -> Zone:
        zone = Zone(self.new_id(), name)
        self.zones[zone.id] = zone
        return zone

    def add_vm(self, name: str, zone: Zone | None = None) -> VirtualMachine:
        """A running VM, with a ROOT volume at device 0 as CloudStack shows it."""
        zone = zone or next(iter(self.zones.values()))
        vm = VirtualMachine(self.new_id(), name, zone, f"i-2-{len(self.vms) + 10}-VM", self.timestamp())
        self.vms[vm.id] = vm
        root = Volume(self.new_id(), f"ROOT-{len(self.vms) + 9}", zone, 20 * GIB, self.timestamp(), None, "ROOT", "Ready", vm, 0, self.timestamp())
        self.volumes[root.id] = root
        return vm

    @property
    def zone(self) -> Zone:
        """The first zone."""
        return next(iter(self.zones.values()))

    @property
    def appliance(self) -> VirtualMachine:
        """The first VM (the appliance volumes are attached to)."""
        return next(iter(self.vms.values()))

    def offering(self, name: str) -> DiskOffering:
        return next(o for o in self.offerings.values() if o.name == name)

    def data_volumes(self) -> list[Volume]:
        return [v for v in self.volumes.values() if v.type == "DATADISK"]

    def set_faults(self, **changes: Any) -> Faults:
        """Change injected faults (the fields of `Faults`), checked as a whole."""
        merged = {**attrs.asdict(self.faults, recurse=False), **changes}
        if "stuck_jobs" in changes:
            merged["stuck_jobs"] = set(changes["stuck_jobs"])
        if "job_error" in changes:
            merged["job_error"] = tuple(changes["job_error"])
        self.faults = Faults(**merged)
        return self.faults

    def volume_json(self, volume: Volume) -> dict[str, Any]:
        return volume.to_json(self._tags_of(volume.id))

    def stop(self) -> None:
        """Cancel pending jobs (they stay pending)."""
        for job in self.jobs.values():
            if job.call is not None and job.call.active():
                job.call.cancel()
            job.call = None

    # -- the API ---------------------------------------------------------------

    def handle(self, command: str, params: Mapping[str, str]) -> Any:
        """The answer to `command` (the value under ``<command>response``); raises `ApiError`."""
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise ApiError.unknown_command()
        return handler(command, params)

    # lists

    def _page(self, command: str, params: Mapping[str, str], key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        page, size = _get(params, "page"), _get(params, "pagesize")
        if page is not None or size is not None:
            try:
                page_no = int(page or "1")
                page_size = int(size or "500")
            except ValueError:
                raise ApiError.invalid(f"Unable to execute API command {command.lower()} due to invalid value: page and pagesize must be numbers") from None
            if page_no < 1 or page_size < 1:
                raise ApiError.invalid("Page and pagesize must be greater than 0")
            shown = items[(page_no - 1) * page_size : page_no * page_size]
        else:
            shown = items
        if not shown:
            return {}
        return {"count": len(items), key: shown}

    def _lookup(self, table: Mapping[str, Any], command: str, name: str, value: str | None) -> Any:
        if value is None:
            raise ApiError.missing(command, name)
        found = table.get(value)
        if found is None:
            raise ApiError.no_entity(command, name, value)
        return found

    def _cmd_listCapabilities(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        return {
            "capability": {
                "cloudstackversion": "4.19.0.0",
                "apilimitinterval": 1,
                "apilimitmax": 0,
                "customdiskofferingminsize": 1,
                "customdiskofferingmaxsize": 1024,
                "userpublictemplateenabled": True,
                "kvmsnapshotenabled": True,
            }
        }

    def _cmd_listZones(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        zones = list(self.zones.values())
        if _get(params, "id"):
            zones = [self._lookup(self.zones, command, "id", params["id"])]
        if _get(params, "name"):
            zones = [z for z in zones if z.name == params["name"]]
        return self._page(command, params, "zone", [z.to_json() for z in zones])

    def _cmd_listVirtualMachines(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        vms = list(self.vms.values())
        if _get(params, "id"):
            vms = [self._lookup(self.vms, command, "id", params["id"])]
        if _get(params, "name"):
            vms = [vm for vm in vms if vm.name == params["name"]]
        if _get(params, "zoneid"):
            vms = [vm for vm in vms if vm.zone.id == params["zoneid"]]
        if _get(params, "state"):
            vms = [vm for vm in vms if vm.state.lower() == params["state"].lower()]
        return self._page(command, params, "virtualmachine", [vm.to_json() for vm in vms])

    def _cmd_listDiskOfferings(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        offerings = list(self.offerings.values())
        if _get(params, "id"):
            offerings = [self._lookup(self.offerings, command, "id", params["id"])]
        if _get(params, "name"):
            offerings = [o for o in offerings if o.name == params["name"]]
        return self._page(command, params, "diskoffering", [o.to_json() for o in offerings])

    def _cmd_listVolumes(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        volumes = list(self.volumes.values())
        if _get(params, "id"):
            volumes = [self._lookup(self.volumes, command, "id", params["id"])]
        if _get(params, "virtualmachineid"):
            vm = self._lookup(self.vms, command, "virtualmachineid", params["virtualmachineid"])
            volumes = [v for v in volumes if v.vm is vm]
        if _get(params, "zoneid"):
            zone = self._lookup(self.zones, command, "zoneid", params["zoneid"])
            volumes = [v for v in volumes if v.zone is zone]
        if _get(params, "name"):
            volumes = [v for v in volumes if v.name == params["name"]]
        if _get(params, "type"):
            volumes = [v for v in volumes if v.type.lower() == params["type"].lower()]
        if _get(params, "keyword"):
            volumes = [v for v in volumes if params["keyword"].lower() in v.name.lower()]
        for wanted in _map_param(params, "tags"):
            volumes = [v for v in volumes if self._has_tag(v.id, wanted.get("key"), wanted.get("value"))]
        return self._page(command, params, "volume", [self.volume_json(v) for v in volumes])

    def _cmd_listTags(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        tags = list(self.tags)
        for name, attribute in (("resourceid", "resource_id"), ("resourcetype", "resource_type"), ("key", "key"), ("value", "value")):
            if _get(params, name):
                tags = [t for t in tags if getattr(t, attribute) == params[name]]
        return self._page(command, params, "tag", [t.to_json() for t in tags])

    def _cmd_queryAsyncJobResult(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        job: Job = self._lookup(self.jobs, command, "jobid", _get(params, "jobid"))
        return job.to_json()

    # volumes

    def _cmd_createVolume(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        zone: Zone = self._lookup(self.zones, command, "zoneid", _get(params, "zoneid"))
        if _get(params, "snapshotid"):
            raise ApiError.invalid("Creating volumes from snapshots is not supported by this simulator")
        offering_id = _get(params, "diskofferingid")
        if offering_id is None:
            raise ApiError.invalid("At least one of disk Offering ID or snapshot ID must be passed whilst creating volume")
        offering: DiskOffering = self._lookup(self.offerings, command, "diskofferingid", offering_id)
        size_text = _get(params, "size")
        if offering.customized:
            if size_text is None:
                raise ApiError.invalid("This disk offering requires a custom size specified")
            try:
                size_gb = int(size_text)
            except ValueError:
                raise ApiError.invalid(f"Unable to execute API command createvolume due to invalid value. Invalid parameter size value={size_text} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.") from None
            if not 1 <= size_gb <= 1024:
                raise ApiError.invalid(f"Invalid size for custom volume creation: {size_gb}, max volume size is:1024GB")
        else:
            if size_text is not None:
                raise ApiError.invalid("Cannot specify a size with a disk offering that is not customized")
            size_gb = offering.disk_size_gb
        limits = self.limits
        data = self.data_volumes()
        if limits.max_volumes is not None and len(data) >= limits.max_volumes:
            raise ApiError(
                ACCOUNT_RESOURCE_LIMIT,
                "Maximum number of resources of type 'volume' for account name=admin in domain id=1 has been exceeded.",
            )
        used = sum(v.size for v in data) // GIB
        if limits.capacity_gb is not None and used + size_gb > limits.capacity_gb:
            raise ApiError(
                INSUFFICIENT_CAPACITY,
                f"Insufficient capacity: zone {zone.name} has {limits.capacity_gb - used} GB of primary storage left, {size_gb} GB requested",
            )
        name = _get(params, "name") or f"volume-{self.new_id()[:8]}"
        volume = Volume(self.new_id(), name, zone, size_gb * GIB, self.timestamp(), offering)
        self.volumes[volume.id] = volume

        def run() -> dict[str, Any]:
            if volume.id not in self.volumes:
                raise ApiError.invalid(f"Volume {volume.id} was deleted before it was created")
            return {"volume": self.volume_json(volume)}

        def undo() -> None:
            self.volumes.pop(volume.id, None)

        job = self._start_job(command, "Volume", volume.id, run, undo)
        return {"id": volume.id, "jobid": job.id}

    def _cmd_attachVolume(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        volume: Volume = self._lookup(self.volumes, command, "id", _get(params, "id"))
        vm: VirtualMachine = self._lookup(self.vms, command, "virtualmachineid", _get(params, "virtualmachineid"))
        device_text = _get(params, "deviceid")
        try:
            wanted = None if device_text is None else int(device_text)
        except ValueError:
            raise ApiError.invalid(f"Unable to execute API command attachvolume due to invalid value. Invalid parameter deviceid value={device_text}") from None

        def run() -> dict[str, Any]:
            if volume.id not in self.volumes:
                raise ApiError.invalid(f"Unable to find volume with ID {volume.id}")
            if volume.type != "DATADISK":
                raise ApiError.invalid("Please specify a volume with the valid type: DATADISK")
            if volume.vm is not None:
                raise ApiError.invalid(f"Volume {volume.name} is already attached to VM {volume.vm.name}")
            if vm.zone is not volume.zone:
                raise ApiError.invalid("Please specify a VM that is in the same zone as the volume.")
            used = {v.device_id for v in self.volumes.values() if v.vm is vm}
            if wanted is not None:
                if wanted == 0:
                    raise ApiError.invalid("deviceId 0 is reserved for the root disk")
                if wanted in used:
                    raise ApiError.invalid(f"deviceId {wanted} is used by VM {vm.name}")
                if not 1 <= wanted <= self.limits.max_device_id:
                    raise ApiError.invalid(f"deviceId should be between 1 and {self.limits.max_device_id}")
                device = wanted
            else:
                free = [d for d in range(1, self.limits.max_device_id + 1) if d not in used and d not in _RESERVED_DEVICES]
                if not free:
                    raise ApiError.invalid(f"The specified VM already has the maximum number of data disks ({self.limits.max_device_id - 1}) attached.")
                device = free[0]
            volume.vm, volume.device_id, volume.attached, volume.state = vm, device, self.timestamp(), "Ready"
            answer = self.volume_json(volume)
            self._call_hooks(self.on_attach, answer, vm.to_json(), device)
            return {"volume": answer}

        job = self._start_job(command, "Volume", volume.id, run)
        return {"jobid": job.id}

    def _cmd_detachVolume(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        volume: Volume = self._lookup(self.volumes, command, "id", _get(params, "id"))

        def run() -> dict[str, Any]:
            if volume.id not in self.volumes:
                raise ApiError.invalid(f"Unable to find volume with ID {volume.id}")
            if volume.type == "ROOT":
                raise ApiError.invalid("Please specify a volume with the valid type: DATADISK")
            if volume.vm is None:
                raise ApiError.invalid("Please specify a volume that is attached to a VM.")
            vm = volume.vm
            self._call_hooks(self.on_detach, self.volume_json(volume), vm.to_json())
            volume.vm, volume.device_id, volume.attached = None, None, None
            return {"volume": self.volume_json(volume)}

        job = self._start_job(command, "Volume", volume.id, run)
        return {"jobid": job.id}

    def _cmd_deleteVolume(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        volume: Volume = self._lookup(self.volumes, command, "id", _get(params, "id"))
        if volume.vm is not None:
            raise ApiError(RESOURCE_IN_USE, "Please specify a volume that is not attached to any VM.")
        del self.volumes[volume.id]
        self.tags = [t for t in self.tags if t.resource_id != volume.id]
        return {"success": True}

    # tags

    def _resources(self, command: str, params: Mapping[str, str]) -> tuple[list[str], str]:
        ids_text, resource_type = _get(params, "resourceids"), _get(params, "resourcetype")
        if ids_text is None:
            raise ApiError.missing(command, "resourceids")
        if resource_type is None:
            raise ApiError.missing(command, "resourcetype")
        tables: dict[str, Mapping[str, Any]] = {"Volume": self.volumes, "UserVm": self.vms}
        table = tables.get(resource_type, {})
        if resource_type not in RESOURCE_TYPES:
            raise ApiError.invalid(f"Unable to find resource type {resource_type}")
        ids = [i for i in ids_text.split(",") if i]
        for resource_id in ids:
            self._lookup(table, command, "resourceids", resource_id)
        return ids, resource_type

    def _cmd_createTags(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        ids, resource_type = self._resources(command, params)
        wanted = _map_param(params, "tags")
        if not wanted:
            raise ApiError.missing(command, "tags")
        for entry in wanted:
            if not entry.get("key") or "value" not in entry:
                raise ApiError.invalid("Tags must each have a key and a value")

        def run() -> dict[str, Any]:
            for resource_id in ids:
                for entry in wanted:
                    if self._has_tag(resource_id, entry["key"], None):
                        raise ApiError(INTERNAL_ERROR, f"tag {entry['key']} already on {resource_type} {resource_id}")
            for resource_id in ids:
                for entry in wanted:
                    self.tags.append(Tag(entry["key"], entry["value"], resource_id, resource_type))
            return {"success": True}

        job = self._start_job(command, resource_type, None, run)
        return {"jobid": job.id}

    def _cmd_deleteTags(self, command: str, params: Mapping[str, str]) -> Any:  # noqa: N802
        ids, resource_type = self._resources(command, params)
        wanted = _map_param(params, "tags")

        def matches(tag: Tag) -> bool:
            if tag.resource_id not in ids or tag.resource_type != resource_type:
                return False
            if not wanted:
                return True
            return any(tag.key == e.get("key") and ("value" not in e or tag.value == e["value"]) for e in wanted)

        def run() -> dict[str, Any]:
            self.tags = [t for t in self.tags if not matches(t)]
            return {"success": True}

        job = self._start_job(command, resource_type, None, run)
        return {"jobid": job.id}

    def _has_tag(self, resource_id: str, key: str | None, value: str | None) -> bool:
        return any(
            t.resource_id == resource_id and (key is None or t.key == key) and (value is None or t.value == value)
            for t in self.tags
        )

    def _tags_of(self, resource_id: str) -> list[Tag]:
        return [t for t in self.tags if t.resource_id == resource_id]

    # jobs

    def _start_job(
        self,
        command: str,
        instance_type: str,
        instance_id: str | None,
        run: Callable[[], dict[str, Any]],
        undo: Callable[[], None] | None = None,
    ) -> Job:
        job = Job(self.new_id(), command, _CMD_CLASSES[command], instance_type, instance_id, self.timestamp())
        self.jobs[job.id] = job
        fail = self.faults.take_job_failure(command, self.rng.random())
        if self.faults.stuck(command):
            return job
        job.call = self.clock.callLater(self.job_duration, self._finish, job, run, undo, fail)
        return job

    def _finish(self, job: Job, run: Callable[[], dict[str, Any]], undo: Callable[[], None] | None, fail: bool) -> None:
        job.call = None
        try:
            if fail:
                raise ApiError(*self.faults.job_error)
            result = run()
        except ApiError as e:
            if undo is not None:
                undo()
            job.status, job.result_code = 2, e.errorcode
            job.result = {"errorcode": e.errorcode, "errortext": e.errortext}
        else:
            job.status, job.result_code, job.result = 1, 0, result
        job.completed = self.timestamp()

    @staticmethod
    def _call_hooks(hooks: Iterable[Callable[..., None]], *args: Any) -> None:
        for hook in list(hooks):
            try:
                hook(*args)
            except Exception:
                log.failure("CloudStack simulator: an attach/detach hook failed")

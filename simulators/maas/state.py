"""
The simulated MAAS's state and behaviour, without HTTP.

`MAASSimulator` holds the machines and moves them through MAAS's status
transitions on its injected clock: commissioning (then testing) → Ready,
deploying → Deployed, releasing (or disk erasing) → Ready, each able to fail;
power changes take time and a failing BMC leaves the power state "error".
Methods raise `simulators.maas.errors.SimError`s the way MAAS answers.
The web layer (`web.py`) and `FakeMAASClient` both drive it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import random
import re
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.internet.interfaces import IReactorTime

from simulators.maas import errors
from simulators.maas.faults import FAULT_KINDS, Durations, Faults
from simulators.maas.model import (
    API,
    DEFAULT_SERIES,
    DISTRO_SERIES,
    HWE_KERNELS,
    SERIES_VERSIONS,
    STATUS_ALIASES,
    STATUS_NAMES,
    Machine,
    Network,
    Status,
    generate_machines,
)

__all__ = ["MAASSimulator", "User", "MAAS_VERSION"]

MAAS_VERSION = {
    "capabilities": [
        "networks-management",
        "static-ipaddresses",
        "ipv6-deployment-ubuntu",
        "devices-management",
        "storage-deployment-ubuntu",
        "network-deployment-ubuntu",
        "bridging-interface-ubuntu",
        "bridging-automatic-ubuntu",
        "authenticate-api",
    ],
    "version": "3.4.0",
    "subversion": "outpost-simulator",
}

Params = Mapping[str, list[str]]

# Where each action may start (MAAS's NODE_TRANSITIONS, for the actions simulated).
_COMMISSIONABLE = {
    Status.NEW, Status.READY, Status.FAILED_COMMISSIONING, Status.MISSING, Status.BROKEN, Status.FAILED_TESTING,
}
_RELEASABLE = {
    Status.ALLOCATED, Status.RESERVED, Status.BROKEN, Status.DEPLOYING, Status.DEPLOYED,
    Status.FAILED_DEPLOYMENT, Status.FAILED_DISK_ERASING, Status.FAILED_RELEASING,
}
_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no", ""}
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@attrs.frozen
class User:
    username: str
    is_superuser: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "email": f"{self.username}@example.com",
            "is_superuser": self.is_superuser,
            "is_local": True,
            "resource_uri": f"{API}users/{self.username}/",
        }


def _one(params: Params, name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _boolean(params: Params, name: str, default: bool = False) -> bool:
    value = _one(params, name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise errors.BadRequest.field(name, f"'{value}' is not a valid boolean; use true/false or 1/0.")


def _series(value: str) -> str | None:
    """MAAS's accepted spellings: jammy, ubuntu/jammy, 22.04, ubuntu/22.04."""
    name = value.removeprefix("ubuntu/")
    for series, version in SERIES_VERSIONS.items():
        if name in (series, version):
            return series
    return None


@attrs.define(eq=False)
class MAASSimulator:
    clock: IReactorTime = attrs.field(repr=False)
    machines: dict[str, Machine] = attrs.field(repr=False)
    network: Network = attrs.field(factory=Network.default, repr=False)
    durations: Durations = attrs.field(factory=Durations)
    faults: Faults = attrs.field(factory=Faults)
    rng: random.Random = attrs.field(factory=lambda: random.Random(0), repr=False)
    #: ``(consumer_key, token_key) → (token_secret, user)``
    keys: dict[tuple[str, str], tuple[str, User]] = attrs.field(factory=dict, repr=False)
    users: dict[str, User] = attrs.field(factory=dict, repr=False)
    #: The last API requests served, as ``(method, path, op)``, for tests.
    request_log: collections.deque[tuple[str, str, str | None]] = attrs.field(
        factory=lambda: collections.deque(maxlen=1000), repr=False
    )
    #: ``(port, factory)`` for each place it is served (see `web.start_maas_simulator`).
    listeners: list[tuple[Any, Any]] = attrs.field(factory=list, repr=False)

    @classmethod
    def create(
        cls,
        clock: IReactorTime,
        *,
        machines: int = 10,
        api_key: str | None = None,
        seed: int = 0,
        durations: Durations | None = None,
        faults: Faults | None = None,
    ) -> "MAASSimulator":
        """`machines` generated from `seed`, and `api_key` (if given) belonging to the admin user."""
        sim = cls(
            clock=clock,
            machines={m.system_id: m for m in generate_machines(machines, seed)},
            durations=durations or Durations(),
            faults=faults or Faults(),
            rng=random.Random(seed),
        )
        sim.users["admin"] = User("admin", True)
        if api_key is not None:
            sim.add_api_key(api_key)
        return sim

    # -- users and keys --------------------------------------------------------

    def add_api_key(self, api_key: str, username: str = "admin", is_superuser: bool = True) -> User:
        parts = api_key.split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError("a MAAS API key has three non-empty parts: consumer_key:token_key:token_secret")
        user = self.users.setdefault(username, User(username, is_superuser))
        self.keys[(parts[0], parts[1])] = (parts[2], user)
        return user

    def credentials(self, consumer_key: str, token_key: str) -> tuple[str, User] | None:
        return self.keys.get((consumer_key, token_key))

    # -- reads -----------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return dict(MAAS_VERSION)

    def whoami(self, user: User) -> dict[str, Any]:
        return user.to_dict()

    def list_users(self) -> list[dict[str, Any]]:
        return [u.to_dict() for u in self.users.values()]

    def get(self, system_id: str) -> Machine:
        machine = self.machines.get(system_id)
        if machine is None:
            raise errors.NotFound.machine()
        return machine

    def filter_machines(self, query: Params) -> list[Machine]:
        """``GET machines/``'s filters: each repeatable; any value of one matches, every filter must."""
        selected: Iterable[Machine] = self.machines.values()
        statuses = query.get("status") or []
        codes = set()
        for status in statuses:
            code = STATUS_ALIASES.get(status.strip().lower())
            if code is None:
                raise errors.BadRequest.field(
                    "status", f"Select a valid choice. {status} is not one of the available choices."
                )
            codes.add(code)
        if codes:
            selected = [m for m in selected if m.status in codes]
        keys: tuple[tuple[str, Callable[[Machine], str]], ...] = (
            ("hostname", lambda m: m.hostname), ("zone", lambda m: m.zone), ("pool", lambda m: m.pool), ("id", lambda m: m.system_id)
        )
        for name, key in keys:
            values = query.get(name)
            if values:
                wanted = {v.split(".")[0] if name == "hostname" else v for v in values}
                selected = [m for m in selected if key(m) in wanted]
        macs = {v.lower() for v in query.get("mac_address") or []}
        if macs:
            selected = [m for m in selected if macs & {nic["mac_address"] for nic in m.interfaces}]
        tags = {t.strip() for v in query.get("tags") or [] for t in v.split(",") if t.strip()}
        if tags:
            selected = [m for m in selected if tags <= set(m.tag_names)]
        return list(selected)

    def machine_dict(self, machine: Machine) -> dict[str, Any]:
        return machine.to_dict(self.network)

    def machine_json(self, machine: Machine) -> bytes:
        return machine.to_json(self.network)

    def machines_json(self, machines: list[Machine]) -> bytes:
        return b"[" + b",".join(m.to_json(self.network) for m in machines) + b"]"

    # -- permissions -----------------------------------------------------------

    def _editable(self, user: User, system_id: str) -> Machine:
        machine = self.get(system_id)
        if not user.is_superuser and machine.owner not in (None, user.username):
            raise errors.Forbidden("You do not have permission to edit this machine.")
        return machine

    def _admin(self, user: User, system_id: str) -> Machine:
        machine = self.get(system_id)
        if not user.is_superuser:
            raise errors.Forbidden("This action is reserved for administrators.")
        return machine

    # -- actions ---------------------------------------------------------------

    def update(self, user: User, system_id: str, params: Params) -> Machine:
        """``PUT machines/{id}/``: only the hostname is simulated."""
        machine = self._admin(user, system_id)
        hostname = _one(params, "hostname")
        if hostname is not None:
            if not _HOSTNAME.fullmatch(hostname):
                raise errors.BadRequest.field("hostname", f"Invalid hostname: {hostname!r} is not a valid DNS label.")
            if any(m.hostname == hostname and m is not machine for m in self.machines.values()):
                raise errors.BadRequest.field("hostname", "Node with this Hostname already exists.")
            machine.hostname = hostname
            machine.touch()
        return machine

    def commission(self, user: User, system_id: str, params: Params) -> Machine:
        machine = self._admin(user, system_id)
        if machine.status not in _COMMISSIONABLE:
            raise errors.Conflict(
                f"Machine cannot be commissioned in its current state ('{machine.status_name}')."
            )
        enable_ssh = _boolean(params, "enable_ssh")
        _boolean(params, "skip_networking")
        _boolean(params, "skip_storage")
        _boolean(params, "skip_bmc_config")
        testing = (_one(params, "testing_scripts") or "").strip()
        run_tests = testing.lower() != "none"
        machine.enable_ssh = enable_ssh
        self._set_status(machine, Status.COMMISSIONING, "Commissioning")
        self._power(machine, "on")
        self._after(machine, self.durations.commissioning, lambda: self._commissioned(machine, run_tests))
        return machine

    def _commissioned(self, machine: Machine, run_tests: bool) -> None:
        if self._should_fail(machine, "commission"):
            self._fail(machine, Status.FAILED_COMMISSIONING, "Failed commissioning: a commissioning script failed")
            return
        if run_tests:
            self._set_status(machine, Status.TESTING, "Testing")
            self._after(machine, self.durations.testing, lambda: self._tested(machine))
        else:
            self._tested(machine)

    def _tested(self, machine: Machine) -> None:
        self._set_status(machine, Status.READY, "Ready")
        if not machine.enable_ssh:
            self._power(machine, "off")

    def deploy(self, user: User, system_id: str, params: Params) -> Machine:
        machine = self._editable(user, system_id)
        if machine.status == Status.READY and machine.owner not in (None, user.username):
            raise errors.Conflict("Can't allocate a machine belonging to another user.")
        if machine.status not in (Status.READY, Status.ALLOCATED):
            raise errors.Conflict(f"Can't deploy a machine that is in the '{machine.status_name}' state")
        field_errors: dict[str, list[str]] = {}
        series = DEFAULT_SERIES
        requested = _one(params, "distro_series")
        if requested:
            found = _series(requested)
            if found is None:
                choices = ", ".join(f"'ubuntu/{s}'" for s in DISTRO_SERIES)
                field_errors["distro_series"] = [
                    f"'{requested}' is not a valid distro_series.  It should be one of: {choices}."
                ]
            else:
                series = found
        kernel = _one(params, "hwe_kernel")
        if kernel and kernel not in HWE_KERNELS:
            field_errors["hwe_kernel"] = [f"{kernel} is not available for ubuntu/{series} on {machine.architecture}."]
        user_data = None
        encoded = _one(params, "user_data")
        if encoded:
            try:
                user_data = base64.b64decode("".join(encoded.split()), validate=True)
            except (binascii.Error, ValueError):
                field_errors["user_data"] = ["user_data must be base64-encoded."]
        if field_errors:
            raise errors.BadRequest(field_errors)
        machine.owner = user.username
        machine.osystem = "ubuntu"
        machine.distro_series = series
        machine.hwe_kernel = kernel or f"ga-{SERIES_VERSIONS[series]}"
        machine.user_data = user_data
        self._set_status(machine, Status.DEPLOYING, "Deploying")
        self._power(machine, "on")
        self._after(machine, self.durations.deploying, lambda: self._deployed(machine))
        return machine

    def _deployed(self, machine: Machine) -> None:
        if self._should_fail(machine, "deploy"):
            self._fail(machine, Status.FAILED_DEPLOYMENT, "Failed deployment: curtin installation failed")
        else:
            self._set_status(machine, Status.DEPLOYED, "Deployed")

    def release(self, user: User, system_id: str, params: Params) -> Machine:
        machine = self._editable(user, system_id)
        erase = _boolean(params, "erase")
        _boolean(params, "secure_erase")
        _boolean(params, "quick_erase")
        _boolean(params, "force")
        if machine.status in (Status.RELEASING, Status.READY):
            return machine  # MAAS: already released or releasing; the postcondition holds
        if machine.status not in _RELEASABLE:
            raise errors.Conflict(f"Machine cannot be released in its current state ('{machine.status_name}').")
        machine.erase = {
            "erase": erase,
            "secure_erase": _boolean(params, "secure_erase"),
            "quick_erase": _boolean(params, "quick_erase"),
        }
        if erase:
            self._set_status(machine, Status.DISK_ERASING, "Erasing disks")
            self._power(machine, "on")
            self._after(machine, self.durations.disk_erasing, lambda: self._released(machine, Status.FAILED_DISK_ERASING))
        else:
            self._set_status(machine, Status.RELEASING, "Releasing")
            self._power(machine, "off")
            self._after(machine, self.durations.releasing, lambda: self._released(machine, Status.FAILED_RELEASING))
        return machine

    def _released(self, machine: Machine, failed: int) -> None:
        if self._should_fail(machine, "release"):
            self._fail(machine, failed, f"{STATUS_NAMES[failed]}: the machine did not finish releasing")
            return
        machine.owner = None
        machine.osystem = machine.distro_series = ""
        machine.hwe_kernel = None
        machine.user_data = None
        self._set_status(machine, Status.READY, "Released")
        self._power(machine, "off")

    def power_on(self, user: User, system_id: str, params: Params) -> Machine:
        machine = self._editable(user, system_id)
        if machine.owner is None:
            raise errors.Conflict("Can't start node: it hasn't been allocated.")
        self._power(machine, "on")
        return machine

    def power_off(self, user: User, system_id: str, params: Params) -> Machine | None:
        """The machine, or None when no power command is sent (a manual power type), as MAAS does."""
        machine = self._editable(user, system_id)
        stop_mode = _one(params, "stop_mode") or "hard"
        if machine.power_type == "manual":
            return None
        self._power(machine, "off", soft=stop_mode == "soft")
        return machine

    def query_power_state(self, user: User, system_id: str) -> str:
        machine = self.get(system_id)
        if machine.power_type == "manual":
            return "unknown"
        if machine.system_id in self.faults.bmc_failures:
            self._set_power_state(machine, "error")
        return machine.power_state

    # -- transitions -----------------------------------------------------------

    def _set_status(self, machine: Machine, status: int, message: str | None) -> None:
        machine.status = status
        machine.status_message = message
        machine.touch()

    def _fail(self, machine: Machine, status: int, message: str) -> None:
        self._set_status(machine, status, message)

    def _should_fail(self, machine: Machine, action: str) -> bool:
        key = (machine.system_id, action)
        if key in self.faults.failing_actions:
            self.faults.failing_actions.discard(key)
            return True
        return self.faults.action_failure_rate > 0 and self.rng.random() < self.faults.action_failure_rate

    def _after(self, machine: Machine, delay: float, then: Callable[[], None]) -> None:
        """Run `then` after `delay`, replacing the machine's pending status change."""
        if machine.status_timer is not None and machine.status_timer.active():
            machine.status_timer.cancel()

        def fire() -> None:
            machine.status_timer = None
            then()

        machine.status_timer = self.clock.callLater(delay, fire)

    def _power(self, machine: Machine, target: str, soft: bool = False) -> None:
        """Start changing the machine's power to `target`; the BMC takes `durations.power` to act."""
        if machine.power_type == "manual":
            return
        if machine.power_timer is not None and machine.power_timer.active():
            machine.power_timer.cancel()
        delay = self.durations.soft_power_off if soft and target == "off" else self.durations.power

        def fire() -> None:
            machine.power_timer = None
            if machine.system_id in self.faults.bmc_failures:
                self._set_power_state(machine, "error")
                failed = {
                    Status.COMMISSIONING: Status.FAILED_COMMISSIONING,
                    Status.DEPLOYING: Status.FAILED_DEPLOYMENT,
                    Status.RELEASING: Status.FAILED_RELEASING,
                    Status.DISK_ERASING: Status.FAILED_DISK_ERASING,
                }.get(machine.status)
                if failed is not None:
                    if machine.status_timer is not None and machine.status_timer.active():
                        machine.status_timer.cancel()
                    machine.status_timer = None
                    self._fail(machine, failed, f"Failed to power {target} the machine: the BMC did not answer")
            else:
                self._set_power_state(machine, target)

        machine.power_timer = self.clock.callLater(delay, fire)

    def _set_power_state(self, machine: Machine, state: str) -> None:
        if machine.power_state != state:
            machine.power_state = state
            machine.touch()

    # -- network and the rest --------------------------------------------------

    def fabric(self, fabric_id: str) -> dict[str, Any]:
        found = next((f for f in self.network.fabrics if str(f["id"]) == fabric_id), None)
        if found is None:
            raise errors.NotFound.of("Fabric")
        return found

    def vlans(self, fabric_id: str) -> list[dict[str, Any]]:
        return [v for v in self.network.vlans if v["fabric_id"] == self.fabric(fabric_id)["id"]]

    def vlan(self, fabric_id: str, vid: str) -> dict[str, Any]:
        found = next((v for v in self.vlans(fabric_id) if str(v["vid"]) == vid), None)
        if found is None:
            raise errors.NotFound.of("VLAN")
        return found

    def find_one(self, items: list[dict[str, Any]], key: str, value: str, kind: str) -> dict[str, Any]:
        found = next((i for i in items if str(i[key]) == value), None)
        if found is None:
            raise errors.NotFound.of(kind)
        return found

    # -- test and admin hooks --------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Change injected faults now, e.g. ``set_faults(error_rate=0.2, latency=0.5)``."""
        for name, value in changes.items():
            if not hasattr(self.faults, name):
                raise ValueError(f"unknown fault {name!r}")
            if name in ("bmc_failures",):
                value = set(value)
            if name == "failing_actions":
                value = {tuple(v) for v in value}
            if name == "script":
                value = list(value)
                bad = [k for k in value if k not in FAULT_KINDS]
                if bad:
                    raise ValueError(f"unknown scripted faults {bad}; known: {', '.join(FAULT_KINDS)}")
            setattr(self.faults, name, value)
        attrs.validate(self.faults)
        return self.faults

    def script_faults(self, *kinds: str) -> None:
        """Queue one-shot faults for the next API requests (see `Faults.script`)."""
        self.set_faults(script=[*self.faults.script, *kinds])

    def fail_bmc(self, system_id: str, failing: bool = True) -> None:
        self.get(system_id)
        (self.faults.bmc_failures.add if failing else self.faults.bmc_failures.discard)(system_id)

    def fail_next(self, system_id: str, action: str) -> None:
        """Make the next `action` ("commission", "deploy" or "release") of the machine fail."""
        if action not in ("commission", "deploy", "release"):
            raise ValueError(f"action must be commission, deploy or release, not {action!r}")
        self.get(system_id)
        self.faults.failing_actions.add((system_id, action))

    def set_machine(self, system_id: str, **fields: Any) -> Machine:
        """Set a machine's fields directly (status, power_state, owner, power_type, …), for tests."""
        machine = self.get(system_id)
        for name, value in fields.items():
            if name.startswith("_") or not hasattr(machine, name):
                raise ValueError(f"unknown machine field {name!r}")
            setattr(machine, name, value)
        machine.touch()
        return machine

    def find(self, **criteria: Any) -> list[Machine]:
        """Machines whose attributes equal `criteria`, in generation order."""
        return [m for m in self.machines.values() if all(getattr(m, k) == v for k, v in criteria.items())]

    def stop(self) -> None:
        """Cancel every pending change (the simulator is going away)."""
        for machine in self.machines.values():
            for timer in (machine.status_timer, machine.power_timer):
                if timer is not None and timer.active():
                    timer.cancel()
            machine.status_timer = machine.power_timer = None

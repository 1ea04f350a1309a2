"""
`FakeMAASClient`: an in-memory `IMAASClient` over a `MAASSimulator`, with
no HTTP.  It answers from the same state and rules as the HTTP simulator
and raises the same `clusterd.maas.errors`, so code written against
`MAASClient` can be tested synchronously on a `task.Clock`.  The contract
tests run one suite against this and against `MAASClient` + the HTTP
simulator.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Sequence, cast

import attrs
from zope.interface import implementer

from clusterd.maas.errors import error_for_status
from clusterd.maas.interfaces import IMAASClient
from simulators.maas import errors
from simulators.maas.state import MAASSimulator, User

__all__ = ["FakeMAASClient"]


def _values(name: str, value: str | Iterable[str]) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    for item in values:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{name} filter values must be non-empty strings, not {item!r}")
    return values


@implementer(IMAASClient)
@attrs.define(eq=False)
class FakeMAASClient:
    simulator: MAASSimulator
    username: str = "admin"
    #: Every call made, as ``(method name, system_id or None)``, for assertions.
    calls: list[tuple[str, str | None]] = attrs.field(factory=list)
    closed: bool = False

    @property
    def _user(self) -> User:
        return self.simulator.users[self.username]

    def _do(self, call: str, system_id: str | None, action: Any) -> Any:
        self.calls.append((call, system_id))
        try:
            result = action()
        except errors.SimError as e:
            raise error_for_status(e.status, call, e.body()) from None
        return result

    def _machine(self, machine: Any) -> dict[str, Any]:
        return cast("dict[str, Any]", json.loads(self.simulator.machine_json(machine)))

    @staticmethod
    def _copies(items: Any) -> list[dict[str, Any]]:
        """Deep copies, as a client gets: changing them cannot change the simulator."""
        return cast("list[dict[str, Any]]", json.loads(json.dumps(items)))

    async def version(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._do("version", None, self.simulator.version))

    async def whoami(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._do("whoami", None, lambda: self.simulator.whoami(self._user)))

    async def list_machines(
        self,
        *,
        hostname: str | Iterable[str] = (),
        status: str | Iterable[str] = (),
        zone: str | Iterable[str] = (),
        pool: str | Iterable[str] = (),
        tags: str | Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        query = {
            name: _values(name, value)
            for name, value in (("hostname", hostname), ("status", status), ("zone", zone), ("pool", pool), ("tags", tags))
        }
        found = self._do("list_machines", None, lambda: self.simulator.filter_machines(query))
        return cast("list[dict[str, Any]]", json.loads(self.simulator.machines_json(found)))

    async def get_machine(self, system_id: str) -> dict[str, Any]:
        return self._machine(self._do("get_machine", system_id, lambda: self.simulator.get(system_id)))

    async def commission(
        self,
        system_id: str,
        *,
        enable_ssh: bool = False,
        skip_networking: bool = False,
        skip_storage: bool = False,
        testing_scripts: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        params = {
            "enable_ssh": ["1" if enable_ssh else "0"],
            "skip_networking": ["1" if skip_networking else "0"],
            "skip_storage": ["1" if skip_storage else "0"],
        }
        if testing_scripts is not None:
            names = [testing_scripts] if isinstance(testing_scripts, str) else list(testing_scripts)
            params["testing_scripts"] = [",".join(names) if names else "none"]
        return self._machine(
            self._do("commission", system_id, lambda: self.simulator.commission(self._user, system_id, params))
        )

    async def deploy(
        self,
        system_id: str,
        *,
        distro_series: str | None = None,
        hwe_kernel: str | None = None,
        user_data: bytes | None = None,
        hostname: str | None = None,
    ) -> dict[str, Any]:
        if user_data is not None and not isinstance(user_data, (bytes, bytearray)):
            raise TypeError("user_data must be bytes (it is sent base64-encoded)")
        if hostname is not None:
            self._do("update", system_id, lambda: self.simulator.update(self._user, system_id, {"hostname": [hostname]}))
        params: dict[str, list[str]] = {}
        if distro_series is not None:
            params["distro_series"] = [distro_series]
        if hwe_kernel is not None:
            params["hwe_kernel"] = [hwe_kernel]
        if user_data is not None:
            params["user_data"] = [base64.b64encode(bytes(user_data)).decode("ascii")]
        return self._machine(self._do("deploy", system_id, lambda: self.simulator.deploy(self._user, system_id, params)))

    async def release(
        self, system_id: str, *, erase: bool = False, secure_erase: bool = False, quick_erase: bool = False
    ) -> dict[str, Any]:
        params = {
            "erase": [str(erase).lower()],
            "secure_erase": [str(secure_erase).lower()],
            "quick_erase": [str(quick_erase).lower()],
        }
        return self._machine(self._do("release", system_id, lambda: self.simulator.release(self._user, system_id, params)))

    async def power_on(self, system_id: str) -> dict[str, Any]:
        return self._machine(self._do("power_on", system_id, lambda: self.simulator.power_on(self._user, system_id, {})))

    async def power_off(self, system_id: str, *, stop_mode: str = "hard") -> dict[str, Any]:
        if stop_mode not in ("hard", "soft"):
            raise ValueError(f"stop_mode must be 'hard' or 'soft', not {stop_mode!r}")
        machine = self._do(
            "power_off", system_id, lambda: self.simulator.power_off(self._user, system_id, {"stop_mode": [stop_mode]})
        )
        return self._machine(machine if machine is not None else self.simulator.get(system_id))

    async def query_power_state(self, system_id: str) -> str:
        return cast(str, self._do("query_power_state", system_id, lambda: self.simulator.query_power_state(self._user, system_id)))

    async def subnets(self) -> list[dict[str, Any]]:
        return self._copies(self.simulator.network.subnets)

    async def fabrics(self) -> list[dict[str, Any]]:
        return self._copies(self.simulator.network.fabrics)

    async def vlans(self, fabric_id: int | str) -> list[dict[str, Any]]:
        return self._copies(self._do("vlans", None, lambda: self.simulator.vlans(str(fabric_id))))

    async def spaces(self) -> list[dict[str, Any]]:
        return self._copies(self.simulator.network.spaces)

    async def zones(self) -> list[dict[str, Any]]:
        return self._copies(self.simulator.network.zones)

    async def resource_pools(self) -> list[dict[str, Any]]:
        return self._copies(self.simulator.network.pools)

    async def close(self) -> None:
        self.closed = True

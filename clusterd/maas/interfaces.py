"""
What the rest of the cluster needs from MAAS.

`MAASClient` (HTTP) and `simulators.maas.FakeMAASClient` (no network)
both provide `IMAASClient`; one contract test suite runs against both.
Every method is a coroutine function and raises `clusterd.maas.errors.MAASError`
subclasses.  Machines, subnets and the rest are MAAS's own JSON dicts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from zope.interface import Interface

__all__ = ["IMAASClient"]


class IMAASClient(Interface):
    def version() -> Awaitable[dict[str, Any]]:
        """MAAS's version document (anonymous)."""

    def whoami() -> Awaitable[dict[str, Any]]:
        """The user the API key belongs to."""

    def list_machines(
        *,
        hostname: str | Iterable[str] = (),
        status: str | Iterable[str] = (),
        zone: str | Iterable[str] = (),
        pool: str | Iterable[str] = (),
        tags: str | Iterable[str] = (),
    ) -> Awaitable[list[dict[str, Any]]]:
        """Machines, filtered; each filter is a str or a sequence of str (any of them matches)."""

    def get_machine(system_id: str) -> Awaitable[dict[str, Any]]:
        """One machine."""

    def commission(
        system_id: str,
        *,
        enable_ssh: bool = False,
        skip_networking: bool = False,
        skip_storage: bool = False,
        testing_scripts: str | Sequence[str] | None = None,
    ) -> Awaitable[dict[str, Any]]:
        """Start commissioning; the machine as MAAS returned it."""

    def deploy(
        system_id: str,
        *,
        distro_series: str | None = None,
        hwe_kernel: str | None = None,
        user_data: bytes | None = None,
        hostname: str | None = None,
    ) -> Awaitable[dict[str, Any]]:
        """Allocate (when Ready) and deploy; the machine, now Deploying."""

    def release(
        system_id: str, *, erase: bool = False, secure_erase: bool = False, quick_erase: bool = False
    ) -> Awaitable[dict[str, Any]]:
        """Release; idempotent on Ready and Releasing."""

    def power_on(system_id: str) -> Awaitable[dict[str, Any]]:
        """Ask MAAS to power the machine on (it needs an owner)."""

    def power_off(system_id: str, *, stop_mode: str = "hard") -> Awaitable[dict[str, Any]]:
        """Ask MAAS to power the machine off ("soft" or "hard")."""

    def query_power_state(system_id: str) -> Awaitable[str]:
        """Ask the BMC now: "on", "off", "unknown" or "error"."""

    def subnets() -> Awaitable[list[dict[str, Any]]]:
        """All subnets."""

    def fabrics() -> Awaitable[list[dict[str, Any]]]:
        """All fabrics."""

    def vlans(fabric_id: int | str) -> Awaitable[list[dict[str, Any]]]:
        """The VLANs of one fabric."""

    def spaces() -> Awaitable[list[dict[str, Any]]]:
        """All spaces."""

    def zones() -> Awaitable[list[dict[str, Any]]]:
        """All availability zones."""

    def resource_pools() -> Awaitable[list[dict[str, Any]]]:
        """All resource pools."""

    def close() -> Awaitable[None]:
        """Release connections; the client is not used afterwards."""

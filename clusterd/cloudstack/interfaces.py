"""
What the rest of the cluster needs from CloudStack.

`CloudStackClient` provides it over HTTP.  Every method is a coroutine
function raising `clusterd.cloudstack.errors.CloudStackError` subclasses;
zones, VMs, offerings, volumes and tags are CloudStack's own JSON dicts.
Methods that start an async job return only when the job has finished.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from zope.interface import Interface

__all__ = ["ICloudStackClient"]


class ICloudStackClient(Interface):
    def call(command: str, **params: Any) -> Awaitable[Any]:
        """Any API command, signed; the unwrapped answer (a jobid dict for async commands)."""

    def list_capabilities() -> Awaitable[dict[str, Any]]:
        """CloudStack's capabilities: a cheap signed call, for connection tests."""

    def list_zones() -> Awaitable[list[dict[str, Any]]]:
        """All zones."""

    def get_zone(zone_id: str) -> Awaitable[dict[str, Any]]:
        """One zone; `CloudStackNotFound` if there is none."""

    def list_virtual_machines(id: str | None = None) -> Awaitable[list[dict[str, Any]]]:  # noqa: A002
        """VMs (all the caller may see), or the one with `id`."""

    def list_disk_offerings() -> Awaitable[list[dict[str, Any]]]:
        """All disk offerings."""

    def list_volumes(*, tags: Mapping[str, str] | None = None, **filters: Any) -> Awaitable[list[dict[str, Any]]]:
        """Volumes matching CloudStack filters (id, name, zoneid, virtualmachineid, type, keyword) and tags {key: value}."""

    def get_volume(volume_id: str) -> Awaitable[dict[str, Any]]:
        """One volume; `CloudStackNotFound` if there is none."""

    def create_volume(
        name: str,
        zone_id: str,
        disk_offering_id: str | None = None,
        size_gb: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Awaitable[dict[str, Any]]:
        """Create (and tag) a volume; the volume once the job has finished."""

    def attach_volume(volume_id: str, vm_id: str, device_id: int | None = None) -> Awaitable[dict[str, Any]]:
        """Attach; the volume (with deviceid and virtualmachineid) once the job has finished."""

    def detach_volume(volume_id: str) -> Awaitable[dict[str, Any]]:
        """Detach; the volume once the job has finished."""

    def delete_volume(volume_id: str) -> Awaitable[None]:
        """Delete a detached volume (synchronous)."""

    def create_tags(resource_ids: Iterable[str], resource_type: str, tags: Mapping[str, str]) -> Awaitable[None]:
        """Tag resources with {key: value}."""

    def delete_tags(
        resource_ids: Iterable[str], resource_type: str, tags: Mapping[str, str | None] | None = None
    ) -> Awaitable[None]:
        """Remove tags ({key: value}, {key: None} for any value, or None for all)."""

    def list_tags(**filters: Any) -> Awaitable[list[dict[str, Any]]]:
        """Tags (resourceid, resourcetype, key, value filters)."""

    def close() -> Awaitable[None]:
        """Release connections; the client is not used afterwards."""

"""
What the rest of the cluster needs from CloudStack.

`CloudStackClient` provides it over HTTP.  Every method is a coroutine
function raising `clusterd.cloudstack.errors.CloudStackError` subclasses;
zones, VMs, offerings, volumes and tags are CloudStack's own JSON dicts.
Methods that start an async job return only when the job has finished.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["ICloudStackClient"]


class ICloudStackClient(Interface):
    def call(command, **params):  # type: ignore[no-untyped-def]
        """Any API command, signed; the unwrapped answer (a jobid dict for async commands)."""

    def list_zones():  # type: ignore[no-untyped-def]
        """All zones."""

    def get_zone(zone_id):  # type: ignore[no-untyped-def]
        """One zone; `CloudStackNotFound` if there is none."""

    def list_virtual_machines(id=None):  # type: ignore[no-untyped-def]
        """VMs (all the caller may see), or the one with `id`."""

    def list_disk_offerings():  # type: ignore[no-untyped-def]
        """All disk offerings."""

    def list_volumes(*, tags=None, **filters):  # type: ignore[no-untyped-def]
        """Volumes matching CloudStack filters (id, name, zoneid, virtualmachineid, type, keyword) and tags {key: value}."""

    def get_volume(volume_id):  # type: ignore[no-untyped-def]
        """One volume; `CloudStackNotFound` if there is none."""

    def create_volume(name, zone_id, disk_offering_id=None, size_gb=None, tags=None):  # type: ignore[no-untyped-def]
        """Create (and tag) a volume; the volume once the job has finished."""

    def attach_volume(volume_id, vm_id, device_id=None):  # type: ignore[no-untyped-def]
        """Attach; the volume (with deviceid and virtualmachineid) once the job has finished."""

    def detach_volume(volume_id):  # type: ignore[no-untyped-def]
        """Detach; the volume once the job has finished."""

    def delete_volume(volume_id):  # type: ignore[no-untyped-def]
        """Delete a detached volume (synchronous)."""

    def create_tags(resource_ids, resource_type, tags):  # type: ignore[no-untyped-def]
        """Tag resources with {key: value}."""

    def delete_tags(resource_ids, resource_type, tags=None):  # type: ignore[no-untyped-def]
        """Remove tags ({key: value}, {key: None} for any value, or None for all)."""

    def list_tags(**filters):  # type: ignore[no-untyped-def]
        """Tags (resourceid, resourcetype, key, value filters)."""

    def close():  # type: ignore[no-untyped-def]
        """Release connections; the client is not used afterwards."""

"""
The cluster's mounting layer for migration volumes: find the block device a
CloudStack attach made appear, mount it, unmount it, and see it gone after a
detach.

    mounter = RealMounter(reactor)            # or SimulatedMounter(clock)
    before = await mounter.list_devices()
    ...                                       # CloudStack attachVolume
    device = await mounter.find_device(volume_id, before=before, timeout=120)
    info = await mounter.mount(device, f"/mnt/migration/{job}/{disk}", mkfs=True)
    ...
    await mounter.unmount(info.mountpoint)
    ...                                       # CloudStack detachVolume
    await mounter.wait_until_gone(device, timeout=120)
"""

from clusterd.volumes.devices import serial_candidates
from clusterd.volumes.errors import (
    AlreadyMountedElsewhere,
    AmbiguousDevice,
    CommandFailed,
    DeviceNotFound,
    DeviceStillPresent,
    FilesystemMismatch,
    MountError,
    MountpointInUse,
    NoFilesystem,
)
from clusterd.volumes.mount import (
    DEFAULT_FSTYPE,
    IMounter,
    IMounterReactor,
    MountInfo,
    RealMounter,
    SimulatedMounter,
)

__all__ = [
    "DEFAULT_FSTYPE",
    "AlreadyMountedElsewhere",
    "AmbiguousDevice",
    "CommandFailed",
    "DeviceNotFound",
    "DeviceStillPresent",
    "FilesystemMismatch",
    "IMounter",
    "IMounterReactor",
    "MountError",
    "MountInfo",
    "MountpointInUse",
    "NoFilesystem",
    "RealMounter",
    "SimulatedMounter",
    "serial_candidates",
]

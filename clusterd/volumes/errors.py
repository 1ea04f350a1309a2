"""
Errors of the volume mounting layer.

All derive from `MountError` (itself a `ClusterError`), so the lifecycle can
catch one class and undo what it did.  Each carries the facts a log line or an
operator needs (device, mountpoint, argv, exit code, stderr tail) as attributes.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from clusterd.errors import ClusterError

__all__ = [
    "AlreadyMountedElsewhere",
    "AmbiguousDevice",
    "CommandFailed",
    "DeviceNotFound",
    "DeviceStillPresent",
    "FilesystemMismatch",
    "MountError",
    "MountpointInUse",
    "NoFilesystem",
]

#: How much of a command's stderr an error keeps.
STDERR_TAIL = 2000


class MountError(ClusterError):
    """Root of the mounting layer's errors."""


class DeviceNotFound(MountError):
    """No block device for this volume (or path) is present (in time)."""

    def __init__(self, message: str, *, device: str | None = None, volume_id: str | None = None) -> None:
        super().__init__(message)
        self.device = device
        self.volume_id = volume_id

    @classmethod
    def for_device(cls, device: str) -> DeviceNotFound:
        return cls(f"block device {device} is not present", device=device)


class AmbiguousDevice(MountError):
    """Several new block devices appeared and nothing says which one is the volume."""

    def __init__(self, message: str, *, candidates: Iterable[str], volume_id: str | None = None) -> None:
        super().__init__(message)
        self.candidates = tuple(sorted(candidates))
        self.volume_id = volume_id


class DeviceStillPresent(MountError):
    """A detached volume's block device did not go away in time."""

    def __init__(self, device: str, timeout: float) -> None:
        super().__init__(f"block device {device} is still present after {timeout:g}s")
        self.device = device
        self.timeout = timeout


class FilesystemMismatch(MountError):
    """The device holds something other than the filesystem asked for."""

    def __init__(self, message: str, *, device: str, expected: str | None, found: str | None) -> None:
        super().__init__(message)
        self.device = device
        self.expected = expected
        self.found = found


class NoFilesystem(FilesystemMismatch):
    """The device is blank and making a filesystem was not asked for."""

    def __init__(self, device: str, expected: str | None = None) -> None:
        super().__init__(
            f"block device {device} has no filesystem (pass mkfs=True to make one)",
            device=device,
            expected=expected,
            found=None,
        )


class AlreadyMountedElsewhere(MountError):
    """The device is already mounted, at another mountpoint."""

    def __init__(self, device: str, mountpoint: str, wanted: str) -> None:
        super().__init__(f"block device {device} is already mounted at {mountpoint}, not {wanted}")
        self.device = device
        self.mountpoint = mountpoint
        self.wanted = wanted


class MountpointInUse(MountError):
    """Something else is already mounted at the mountpoint (or it is not a directory)."""

    def __init__(self, mountpoint: str, occupant: str) -> None:
        super().__init__(f"{mountpoint} is in use: {occupant}")
        self.mountpoint = mountpoint
        self.occupant = occupant


class CommandFailed(MountError):
    """A util-linux command exited non-zero, was killed, timed out or was not found."""

    def __init__(self, argv: Sequence[str], exit_code: int | None, stderr: str, *, reason: str | None = None) -> None:
        self.argv = tuple(argv)
        self.exit_code = exit_code
        self.stderr = stderr[-STDERR_TAIL:]
        how = reason if reason is not None else f"exited with status {exit_code}"
        tail = self.stderr.strip()
        text = f"{shlex.join(self.argv)} {how}"
        super().__init__(f"{text}: {tail}" if tail else text)

"""
Mounting migration volumes on the cluster's appliance VM.

The CloudStack lifecycle attaches volume V to this VM, then needs the local
block device that appeared (`IMounter.find_device`), a filesystem mounted at
``/mnt/migration/<job>/<disk>`` (`mount`), and, on the way back, the mount gone
(`unmount`) and, after CloudStack's detach, the device gone
(`wait_until_gone` / `device_present`): "the device appeared" is not
"attached", and "CloudStack says detached" is not "gone".

Two implementations share one body of decisions (`_MounterLogic`) and differ
only in their primitives, so they cannot drift apart:

- `RealMounter` reads sysfs and /proc/self/mountinfo and runs util-linux
  (``blkid``, ``mkfs.<type>``, ``mount``, ``umount``) as child processes
  through the injected reactor;
- `SimulatedMounter` keeps fake block devices and mounts in memory, for the
  CloudStack simulator's attach/detach hooks and for tests.

Every operation is idempotent: finding a device that is already there, mounting
what is already mounted there, unmounting what is not mounted all succeed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from clusterd.volumes.devices import (
    BlockDevices,
    MountEntry,
    parse_blkid_export,
    parse_mountinfo,
    serial_candidates,
)
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

__all__ = [
    "DEFAULT_FSTYPE",
    "IMounter",
    "IMounterReactor",
    "MountInfo",
    "RealMounter",
    "SimulatedMounter",
]

#: The filesystem made when mkfs=True and no fstype is given.
DEFAULT_FSTYPE = "ext4"
_OUTPUT_LIMIT = 64 * 1024
#: Stacked mounts unmount one per umount; give up after this many.
_MAX_STACKED = 16
_T = TypeVar("_T")


class IMounter(Interface):
    """Local block devices and mounts for attached volumes; every method is a coroutine."""

    def list_devices() -> Awaitable[frozenset[str]]:
        """
        Paths of the whole disks present now (a frozenset).  Take this before
        asking CloudStack to attach, and pass it to `find_device` as ``before``.
        """

    def find_device(
        volume_id: str | None = None,
        *,
        before: Iterable[str] | None = None,
        hint: str | None = None,
        timeout: float = 60.0,
        interval: float = 0.5,
    ) -> Awaitable[str]:
        """
        The path of the block device for an attached volume, waiting for it up
        to ``timeout`` seconds, polling every ``interval``.

        Tried in this order on every poll:
        1. the disk whose serial matches ``volume_id`` (CloudStack/KVM: the
           uuid without hyphens, first 20 characters);
        2. ``hint`` (a path or kernel name, e.g. derived from the device id),
           if it is present and not in ``before``, and its serial (if any)
           does not name another volume;
        3. the one disk present now and not in ``before`` (disks whose serial
           names another volume are ignored).  Several raise AmbiguousDevice.
        Raises DeviceNotFound at the timeout.  Without ``before``, only 1 and
        2 apply, which makes a re-run after a crash find the same device.
        """

    def device_present(device: str) -> Awaitable[bool]:
        """Whether the block device exists now (a detach is done only when it does not)."""

    def wait_until_gone(device: str, *, timeout: float = 60.0, interval: float = 0.5) -> Awaitable[None]:
        """Return once the device is gone; DeviceStillPresent at the timeout."""

    def mount(
        device: str,
        mountpoint: str,
        *,
        fstype: str | None = None,
        mkfs: bool = False,
        options: Sequence[str] = (),
    ) -> Awaitable[MountInfo]:
        """
        Mount ``device`` at ``mountpoint`` (created if missing) and return its
        MountInfo.  The filesystem is detected; ``fstype``, if given, must
        match it (FilesystemMismatch).  A blank device raises NoFilesystem,
        unless ``mkfs``: then a ``fstype`` (default ext4) filesystem is made.
        A device holding anything is never reformatted.  Already mounted
        there: returns the existing mount, options unchanged.  Mounted
        elsewhere: AlreadyMountedElsewhere; another device mounted there:
        MountpointInUse; device absent: DeviceNotFound.
        """

    def unmount(mountpoint: str) -> Awaitable[None]:
        """Unmount whatever is mounted at ``mountpoint``; not mounted is fine.  The directory stays."""

    def is_mounted(mountpoint: str) -> Awaitable[bool]:
        """Whether something is mounted at ``mountpoint``."""

    def mounted_at(mountpoint: str) -> Awaitable[MountInfo | None]:
        """The MountInfo of what is mounted at ``mountpoint`` (the top one), or None."""


class IMounterReactor(IReactorProcess, IReactorTime):
    """What RealMounter needs of a reactor: child processes and a clock."""


@attrs.frozen
class MountInfo:
    """A mounted filesystem: the device as its canonical path (``/dev/vdb``)."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...] = ()


@attrs.frozen
class _Probe:
    """What is on a device: a filesystem type, a partition table, or neither."""

    fstype: str | None = None
    ptable: str | None = None

    @property
    def blank(self) -> bool:
        return self.fstype is None and self.ptable is None


def _check_mountpoint(mountpoint: str | os.PathLike[str]) -> str:
    text = os.fspath(mountpoint)
    if not os.path.isabs(text):
        raise ValueError(f"mountpoint must be an absolute path, not {text!r}")
    return os.path.normpath(text)


def _check_options(options: Iterable[str]) -> tuple[str, ...]:
    if isinstance(options, str):
        raise TypeError("options is a sequence of option strings, not one string")
    out = tuple(options)
    for option in out:
        if not isinstance(option, str) or not option or "," in option or option.strip() != option:
            raise ValueError(f"bad mount option {option!r}: one option per item, no commas or spaces")
    return out


def _check_fstype(fstype: str | None) -> str | None:
    if fstype is not None and (not fstype or not fstype.replace("_", "").replace(".", "").isalnum()):
        raise ValueError(f"bad filesystem type {fstype!r}")
    return fstype


class _MounterLogic:
    """
    The decisions both mounters make, over a handful of primitives.  A
    subclass provides ``_clock``, ``_lock`` and the ``_`` methods below.
    """

    _clock: IReactorTime
    _lock: DeferredLock

    # -- primitives ---------------------------------------------------------

    def _disks(self) -> frozenset[str]:
        raise NotImplementedError

    def _present(self, device: str) -> bool:
        raise NotImplementedError

    def _canonical(self, device: str) -> str:
        raise NotImplementedError

    def _serial_of(self, device: str) -> str | None:
        raise NotImplementedError

    def _by_serial(self, candidates: tuple[str, ...]) -> str | None:
        raise NotImplementedError

    def _mounts(self) -> list[MountInfo]:
        raise NotImplementedError

    def _real_mountpoint(self, mountpoint: str) -> str:
        raise NotImplementedError

    def _make_dir(self, mountpoint: str) -> None:
        raise NotImplementedError

    async def _probe(self, device: str) -> _Probe:
        raise NotImplementedError

    async def _mkfs(self, device: str, fstype: str) -> None:
        raise NotImplementedError

    async def _mount(self, device: str, mountpoint: str, fstype: str, options: tuple[str, ...]) -> None:
        raise NotImplementedError

    async def _umount(self, mountpoint: str) -> None:
        raise NotImplementedError

    # -- IMounter -----------------------------------------------------------

    async def list_devices(self) -> frozenset[str]:
        return self._disks()

    async def device_present(self, device: str) -> bool:
        return self._present(device)

    async def find_device(
        self,
        volume_id: str | None = None,
        *,
        before: Iterable[str] | None = None,
        hint: str | None = None,
        timeout: float = 60.0,
        interval: float = 0.5,
    ) -> str:
        if volume_id is None and before is None and hint is None:
            raise ValueError("find_device needs a volume_id, a before snapshot or a hint")
        serials = serial_candidates(volume_id) if volume_id else ()
        old = None if before is None else frozenset(self._canonical(d) for d in before)

        def other_volume(device: str) -> bool:
            serial = self._serial_of(device)
            return bool(serials) and serial is not None and serial not in serials

        def look() -> str | None:
            if serials:
                found = self._by_serial(serials)
                if found is not None:
                    return found
            if hint is not None:
                device = self._canonical(hint)
                if self._present(device) and (old is None or device not in old) and not other_volume(device):
                    return device
            if old is not None:
                new = {d for d in self._disks() - old if not other_volume(d)}
                if len(new) > 1:
                    raise AmbiguousDevice(
                        f"several new block devices appeared ({', '.join(sorted(new))}); "
                        f"give a hint or attach one volume at a time",
                        candidates=new,
                        volume_id=volume_id,
                    )
                if new:
                    return new.pop()
            return None

        what = f"volume {volume_id}" if volume_id else f"hint {hint}" if hint else "a new disk"
        found = await self._poll(look, timeout, interval)
        if found is None:
            raise DeviceNotFound(
                f"no block device for {what} appeared within {timeout:g}s", device=hint, volume_id=volume_id
            )
        return found

    async def wait_until_gone(self, device: str, *, timeout: float = 60.0, interval: float = 0.5) -> None:
        gone = await self._poll(lambda: True if not self._present(device) else None, timeout, interval)
        if gone is None:
            raise DeviceStillPresent(device, timeout)

    async def is_mounted(self, mountpoint: str) -> bool:
        return await self.mounted_at(mountpoint) is not None

    async def mounted_at(self, mountpoint: str) -> MountInfo | None:
        where = self._real_mountpoint(_check_mountpoint(mountpoint))
        found = [m for m in self._mounts() if m.mountpoint == where]
        return found[-1] if found else None

    async def mount(
        self,
        device: str,
        mountpoint: str,
        *,
        fstype: str | None = None,
        mkfs: bool = False,
        options: Sequence[str] = (),
    ) -> MountInfo:
        mountpoint = _check_mountpoint(mountpoint)
        opts = _check_options(options)
        _check_fstype(fstype)
        return await self._locked(lambda: self._do_mount(device, mountpoint, fstype, mkfs, opts))

    async def _do_mount(
        self, device: str, mountpoint: str, fstype: str | None, mkfs: bool, options: tuple[str, ...]
    ) -> MountInfo:
        device = self._canonical(device)
        if not self._present(device):
            raise DeviceNotFound.for_device(device)
        where = self._real_mountpoint(mountpoint)
        mounts = self._mounts()
        here = [m for m in mounts if m.mountpoint == where]
        if here:
            top = here[-1]
            if top.device != device:
                raise MountpointInUse(mountpoint, f"{top.device} is mounted there")
            if fstype is not None and top.fstype != fstype:
                raise FilesystemMismatch(
                    f"{device} is mounted at {mountpoint} as {top.fstype}, not {fstype}",
                    device=device,
                    expected=fstype,
                    found=top.fstype,
                )
            return top
        elsewhere = [m for m in mounts if m.device == device]
        if elsewhere:
            raise AlreadyMountedElsewhere(device, elsewhere[0].mountpoint, mountpoint)

        probe = await self._probe(device)
        if probe.ptable is not None and probe.fstype is None:
            raise FilesystemMismatch(
                f"{device} holds a {probe.ptable} partition table, not a filesystem; refusing to use it",
                device=device,
                expected=fstype,
                found=f"partition table {probe.ptable}",
            )
        if probe.fstype is None:
            if not mkfs:
                raise NoFilesystem(device, fstype)
            await self._mkfs(device, fstype or DEFAULT_FSTYPE)
            probe = await self._probe(device)
            if probe.fstype is None:
                raise FilesystemMismatch(
                    f"{device} still shows no filesystem after mkfs", device=device, expected=fstype, found=None
                )
        if fstype is not None and probe.fstype != fstype:
            verb = "refusing to make a new one over it" if mkfs else "refusing to mount it"
            raise FilesystemMismatch(
                f"{device} holds a {probe.fstype} filesystem, not {fstype}; {verb}",
                device=device,
                expected=fstype,
                found=probe.fstype,
            )
        self._make_dir(mountpoint)
        await self._mount(device, mountpoint, probe.fstype, options)
        info = await self.mounted_at(mountpoint)
        if info is None or info.device != device:
            raise MountError(f"mounting {device} at {mountpoint} reported success, but it is not mounted there")
        return info

    async def unmount(self, mountpoint: str) -> None:
        where = _check_mountpoint(mountpoint)
        await self._locked(lambda: self._do_unmount(where))

    async def _do_unmount(self, mountpoint: str) -> None:
        for _ in range(_MAX_STACKED):
            if not await self.is_mounted(mountpoint):
                return
            try:
                await self._umount(mountpoint)
            except CommandFailed:
                # Someone else may have unmounted it meanwhile: that is success.
                if not await self.is_mounted(mountpoint):
                    return
                raise
        raise MountError(f"{mountpoint} is still mounted after {_MAX_STACKED} unmounts")

    # -- helpers ------------------------------------------------------------

    async def _locked(self, work: Callable[[], Awaitable[_T]]) -> _T:
        await self._lock.acquire()
        try:
            return await work()
        finally:
            self._lock.release()

    async def _poll(self, look: Callable[[], _T | None], timeout: float, interval: float) -> _T | None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        deadline = self._clock.seconds() + timeout
        while True:
            found = look()
            if found is not None:
                return found
            remaining = deadline - self._clock.seconds()
            if remaining <= 0:
                return None
            await deferLater(self._clock, min(interval, remaining), lambda: None)


# --------------------------------------------------------------------------
# The real one


@attrs.frozen
class _Result:
    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def failure(self) -> CommandFailed:
        reason = None
        if self.timed_out:
            reason = "timed out and was killed"
        elif self.signal is not None:
            reason = f"was killed by signal {self.signal}"
        return CommandFailed(self.argv, self.exit_code, self.stderr or self.stdout, reason=reason)


class _Collector(ProcessProtocol):
    """Closes the child's stdin (so nothing can prompt), keeps its output, reports its end."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self.err if childFD == 2 else self.out
        buf += data
        del buf[:-_OUTPUT_LIMIT]

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated):
            self.ended.callback((value.exitCode, value.signal))
        else:
            self.ended.callback((0, None))


def _child_env() -> dict[str, str]:
    # util-linux lives in /sbin and /usr/sbin, which a service's PATH may lack;
    # LC_ALL=C keeps messages in English for logs and errors.
    path = os.environ.get("PATH", "")
    extra = [p for p in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin") if p not in path.split(":")]
    return {"PATH": ":".join(filter(None, [path, *extra])), "LC_ALL": "C"}


@implementer(IMounter)
@attrs.define
class RealMounter(_MounterLogic):
    """
    Mounts with util-linux, run as child processes through ``reactor``.
    Needs root (mount, mkfs and blkid -p on a device).  Mount and unmount are
    serialised within one mounter; ``mkfs_cmd`` is formatted with ``fstype``.
    """

    reactor: IMounterReactor
    mount_cmd: str = "mount"
    umount_cmd: str = "umount"
    blkid_cmd: str = "blkid"
    mkfs_cmd: str = "mkfs.{fstype}"
    #: Seconds before a command is killed (mkfs of a big disk is the slow one).
    command_timeout: float = 300.0
    sysfs: Path = attrs.field(default=Path("/sys"), converter=Path)
    devfs: Path = attrs.field(default=Path("/dev"), converter=Path)
    mountinfo: Path = attrs.field(default=Path("/proc/self/mountinfo"), converter=Path)
    _lock: DeferredLock = attrs.field(factory=DeferredLock, init=False)

    @property
    def _clock(self) -> IReactorTime:  # type: ignore[override]
        return self.reactor

    @property
    def _devices(self) -> BlockDevices:
        return BlockDevices(self.sysfs, self.devfs)

    def _disks(self) -> frozenset[str]:
        return self._devices.disks()

    def _present(self, device: str) -> bool:
        return self._devices.present(device)

    def _canonical(self, device: str) -> str:
        return self._devices.path_of(self._devices.kernel_name(device))

    def _serial_of(self, device: str) -> str | None:
        return self._devices.serial(device)

    def _by_serial(self, candidates: tuple[str, ...]) -> str | None:
        return self._devices.find_serial(candidates)

    def _mounts(self) -> list[MountInfo]:
        try:
            text = self.mountinfo.read_text(errors="surrogateescape")
        except OSError as e:
            raise MountError(f"cannot read {self.mountinfo}: {e.strerror}") from e
        return [self._info(entry) for entry in parse_mountinfo(text)]

    def _info(self, entry: MountEntry) -> MountInfo:
        # Name the device by its number, so /dev/disk/by-id/… and /dev/vdb agree.
        name = self._devices.name_of_devno(entry.devno) if entry.source.startswith("/") else None
        device = self._devices.path_of(name) if name else entry.source
        return MountInfo(device=device, mountpoint=entry.mountpoint, fstype=entry.fstype, options=entry.options)

    def _real_mountpoint(self, mountpoint: str) -> str:
        # mountinfo shows resolved paths; /mnt -> /srv/mnt must still match.
        return os.path.realpath(mountpoint)

    def _make_dir(self, mountpoint: str) -> None:
        try:
            os.makedirs(mountpoint, mode=0o755, exist_ok=True)
        except FileExistsError:
            raise MountpointInUse(mountpoint, "it exists and is not a directory") from None
        except OSError as e:
            raise MountError(f"cannot create mountpoint {mountpoint}: {e.strerror}") from e

    async def _probe(self, device: str) -> _Probe:
        # -p probes the device itself, not blkid's cache, and also reports
        # partition tables (PTTYPE); exit 2 means nothing was found.
        result = await self._run(self.blkid_cmd, "-p", "-o", "export", device)
        if result.exit_code == 2:
            return _Probe()
        if result.exit_code == 8:
            raise FilesystemMismatch(
                f"{device} carries several conflicting signatures; refusing to use it",
                device=device,
                expected=None,
                found="ambivalent",
            )
        if not result.ok:
            raise result.failure()
        found = parse_blkid_export(result.stdout)
        return _Probe(fstype=found.get("TYPE") or None, ptable=found.get("PTTYPE") or None)

    async def _mkfs(self, device: str, fstype: str) -> None:
        await self._check(self.mkfs_cmd.format(fstype=fstype), device)

    async def _mount(self, device: str, mountpoint: str, fstype: str, options: tuple[str, ...]) -> None:
        extra = ["-o", ",".join(options)] if options else []
        await self._check(self.mount_cmd, "-t", fstype, *extra, device, mountpoint)

    async def _umount(self, mountpoint: str) -> None:
        await self._check(self.umount_cmd, mountpoint)

    async def _check(self, *argv: str) -> None:
        result = await self._run(*argv)
        if not result.ok:
            raise result.failure()

    async def _run(self, *argv: str) -> _Result:
        env = _child_env()
        executable = shutil.which(argv[0], path=env["PATH"])
        if executable is None:
            raise CommandFailed(argv, None, "", reason="was not found on PATH")
        proto = _Collector()
        process = self.reactor.spawnProcess(proto, executable, list(argv), env=env)
        timed_out = []

        def kill() -> None:
            timed_out.append(True)
            try:
                process.signalProcess("KILL")
            except ProcessExitedAlready:
                pass  # it ended as the timer fired; processEnded reports it

        timer: IDelayedCall = self.reactor.callLater(self.command_timeout, kill)
        try:
            exit_code, signal = await proto.ended
        finally:
            if timer.active():
                timer.cancel()
        return _Result(
            argv=tuple(argv),
            exit_code=exit_code,
            signal=signal,
            stdout=proto.out.decode("utf-8", "replace"),
            stderr=proto.err.decode("utf-8", "replace"),
            timed_out=bool(timed_out),
        )


# --------------------------------------------------------------------------
# The simulated one


@attrs.define
class _SimDevice:
    serial: str | None
    fstype: str | None = None
    ptable: str | None = None


@implementer(IMounter)
@attrs.define
class SimulatedMounter(_MounterLogic):
    """
    Fake block devices and mounts in memory, with the real one's decisions
    and errors.  The CloudStack simulator calls `add_device` when it attaches
    a volume to the appliance VM and `remove_device` when it detaches one.
    Devices are named like the kernel names them (``vdb``); paths are
    ``/dev/<name>``.  Nothing touches the machine's filesystem.
    """

    clock: IReactorTime
    _devices: dict[str, _SimDevice] = attrs.field(factory=dict, init=False)
    _mount_table: list[MountInfo] = attrs.field(factory=list, init=False)
    _dirs: set[str] = attrs.field(factory=set, init=False)
    _failures: dict[str, list[CommandFailed]] = attrs.field(factory=dict, init=False)
    _lock: DeferredLock = attrs.field(factory=DeferredLock, init=False)

    @property
    def _clock(self) -> IReactorTime:  # type: ignore[override]
        return self.clock

    # -- hooks for simulators and tests -------------------------------------

    def add_device(
        self,
        name: str,
        serial: str | None = None,
        *,
        fstype: str | None = None,
        ptable: str | None = None,
        delay: float = 0.0,
    ) -> str:
        """Make a disk appear (after ``delay`` seconds on the clock); its path."""
        name = self._name(name)

        def appear() -> None:
            if name in self._devices:
                raise ValueError(f"block device {name} already exists")
            self._devices[name] = _SimDevice(serial=serial, fstype=fstype, ptable=ptable)

        if delay > 0:
            self.clock.callLater(delay, appear)
        else:
            appear()
        return f"/dev/{name}"

    def remove_device(self, name: str, *, delay: float = 0.0) -> None:
        """
        Make a disk disappear (after ``delay``), as a hot-unplug does: a mount
        of it stays in the table, as the kernel's would, until unmounted.
        Removing a missing device is a no-op.
        """
        name = self._name(name)
        if delay > 0:
            self.clock.callLater(delay, self._devices.pop, name, None)
        else:
            self._devices.pop(name, None)

    def fail_next(self, command: str, *, exit_code: int = 32, stderr: str = "simulated failure") -> None:
        """Make the next run of ``command`` ("blkid", "mkfs", "mount" or "umount") fail."""
        if command not in ("blkid", "mkfs", "mount", "umount"):
            raise ValueError(f"unknown command {command!r}")
        self._failures.setdefault(command, []).append(CommandFailed((command,), exit_code, stderr))

    def filesystem_of(self, device: str) -> str | None:
        dev = self._devices.get(self._name(device))
        return dev.fstype if dev else None

    @property
    def device_names(self) -> frozenset[str]:
        return frozenset(self._devices)

    @staticmethod
    def _name(device: str) -> str:
        return device.removeprefix("/dev/")

    def _fail(self, command: str, *argv: str) -> None:
        pending = self._failures.get(command)
        if pending:
            failure = pending.pop(0)
            raise CommandFailed((command, *argv), failure.exit_code, failure.stderr)

    # -- primitives ---------------------------------------------------------

    def _disks(self) -> frozenset[str]:
        return frozenset(f"/dev/{name}" for name in self._devices)

    def _present(self, device: str) -> bool:
        return self._name(device) in self._devices

    def _canonical(self, device: str) -> str:
        return f"/dev/{self._name(device)}"

    def _serial_of(self, device: str) -> str | None:
        dev = self._devices.get(self._name(device))
        return dev.serial if dev else None

    def _by_serial(self, candidates: tuple[str, ...]) -> str | None:
        for name, dev in sorted(self._devices.items()):
            if dev.serial is not None and dev.serial in candidates:
                return f"/dev/{name}"
        return None

    def _mounts(self) -> list[MountInfo]:
        return list(self._mount_table)

    def _real_mountpoint(self, mountpoint: str) -> str:
        return mountpoint

    def _make_dir(self, mountpoint: str) -> None:
        self._dirs.add(mountpoint)

    async def _probe(self, device: str) -> _Probe:
        self._fail("blkid", "-p", "-o", "export", device)
        dev = self._devices[self._name(device)]
        return _Probe(fstype=dev.fstype, ptable=dev.ptable)

    async def _mkfs(self, device: str, fstype: str) -> None:
        self._fail("mkfs", device)
        self._devices[self._name(device)].fstype = fstype

    async def _mount(self, device: str, mountpoint: str, fstype: str, options: tuple[str, ...]) -> None:
        self._fail("mount", "-t", fstype, device, mountpoint)
        shown = ("rw", *options) if "ro" not in options and "rw" not in options else options
        self._mount_table.append(MountInfo(device=device, mountpoint=mountpoint, fstype=fstype, options=shown))

    async def _umount(self, mountpoint: str) -> None:
        self._fail("umount", mountpoint)
        for i in range(len(self._mount_table) - 1, -1, -1):
            if self._mount_table[i].mountpoint == mountpoint:
                del self._mount_table[i]
                return
        raise CommandFailed(("umount", mountpoint), 32, f"umount: {mountpoint}: not mounted.")

"""
One contract, two mounters: `SimulatedMounter` (in memory) and `RealMounter`
(util-linux on loop devices) must behave the same.

The real side needs root, /dev/loop-control and a kernel that lets this
process mount; `loop_support()` tries it once and the real cases skip with
its reason otherwise.  Loop devices have no serial, so the contract finds
devices by before/after snapshots and hints; serials are covered in
test_mount_simulated.py and (against a fake sysfs tree) test_mount_real.py.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.interfaces import IReactorTime
from zope.interface.verify import verifyObject

from clusterd.volumes import (
    AlreadyMountedElsewhere,
    DeviceNotFound,
    DeviceStillPresent,
    FilesystemMismatch,
    IMounter,
    MountInfo,
    MountpointInUse,
    NoFilesystem,
    RealMounter,
    SimulatedMounter,
)
from clusterd.volumes.devices import parse_mountinfo

DISK_SIZE = 32 * 1024 * 1024
_TOOLS = ("losetup", "mkfs.ext4", "mount", "umount", "blkid")
_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, check=check, timeout=60, stdin=subprocess.DEVNULL,
        env={"PATH": _PATH, "LC_ALL": "C"},
    )  # fmt: skip


@functools.cache
def loop_support() -> str | None:
    """None when loop devices can be made, formatted and mounted here; else why not."""
    if os.geteuid() != 0:
        return "loop device tests need root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (loop driver absent, or not exposed to this container)"
    for tool in _TOOLS:
        if shutil.which(tool, path=_PATH) is None:
            return f"{tool} is not installed"
    with tempfile.TemporaryDirectory(prefix="outpost-loopprobe-") as tmp:
        loops = Loops(Path(tmp))
        try:
            device = loops.attach(fstype="ext4")
            target = Path(tmp) / "mnt"
            target.mkdir()
            _run("mount", device, str(target))
            _run("umount", str(target))
        except (subprocess.SubprocessError, OSError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            return f"loop devices are not usable here: {detail.strip()}"
        finally:
            loops.cleanup()
    return None


@attrs.define
class Loops:
    """Sparse files on loop devices under ``directory``; `cleanup` undoes everything."""

    directory: Path
    files: list[Path] = attrs.field(factory=list)

    def attach(self, fstype: str | None = None) -> str:
        image = self.directory / f"disk{len(self.files)}.img"
        with image.open("wb") as f:
            f.truncate(DISK_SIZE)
        self.files.append(image)
        device = _run("losetup", "--find", "--show", str(image)).stdout.strip()
        if fstype is not None:
            _run(f"mkfs.{fstype}", "-q", device)
        return device

    def write_mbr(self, device: str) -> None:
        """An MBR with one Linux partition entry and the 0x55AA signature."""
        entry = bytes([0, 0, 2, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
        with open(device, "r+b") as f:
            f.seek(446)
            f.write(entry)
            f.seek(510)
            f.write(b"\x55\xaa")

    def detach(self, device: str) -> None:
        _run("losetup", "-d", device)

    def cleanup(self) -> None:
        """Unmount everything under ``directory`` (deepest first), detach our loops."""
        root = os.path.realpath(self.directory)
        with open("/proc/self/mountinfo") as f:
            mounts = [e.mountpoint for e in parse_mountinfo(f.read())]
        for mountpoint in sorted((m for m in mounts if m.startswith(root + "/")), key=len, reverse=True):
            if _run("umount", mountpoint, check=False).returncode != 0:
                _run("umount", "-l", mountpoint, check=False)
        for image in self.files:
            bound = _run("losetup", "-j", str(image), check=False).stdout
            for line in bound.splitlines():
                _run("losetup", "-d", line.split(":", 1)[0], check=False)


@attrs.define
class Subject:
    mounter: Any
    root: Path
    #: Make a blank disk (or one with this filesystem) appear; its path.
    attach: Callable[..., str]
    #: Make a disk go away, as a completed detach does.
    detach: Callable[[str], None]


@pytest_twisted.async_yield_fixture(params=["simulated", "real"])
async def subject(request: Any, tmp_path: Path) -> AsyncIterator[Subject]:
    from twisted.internet import reactor

    clock: IReactorTime = reactor
    if request.param == "simulated":
        sim = SimulatedMounter(clock)
        names = iter(f"vd{c}" for c in "bcdefghijklmnop")

        def sim_attach(fstype: str | None = None) -> str:
            return sim.add_device(next(names), fstype=fstype)

        yield Subject(sim, tmp_path, sim_attach, sim.remove_device)
        return
    reason = loop_support()
    if reason is not None:
        pytest.skip(reason)
    loops = Loops(tmp_path)
    try:
        yield Subject(RealMounter(reactor), tmp_path, loops.attach, loops.detach)  # type: ignore[arg-type]
    finally:
        loops.cleanup()


@pytest_twisted.ensureDeferred
async def test_it_provides_the_interface(subject: Subject) -> None:
    assert verifyObject(IMounter, subject.mounter)


@pytest_twisted.ensureDeferred
async def test_the_disk_that_appeared_after_the_snapshot_is_found_and_finding_again_agrees(subject: Subject) -> None:
    m = subject.mounter
    before = await m.list_devices()
    device = subject.attach()
    if await m.list_devices() - before != {device}:
        pytest.skip("another process attached a disk at the same moment")
    assert device in await m.list_devices()
    assert await m.find_device(before=before, timeout=5, interval=0.05) == device
    assert await m.find_device(before=before, timeout=5, interval=0.05) == device
    assert await m.device_present(device)


@pytest_twisted.ensureDeferred
async def test_a_hint_is_accepted_when_present_and_new(subject: Subject) -> None:
    m = subject.mounter
    device = subject.attach()
    # No snapshot: a re-run after a crash finds the device it was told about.
    assert await m.find_device(hint=device, timeout=1, interval=0.05) == device
    # In the snapshot: it is an old disk, not the one just attached.
    with pytest.raises(DeviceNotFound):
        await m.find_device(hint=device, before=await m.list_devices(), timeout=0.2, interval=0.05)


@pytest_twisted.ensureDeferred
async def test_nothing_appearing_is_device_not_found_at_the_timeout(subject: Subject) -> None:
    m = subject.mounter
    before = await m.list_devices()
    with pytest.raises(DeviceNotFound) as caught:
        await m.find_device("5d8e3a4b-1c2d-4e5f-8a9b-0c1d2e3f4a5b", before=before, timeout=0.2, interval=0.05)
    assert caught.value.volume_id == "5d8e3a4b-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    with pytest.raises(ValueError):
        await m.find_device()


@pytest_twisted.ensureDeferred
async def test_a_blank_disk_is_formatted_only_when_asked_then_mounted(subject: Subject) -> None:
    m = subject.mounter
    device = subject.attach()
    mountpoint = str(subject.root / "mnt" / "migration" / "job-1" / "disk-0")
    with pytest.raises(NoFilesystem) as blank:
        await m.mount(device, mountpoint)
    assert isinstance(blank.value, FilesystemMismatch) and blank.value.found is None
    assert not await m.is_mounted(mountpoint)

    info = await m.mount(device, mountpoint, mkfs=True, options=("noatime",))
    assert (info.device, info.mountpoint, info.fstype) == (device, mountpoint, "ext4")
    assert "noatime" in info.options
    assert await m.is_mounted(mountpoint)
    assert await m.mounted_at(mountpoint) == info
    # Mounting it again is a no-op that answers the same.
    assert await m.mount(device, mountpoint, mkfs=True) == info
    assert await m.mount(device, mountpoint, fstype="ext4") == info


@pytest_twisted.ensureDeferred
async def test_an_existing_filesystem_is_detected_and_never_reformatted(subject: Subject) -> None:
    m = subject.mounter
    device = subject.attach(fstype="ext4")
    mountpoint = str(subject.root / "a")
    with pytest.raises(FilesystemMismatch) as wrong:
        await m.mount(device, mountpoint, fstype="xfs")
    assert (wrong.value.expected, wrong.value.found) == ("xfs", "ext4")
    with pytest.raises(FilesystemMismatch):
        await m.mount(device, mountpoint, fstype="ext3", mkfs=True)
    assert not await m.is_mounted(mountpoint)
    info = await m.mount(device, mountpoint, mkfs=True)
    assert info.fstype == "ext4"


@pytest_twisted.ensureDeferred
async def test_one_device_one_mountpoint(subject: Subject) -> None:
    m = subject.mounter
    first, second = subject.attach(fstype="ext4"), subject.attach(fstype="ext4")
    a, b = str(subject.root / "a"), str(subject.root / "b")
    await m.mount(first, a)
    with pytest.raises(AlreadyMountedElsewhere) as elsewhere:
        await m.mount(first, b)
    assert (elsewhere.value.device, elsewhere.value.mountpoint) == (first, a)
    with pytest.raises(MountpointInUse):
        await m.mount(second, a)
    assert (await m.mounted_at(a)).device == first
    assert not await m.is_mounted(b)


@pytest_twisted.ensureDeferred
async def test_unmount_is_idempotent(subject: Subject) -> None:
    m = subject.mounter
    device = subject.attach(fstype="ext4")
    mountpoint = str(subject.root / "x")
    await m.unmount(str(subject.root / "never" / "existed"))
    await m.unmount(str(subject.root))
    await m.mount(device, mountpoint)
    await m.unmount(mountpoint)
    assert not await m.is_mounted(mountpoint)
    assert await m.mounted_at(mountpoint) is None
    await m.unmount(mountpoint)
    # And it mounts again after.
    assert (await m.mount(device, mountpoint)).device == device


@pytest_twisted.ensureDeferred
async def test_a_detached_device_is_gone_and_cannot_be_mounted(subject: Subject) -> None:
    m = subject.mounter
    device = subject.attach(fstype="ext4")
    assert await m.device_present(device)
    subject.detach(device)
    assert not await m.device_present(device)
    assert device not in await m.list_devices()
    await m.wait_until_gone(device, timeout=1, interval=0.05)
    with pytest.raises(DeviceNotFound) as missing:
        await m.mount(device, str(subject.root / "gone"))
    assert missing.value.device == device


@pytest_twisted.ensureDeferred
async def test_a_present_device_is_still_present_at_the_timeout(subject: Subject) -> None:
    device = subject.attach()
    with pytest.raises(DeviceStillPresent):
        await subject.mounter.wait_until_gone(device, timeout=0.2, interval=0.05)


@pytest_twisted.ensureDeferred
async def test_bad_arguments_are_refused_before_anything_runs(subject: Subject) -> None:
    m = subject.mounter
    device = subject.attach()
    with pytest.raises(ValueError):
        await m.mount(device, "relative/path", mkfs=True)
    with pytest.raises(ValueError):
        await m.mount(device, str(subject.root / "o"), mkfs=True, options=("ro,nosuid",))
    with pytest.raises(TypeError):
        await m.mount(device, str(subject.root / "o"), mkfs=True, options="ro")
    with pytest.raises(ValueError):
        await m.mount(device, str(subject.root / "o"), fstype="ext4 -o x", mkfs=True)
    with pytest.raises(NoFilesystem):
        await m.mount(device, str(subject.root / "o"))


def test_mount_info_is_a_value() -> None:
    assert MountInfo("/dev/vdb", "/mnt/a", "ext4", ("rw",)) == MountInfo("/dev/vdb", "/mnt/a", "ext4", ("rw",))

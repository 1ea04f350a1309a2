"""
RealMounter beyond the contract: the whole lifecycle on a loop device (root
only, skipped with the reason otherwise), and, with no root needed, device
discovery against a fake sysfs/devfs tree and error mapping with stand-in
commands.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import attrs
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from clusterd.volumes import (
    AmbiguousDevice,
    CommandFailed,
    DeviceNotFound,
    FilesystemMismatch,
    IMounterReactor,
    MountpointInUse,
    NoFilesystem,
    RealMounter,
    serial_candidates,
)
from clusterd.volumes.devices import BlockDevices, parse_mountinfo, unescape_mount_field
from tests.test_mount_contract import Loops, loop_support

VOLUME = "5d8e3a4b-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
OTHER = "0a0b0c0d-1111-2222-3333-444455556666"


def reactor() -> IMounterReactor:
    """The running reactor (pytest-twisted's); tests may use it, the module may not."""
    from twisted.internet import reactor as r

    return cast(IMounterReactor, r)


# -- on a loop device ------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def loops(tmp_path: Path) -> AsyncIterator[Loops]:
    reason = loop_support()
    if reason is not None:
        pytest.skip(reason)
    loops = Loops(tmp_path)
    try:
        yield loops
    finally:
        loops.cleanup()


@pytest_twisted.ensureDeferred
async def test_loop_device_lifecycle_attach_find_format_mount_write_unmount_detach(loops: Loops, tmp_path: Path) -> None:
    m = RealMounter(reactor())
    before = await m.list_devices()
    device = loops.attach()
    found = await m.find_device(VOLUME, before=before, hint=device, timeout=5, interval=0.05)
    assert found == device

    mountpoint = tmp_path / "mnt" / "migration" / "job-7" / "disk-0"
    info = await m.mount(found, str(mountpoint), mkfs=True)
    assert info.fstype == "ext4" and mountpoint.is_dir()
    assert await m.is_mounted(str(mountpoint))
    (mountpoint / "data.bin").write_bytes(b"migrated")
    await m.unmount(str(mountpoint))
    assert not await m.is_mounted(str(mountpoint))
    assert not (mountpoint / "data.bin").exists()

    # A re-run of the mount step (mkfs=True again) keeps the data.
    await m.mount(found, str(mountpoint), mkfs=True)
    assert (mountpoint / "data.bin").read_bytes() == b"migrated"
    await m.unmount(str(mountpoint))

    loops.detach(device)
    await m.wait_until_gone(device, timeout=5, interval=0.05)
    assert not await m.device_present(device)


@pytest_twisted.ensureDeferred
async def test_mounting_through_a_symlink_names_the_kernel_device(loops: Loops, tmp_path: Path) -> None:
    m = RealMounter(reactor())
    device = loops.attach(fstype="ext4")
    link = tmp_path / "by-id-link"
    link.symlink_to(device)
    info = await m.mount(str(link), str(tmp_path / "m"))
    assert info.device == device
    assert await m.mount(device, str(tmp_path / "m")) == info


@pytest_twisted.ensureDeferred
async def test_a_partitioned_disk_is_not_mounted_or_formatted(loops: Loops, tmp_path: Path) -> None:
    m = RealMounter(reactor())
    device = loops.attach()
    loops.write_mbr(device)
    with pytest.raises(FilesystemMismatch) as caught:
        await m.mount(device, str(tmp_path / "p"), mkfs=True)
    assert "partition table" in str(caught.value)


# -- against a fake sysfs/devfs tree (no root needed) ----------------------


@attrs.define
class FakeTree:
    """/sys, /dev and a mountinfo file under one directory."""

    root: Path

    @property
    def sysfs(self) -> Path:
        return self.root / "sys"

    @property
    def devfs(self) -> Path:
        return self.root / "dev"

    @property
    def mountinfo(self) -> Path:
        return self.root / "mountinfo"

    def disk(self, name: str, *, size: int = 2048, serial: str | None = None, devno: str = "252:0") -> str:
        entry = self.sysfs / "block" / name
        entry.mkdir(parents=True)
        (entry / "size").write_text(f"{size}\n")
        (entry / "dev").write_text(f"{devno}\n")
        if serial is not None:
            (entry / "serial").write_text(serial)
        (self.sysfs / "class" / "block").mkdir(parents=True, exist_ok=True)
        (self.sysfs / "class" / "block" / name).symlink_to(entry)
        (self.sysfs / "dev" / "block").mkdir(parents=True, exist_ok=True)
        (self.sysfs / "dev" / "block" / devno).symlink_to(entry)
        self.devfs.mkdir(exist_ok=True)
        (self.devfs / name).touch()
        return str(self.devfs / name)

    def by_id(self, link: str, name: str) -> None:
        by_id = self.devfs / "disk" / "by-id"
        by_id.mkdir(parents=True, exist_ok=True)
        (by_id / link).symlink_to(f"../../{name}")

    def unplug(self, name: str) -> None:
        (self.sysfs / "block" / name / "size").write_text("0\n")

    def command(self, name: str, script: str) -> str:
        path = self.root / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("#!/bin/sh\n" + script + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def mounter(self, **kwargs: object) -> RealMounter:
        if not self.mountinfo.exists():
            self.mountinfo.write_text("")
        return RealMounter(reactor(), sysfs=self.sysfs, devfs=self.devfs, mountinfo=self.mountinfo, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def tree(tmp_path: Path) -> FakeTree:
    return FakeTree(tmp_path)


def test_cloudstack_serials_are_the_uuid_without_hyphens_then_the_legacy_cut() -> None:
    assert serial_candidates(VOLUME) == ("5d8e3a4b1c2d4e5f8a9b", "5d8e3a4b-1c2d-4e5f-8")
    assert serial_candidates("short") == ("short",)


@pytest_twisted.ensureDeferred
async def test_the_by_id_serial_link_wins_over_before_and_after(tree: FakeTree) -> None:
    tree.disk("vda", serial="root")
    m = tree.mounter()
    before = await m.list_devices()
    tree.disk("vdb", devno="252:16")
    tree.disk("vdc", devno="252:32")
    tree.by_id("virtio-5d8e3a4b1c2d4e5f8a9b", "vdc")
    assert await m.find_device(VOLUME, before=before, timeout=1, interval=0.05) == str(tree.devfs / "vdc")


@pytest_twisted.ensureDeferred
async def test_the_sysfs_serial_is_used_without_udev_in_either_form(tree: FakeTree) -> None:
    tree.disk("vdb", serial="5d8e3a4b-1c2d-4e5f-8", devno="252:16")
    tree.disk("vdc", serial="0a0b0c0d111122223333", devno="252:32")
    m = tree.mounter()
    assert await m.find_device(VOLUME, timeout=0.5, interval=0.05) == str(tree.devfs / "vdb")
    assert await m.find_device(OTHER, timeout=0.5, interval=0.05) == str(tree.devfs / "vdc")


@pytest_twisted.ensureDeferred
async def test_new_disks_whose_serial_names_another_volume_are_not_taken(tree: FakeTree) -> None:
    m = tree.mounter()
    before = await m.list_devices()
    tree.disk("vdb", serial="0a0b0c0d111122223333", devno="252:16")
    tree.disk("vdc", devno="252:32")
    assert await m.find_device(VOLUME, before=before, timeout=0.5, interval=0.05) == str(tree.devfs / "vdc")
    with pytest.raises(AmbiguousDevice) as caught:
        await m.find_device(before=before, timeout=0.5, interval=0.05)
    assert caught.value.candidates == (str(tree.devfs / "vdb"), str(tree.devfs / "vdc"))


@pytest_twisted.ensureDeferred
async def test_an_unbound_loop_or_unplugged_disk_is_not_present(tree: FakeTree) -> None:
    tree.disk("loop0", size=0, devno="7:0")
    vdb = tree.disk("vdb", devno="252:16")
    m = tree.mounter()
    assert await m.list_devices() == {vdb}
    assert not await m.device_present(str(tree.devfs / "loop0"))
    assert await m.device_present(vdb) and await m.device_present("vdb")
    tree.unplug("vdb")
    assert not await m.device_present(vdb)
    assert not await m.device_present(str(tree.devfs / "nosuch"))


@pytest_twisted.ensureDeferred
async def test_mountinfo_escapes_and_device_numbers_are_understood(tree: FakeTree, tmp_path: Path) -> None:
    vdb = tree.disk("vdb", devno="252:16")
    target = tmp_path / "with space"
    escaped = str(target).replace(" ", "\\040")
    tree.mountinfo.write_text(
        "1 0 0:21 / / rw - overlay overlay rw\n"
        f"42 1 252:16 / {escaped} rw,relatime - ext4 /dev/disk/by-id/virtio-x rw\n"
    )
    m = tree.mounter()
    info = await m.mounted_at(str(target))
    assert info is not None and (info.device, info.fstype, info.options) == (vdb, "ext4", ("rw", "relatime"))
    assert await m.is_mounted(str(target) + "/")
    assert not await m.is_mounted(str(tmp_path))


@pytest_twisted.ensureDeferred
async def test_a_failing_mount_is_command_failed_with_argv_exit_code_and_stderr(tree: FakeTree, tmp_path: Path) -> None:
    vdb = tree.disk("vdb", devno="252:16")
    m = tree.mounter(
        blkid_cmd=tree.command("blkid", "echo DEVNAME=$4; echo TYPE=ext4"),
        mount_cmd=tree.command("mount", "echo 'mount: wrong fs type, bad superblock' >&2; exit 32"),
    )
    target = str(tmp_path / "t")
    with pytest.raises(CommandFailed) as caught:
        await m.mount(vdb, target)
    err = caught.value
    assert err.argv == (m.mount_cmd, "-t", "ext4", vdb, target)
    assert err.exit_code == 32 and "bad superblock" in err.stderr and "bad superblock" in str(err)


@pytest_twisted.ensureDeferred
async def test_blkid_answers_map_to_blank_partitioned_or_failed(tree: FakeTree, tmp_path: Path) -> None:
    vdb = tree.disk("vdb", devno="252:16")
    target = str(tmp_path / "t")
    blank = tree.mounter(blkid_cmd=tree.command("blank", "exit 2"))
    with pytest.raises(NoFilesystem):
        await blank.mount(vdb, target)
    ptable = tree.mounter(blkid_cmd=tree.command("ptable", "echo PTTYPE=gpt"))
    with pytest.raises(FilesystemMismatch, match="gpt partition table"):
        await ptable.mount(vdb, target, mkfs=True)
    broken = tree.mounter(blkid_cmd=tree.command("broken", "echo 'blkid: error' >&2; exit 4"))
    with pytest.raises(CommandFailed) as caught:
        await broken.mount(vdb, target)
    assert caught.value.exit_code == 4


@pytest_twisted.ensureDeferred
async def test_a_hung_command_is_killed_at_the_timeout(tree: FakeTree, tmp_path: Path) -> None:
    vdb = tree.disk("vdb", devno="252:16")
    m = tree.mounter(blkid_cmd=tree.command("hang", "exec sleep 30"), command_timeout=0.3)
    with pytest.raises(CommandFailed, match="timed out") as caught:
        await m.mount(vdb, str(tmp_path / "t"))
    assert caught.value.exit_code is None


@pytest_twisted.ensureDeferred
async def test_a_missing_command_is_command_failed(tree: FakeTree, tmp_path: Path) -> None:
    vdb = tree.disk("vdb", devno="252:16")
    m = tree.mounter(blkid_cmd="no-such-blkid-here")
    with pytest.raises(CommandFailed, match="not found"):
        await m.mount(vdb, str(tmp_path / "t"))


@pytest_twisted.ensureDeferred
async def test_a_mountpoint_that_is_a_file_is_refused(tree: FakeTree, tmp_path: Path) -> None:
    vdb = tree.disk("vdb", devno="252:16")
    (tmp_path / "file").write_text("x")
    m = tree.mounter(blkid_cmd=tree.command("blkid", "echo TYPE=ext4"), mount_cmd="false")
    with pytest.raises(MountpointInUse, match="not a directory"):
        await m.mount(vdb, str(tmp_path / "file"))


@pytest_twisted.ensureDeferred
async def test_find_device_of_a_missing_hint_is_device_not_found(tree: FakeTree) -> None:
    m = tree.mounter()
    with pytest.raises(DeviceNotFound):
        await m.find_device(hint="vdz", timeout=0.1, interval=0.05)


def test_a_kernel_name_is_found_through_symlinks_and_subdirectories(tree: FakeTree) -> None:
    tree.disk("vdb", devno="252:16")
    tree.by_id("virtio-abc", "vdb")
    devices = BlockDevices(tree.sysfs, tree.devfs)
    assert devices.kernel_name(str(tree.devfs / "disk" / "by-id" / "virtio-abc")) == "vdb"
    assert devices.kernel_name(str(tree.devfs / "cciss" / "c0d0")) == "cciss!c0d0"
    assert devices.path_of("cciss!c0d0") == str(tree.devfs / "cciss" / "c0d0")


def _kernel_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch)
    return "".join(out)


@given(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1))
def test_mountinfo_fields_unescape_what_the_kernel_escapes(path: str) -> None:
    assert unescape_mount_field(_kernel_escape(path)) == path


@given(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1))
def test_a_mountpoint_with_any_characters_parses_back(name: str) -> None:
    line = f"7 1 8:1 / /mnt/{_kernel_escape(name)} rw - ext4 /dev/sda1 rw\n"
    (entry,) = parse_mountinfo(line)
    assert entry.mountpoint == f"/mnt/{name}"
    assert os.path.isabs(entry.mountpoint)

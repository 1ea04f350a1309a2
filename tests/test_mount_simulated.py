"""
SimulatedMounter on a `task.Clock`: waiting, serials, the simulator hooks and
fault injection, deterministic and synchronous.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from clusterd.volumes import (
    AmbiguousDevice,
    CommandFailed,
    DeviceNotFound,
    DeviceStillPresent,
    FilesystemMismatch,
    MountInfo,
    SimulatedMounter,
)
from tests.deferreds import result

VOLUME = "5d8e3a4b-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
SERIAL = "5d8e3a4b1c2d4e5f8a9b"
_T = TypeVar("_T")


def start(coro: Coroutine[Any, Any, _T]) -> Deferred[_T]:
    return ensureDeferred(coro)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> SimulatedMounter:
    m = SimulatedMounter(clock)
    m.add_device("vda", "root-disk", fstype="ext4")
    return m


def test_find_device_waits_for_the_disk_to_appear(sim: SimulatedMounter, clock: Clock) -> None:
    before = result(start(sim.list_devices()))
    sim.add_device("vdb", delay=2.5)
    d = start(sim.find_device(before=before, timeout=10, interval=1))
    clock.advance(2)
    assert not d.called
    clock.advance(1)
    assert result(d) == "/dev/vdb"


def test_find_device_gives_up_at_the_deadline_not_before(sim: SimulatedMounter, clock: Clock) -> None:
    d = start(sim.find_device(VOLUME, timeout=5, interval=2))
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    with pytest.raises(DeviceNotFound, match="within 5s"):
        result(d)


def test_the_serial_finds_the_volume_among_several_new_disks(sim: SimulatedMounter) -> None:
    before = result(start(sim.list_devices()))
    sim.add_device("vdb", "0a0b0c0d111122223333")
    sim.add_device("vdc", SERIAL)
    sim.add_device("vdd", "5d8e3a4b-1c2d-4e5f-8")  # the legacy serial form
    assert result(start(sim.find_device(VOLUME, before=before, timeout=0, interval=1))) in {"/dev/vdc", "/dev/vdd"}
    sim.remove_device("vdc")
    assert result(start(sim.find_device(VOLUME, before=before, timeout=0, interval=1))) == "/dev/vdd"


def test_several_new_disks_without_serials_are_ambiguous_unless_hinted(sim: SimulatedMounter) -> None:
    before = result(start(sim.list_devices()))
    sim.add_device("vdb")
    sim.add_device("vdc")
    with pytest.raises(AmbiguousDevice) as caught:
        result(start(sim.find_device(VOLUME, before=before, timeout=0, interval=1)))
    assert caught.value.candidates == ("/dev/vdb", "/dev/vdc")
    assert result(start(sim.find_device(VOLUME, before=before, hint="vdc", timeout=0, interval=1))) == "/dev/vdc"


def test_a_hint_whose_serial_names_another_volume_is_refused(sim: SimulatedMounter) -> None:
    sim.add_device("vdb", "0a0b0c0d111122223333")
    with pytest.raises(DeviceNotFound):
        result(start(sim.find_device(VOLUME, hint="/dev/vdb", timeout=0, interval=1)))


def test_detach_is_done_only_when_the_device_has_gone(sim: SimulatedMounter, clock: Clock) -> None:
    device = sim.add_device("vdb", SERIAL)
    sim.remove_device("vdb", delay=3)
    d = start(sim.wait_until_gone(device, timeout=10, interval=1))
    clock.advance(2)
    assert not d.called and result(start(sim.device_present(device)))
    clock.advance(1)
    assert result(d) is None
    sim.add_device("vdb")
    late = start(sim.wait_until_gone("/dev/vdb", timeout=2, interval=1))
    clock.advance(2)
    with pytest.raises(DeviceStillPresent):
        result(late)


def test_mkfs_makes_the_filesystem_asked_for_and_only_once(sim: SimulatedMounter) -> None:
    sim.add_device("vdb")
    info = result(start(sim.mount("/dev/vdb", "/mnt/migration/j/d0", fstype="xfs", mkfs=True)))
    assert info == MountInfo("/dev/vdb", "/mnt/migration/j/d0", "xfs", ("rw",))
    assert sim.filesystem_of("vdb") == "xfs"
    result(start(sim.unmount("/mnt/migration/j/d0")))
    with pytest.raises(FilesystemMismatch):
        result(start(sim.mount("vdb", "/mnt/migration/j/d0", fstype="ext4", mkfs=True)))
    assert sim.filesystem_of("vdb") == "xfs"


def test_an_injected_failure_surfaces_as_command_failed_and_leaves_nothing_mounted(sim: SimulatedMounter) -> None:
    sim.add_device("vdb", fstype="ext4")
    sim.fail_next("mount", exit_code=32, stderr="mount: /mnt/x: wrong fs type")
    with pytest.raises(CommandFailed) as caught:
        result(start(sim.mount("vdb", "/mnt/x")))
    assert caught.value.argv == ("mount", "-t", "ext4", "/dev/vdb", "/mnt/x")
    assert caught.value.exit_code == 32 and "wrong fs type" in caught.value.stderr
    assert not result(start(sim.is_mounted("/mnt/x")))
    assert result(start(sim.mount("vdb", "/mnt/x"))).device == "/dev/vdb"
    with pytest.raises(ValueError):
        sim.fail_next("fsck")


def test_a_failed_umount_of_a_mount_still_there_is_reported(sim: SimulatedMounter) -> None:
    sim.add_device("vdb", fstype="ext4")
    result(start(sim.mount("vdb", "/mnt/x")))
    sim.fail_next("umount", stderr="umount: /mnt/x: target is busy.")
    with pytest.raises(CommandFailed, match="target is busy"):
        result(start(sim.unmount("/mnt/x")))
    assert result(start(sim.is_mounted("/mnt/x")))
    result(start(sim.unmount("/mnt/x")))
    assert not result(start(sim.is_mounted("/mnt/x")))


def test_a_hot_unplugged_disk_stays_mounted_until_unmounted(sim: SimulatedMounter) -> None:
    sim.add_device("vdb", fstype="ext4")
    result(start(sim.mount("vdb", "/mnt/x")))
    sim.remove_device("vdb")
    sim.remove_device("vdb")
    assert not result(start(sim.device_present("vdb")))
    assert result(start(sim.is_mounted("/mnt/x")))
    result(start(sim.unmount("/mnt/x")))
    assert sim.device_names == {"vda"}


def test_a_partitioned_disk_is_refused(sim: SimulatedMounter) -> None:
    sim.add_device("vdb", ptable="gpt")
    with pytest.raises(FilesystemMismatch, match="partition table"):
        result(start(sim.mount("vdb", "/mnt/p", mkfs=True)))


def test_mounts_on_one_mounter_run_one_at_a_time(sim: SimulatedMounter) -> None:
    sim.add_device("vdb", fstype="ext4")
    gate: Deferred[None] = Deferred()
    original = sim._probe

    async def slow_probe(device: str) -> Any:
        await gate
        return await original(device)

    sim._probe = slow_probe  # type: ignore[method-assign]
    first = start(sim.mount("vdb", "/mnt/x"))
    second = start(sim.mount("vdb", "/mnt/x"))
    assert not first.called and not second.called
    gate.callback(None)
    assert result(first) == result(second)

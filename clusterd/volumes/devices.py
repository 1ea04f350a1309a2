"""
What the kernel says about block devices and mounts, read synchronously.

These are small reads of sysfs and procfs (kernel memory, never a disk), so the
real mounter calls them in the reactor thread.  The roots are parameters so a
test can point them at a fake tree.

Facts this relies on (checked on Debian with util-linux):

- ``/sys/block`` lists whole disks, including unbound loop devices (size 0);
  a disk counts as present only when its ``size`` is above zero.
- ``/sys/class/block`` also lists partitions; ``/sys/dev/block/MAJ:MIN`` links
  a device number (as in mountinfo) to its kernel name.
- virtio-blk exposes the disk serial as ``/sys/block/vdX/serial``; udev, when
  it runs, also links ``/dev/disk/by-id/virtio-<serial>``.
- CloudStack on KVM sets the serial to the volume uuid without hyphens, cut to
  20 characters (``diskUuidToSerial``); older releases cut the uuid with its
  hyphens.  Both are tried.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import attrs

__all__ = [
    "BlockDevices",
    "MountEntry",
    "parse_blkid_export",
    "parse_mountinfo",
    "serial_candidates",
    "unescape_mount_field",
]

#: virtio-blk serials are at most 20 bytes (VIRTIO_BLK_ID_BYTES).
SERIAL_LENGTH = 20
#: How udev names the by-id links of virtio-blk and virtio-scsi (QEMU) disks.
BY_ID_PREFIXES = ("virtio-", "scsi-0QEMU_QEMU_HARDDISK_", "scsi-")


def serial_candidates(volume_id: str) -> tuple[str, ...]:
    """The serials a CloudStack volume can show in the guest, current form first."""
    volume_id = volume_id.strip()
    out: list[str] = []
    for serial in (volume_id.replace("-", "")[:SERIAL_LENGTH], volume_id[:SERIAL_LENGTH]):
        if serial and serial not in out:
            out.append(serial)
    return tuple(out)


def unescape_mount_field(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012``, ``\\134``)."""
    if "\\" not in field:
        return field
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        chunk = raw[i + 1 : i + 4]
        if raw[i] == 0x5C and len(chunk) == 3 and all(0x30 <= c <= 0x37 for c in chunk):
            out.append(int(chunk, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


@attrs.frozen
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    devno: str  # "MAJ:MIN"
    root: str
    mountpoint: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo (proc(5)); malformed lines are skipped."""
    entries = []
    # Only "\n" ends a line: the kernel escapes it in paths, but not \x0b,
    # \x1c or \u2028, which str.splitlines() would also split on.
    for line in text.split("\n"):
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    devno=fields[2],
                    root=unescape_mount_field(fields[3]),
                    mountpoint=unescape_mount_field(fields[4]),
                    options=tuple(fields[5].split(",")),
                    fstype=fields[sep + 1],
                    source=unescape_mount_field(fields[sep + 2]),
                    super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


def parse_blkid_export(text: str) -> dict[str, str]:
    """``blkid -o export`` output as a dict (TYPE, PTTYPE, UUID, ...)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


@attrs.frozen
class BlockDevices:
    """Block devices as sysfs and devfs show them, under configurable roots."""

    sysfs: Path = attrs.field(default=Path("/sys"), converter=Path)
    devfs: Path = attrs.field(default=Path("/dev"), converter=Path)

    def kernel_name(self, device: str) -> str:
        """``/dev/vdb``, ``vdb`` or a symlink to it (by-id, mapper) → ``vdb``."""
        if "/" not in device:
            return device
        path = Path(os.path.realpath(device))
        try:
            rel = path.relative_to(os.path.realpath(self.devfs))
        except ValueError:
            return path.name
        # sysfs spells subdirectories of /dev with "!" (cciss/c0d0 → cciss!c0d0).
        return str(rel).replace("/", "!")

    def path_of(self, name: str) -> str:
        return str(self.devfs / name.replace("!", "/"))

    def _size(self, entry: Path) -> int:
        try:
            return int((entry / "size").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def present(self, device: str) -> bool:
        """Whether the kernel has this disk or partition now, with a size above zero."""
        return self._size(self.sysfs / "class" / "block" / self.kernel_name(device)) > 0

    def disks(self) -> frozenset[str]:
        """Paths of the present whole disks (what appears when a volume is attached)."""
        try:
            entries = list((self.sysfs / "block").iterdir())
        except OSError:
            return frozenset()
        return frozenset(self.path_of(e.name) for e in entries if self._size(e) > 0)

    def devno(self, device: str) -> str | None:
        """The device number "MAJ:MIN", as mountinfo shows it."""
        try:
            return (self.sysfs / "class" / "block" / self.kernel_name(device) / "dev").read_text().strip()
        except OSError:
            return None

    def name_of_devno(self, devno: str) -> str | None:
        link = self.sysfs / "dev" / "block" / devno
        return Path(os.path.realpath(link)).name if link.exists() else None

    def serial(self, device: str) -> str | None:
        """The disk's serial as the kernel reports it (virtio-blk), if any."""
        entry = self.sysfs / "block" / self.kernel_name(device)
        for path in (entry / "serial", entry / "device" / "serial"):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return text
        return None

    def find_serial(self, candidates: Iterable[str]) -> str | None:
        """The path of the present disk with one of these serials: by-id first, then sysfs."""
        candidates = tuple(candidates)
        by_id = self.devfs / "disk" / "by-id"
        for serial in candidates:
            for prefix in BY_ID_PREFIXES:
                link = by_id / f"{prefix}{serial}"
                if link.exists():
                    name = self.kernel_name(str(link))
                    if self.present(name):
                        return self.path_of(name)
        for path in sorted(self.disks()):
            if self.serial(path) in candidates:
                return path
        return None

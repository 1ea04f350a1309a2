"""
Writing a private file so that a crash leaves the old contents or the new,
never a mix: a temporary file beside it (mode 0600 whatever the umask),
fsync, rename over the file, fsync of the directory.  The cluster's journal,
the maas driver's state and the RPC secret file are written this way.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_private_atomically"]


def write_private_atomically(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """
    Replace `path` with `data`, mode 0600; with `owner` (uid, gid), owned so
    (``PermissionError`` if this process may not).  Nothing is left behind on failure.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

"""
The shared RPC secret: at least 16 random bytes, hex-encoded in a 0600 file.

The region creates it on first start; operators copy it to each cluster.
The secret itself is never logged: only the file's path is.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["SecretError", "MIN_BYTES", "load_secret", "load_or_create_secret", "read_private_file", "write_secret"]

MIN_BYTES = 16
NEW_BYTES = 32


class SecretError(Exception):
    """The secret file is missing, unreadable, too open or malformed."""


def read_private_file(path: Path, what: str = "secret file") -> str:
    """
    The stripped text of `path`, which must be readable by its owner only;
    `SecretError` says what is wrong (never what the file holds).
    """
    try:
        st = path.stat()
        text = path.read_text("utf-8").strip()
    except FileNotFoundError:
        raise SecretError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{what} {path} is readable by others; chmod 600 {path}")
    return text


def load_secret(path: Path) -> bytes:
    """Read and check the secret at `path`."""
    text = read_private_file(path)
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise SecretError(f"secret file {path} does not hold hex") from None
    if len(secret) < MIN_BYTES:
        raise SecretError(f"secret in {path} is {len(secret)} bytes; at least {MIN_BYTES} are needed")
    return secret


def write_secret(path: Path, secret: bytes) -> None:
    """Write `secret` to `path` with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    os.replace(tmp, path)


def load_or_create_secret(path: Path) -> tuple[bytes, bool]:
    """The secret at `path`, creating a new random one if there is none; (secret, created)."""
    if path.exists():
        return load_secret(path), False
    secret = secrets.token_bytes(NEW_BYTES)
    write_secret(path, secret)
    return secret, True

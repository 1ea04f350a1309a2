"""The cluster's local state directory: its identity, kept across restarts."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["load_or_create_uuid"]


def load_or_create_uuid(state_dir: Path) -> str:
    """This cluster's uuid: made once, then read from ``<state_dir>/cluster.uuid``."""
    path = state_dir / "cluster.uuid"
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except FileNotFoundError:
        pass
    except ValueError:
        raise ValueError(f"{path} does not hold a UUID; fix or remove it") from None
    state_dir.mkdir(parents=True, exist_ok=True)
    new = str(uuid.uuid4())
    tmp = path.with_name(f".cluster.uuid.{os.getpid()}")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new

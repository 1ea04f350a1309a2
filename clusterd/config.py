"""
The cluster daemon's configuration.

Example::

    name: site-1                       # default: this host's short name
    state_dir: /var/lib/outpost/cluster
    secret_file: /var/lib/outpost/cluster/secret   # default <state_dir>/secret
    regions:                           # any region process's API URL; the rest are discovered
      - http://region.example:5240/
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import attrs

from outpost.config import ConfigError, Field, http_url, list_of, load_section, optional, parse_yaml, string

__all__ = ["ClusterConfig", "load_config", "ConfigError"]

DEFAULT_STATE_DIR = "/var/lib/outpost/cluster"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def default_name() -> str:
    return socket.gethostname().split(".")[0] or "cluster"


def cluster_name(value: Any) -> str:
    string(value)
    if not _NAME.fullmatch(value):
        raise ValueError(f"must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, not {value!r}")
    return value


def _path(value: Any) -> Path:
    return Path(string(value)).absolute()


@attrs.frozen
class ClusterConfig:
    regions: tuple[str, ...]
    name: str = attrs.field(factory=default_name)
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    secret_file: Path | None = None

    @property
    def secret_path(self) -> Path:
        return self.secret_file or self.state_dir / "secret"


def load_config(text: str, overrides: dict[str, Any] | None = None) -> ClusterConfig:
    """
    Parse and validate a cluster YAML document, with command-line
    `overrides` (same keys) taking precedence; raises `ConfigError` listing
    every problem.
    """
    data = parse_yaml(text)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    problems: list[str] = []
    values = load_section(
        data,
        "",
        [
            Field("regions", list_of(http_url, min_items=1)),
            Field("name", cluster_name, None),
            Field("state_dir", _path, Path(DEFAULT_STATE_DIR)),
            Field("secret_file", optional(_path), None),
        ],
        problems,
    )
    if problems:
        raise ConfigError(problems)
    return ClusterConfig(
        regions=tuple(values["regions"]),
        name=values["name"] or default_name(),
        state_dir=values["state_dir"],
        secret_file=values["secret_file"],
    )

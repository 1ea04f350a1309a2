"""
The cluster daemon's configuration.

Example::

    name: site-1                       # default: this host's short name
    state_dir: /var/lib/outpost/cluster
    secret_file: /var/lib/outpost/cluster/secret   # default <state_dir>/secret
    regions:                           # any region process's API URL; the rest are discovered
      - http://region.example:5240/
    maas:                              # this site's MAAS (optional; see clusterd.maas.config)
      url: http://maas.example:5240/MAAS/
      api_key_file: /etc/outpost/maas.key
    simulate:                          # instead of a real MAAS: a simulated one in this process
      maas: {machines: 20, seed: 0, speed: 1.0}
      devices: false                   # simulated block devices following a CloudStack that runs elsewhere
      cloudstack:                      # a simulated CloudStack here, with simulated block devices
        listen: tcp:8080:interface=127.0.0.1
        api_key: ...
        secret_key: ...
        job_duration: 1.0
      vim:                             # a simulated VIM here; the simulated driver is pointed at it
        listen: tcp:0:interface=127.0.0.1
        create_duration: 2.0           # seconds an infrastructure takes to create
        delete_duration: 1.0           # ... and to delete
        capacity: null                 # at most this many live infrastructures (null: no limit)
    infrastructure:                    # Ignition-style infrastructure work (see clusterd.infrastructure)
      drivers:                         # per deploymentLocation.type: that driver's settings
        simulated: {url: http://127.0.0.1:8092/}   # a VIM elsewhere; with simulate.vim leave url out
        maas: {}                       # types not listed get {}; a site's own plugins are configured here too
      monitor:
        interval: 1.0                  # first poll of an accepted task after this many seconds,
        max_interval: 30.0             # then doubling up to this; reports to the region retry alike
    volumes:
      mount_root: /mnt/migration
      orphans: report                  # job volumes the region does not track, found at start: report or clean
    metrics:
      listen: null                     # e.g. tcp:9106:interface=127.0.0.1: serve GET /metrics there
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import attrs

from clusterd.infrastructure.registry import LOCATION_TYPE
from clusterd.maas.config import MAASConfig, parse_maas_config
from outpost.config import (
    ConfigError,
    Field,
    boolean,
    http_url,
    int_between,
    list_of,
    load_section,
    optional,
    parse_yaml,
    positive_float,
    server_endpoint,
    string,
)

__all__ = ["ClusterConfig", "load_config", "ConfigError"]

DEFAULT_STATE_DIR = "/var/lib/outpost/cluster"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def default_name() -> str:
    return socket.gethostname().split(".")[0] or "cluster"


def cluster_name(value: Any) -> str:
    name = string(value)
    if not _NAME.fullmatch(name):
        raise ValueError(f"must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, not {name!r}")
    return name


def _orphan_policy(value: Any) -> str:
    if value not in ("report", "clean"):
        raise ValueError(f"must be report or clean, not {value!r}")
    return str(value)


def _absolute_dir(value: Any) -> str:
    string(value)
    if not value.startswith("/") or "\x00" in value:
        raise ValueError(f"must be an absolute path, not {value!r}")
    return value.rstrip("/") or "/"


def _path(value: Any) -> Path:
    return Path(string(value)).absolute()


@attrs.frozen
class SimulatedMAAS:
    machines: int = 20
    seed: int = 0
    #: Multiplies the simulator's transition durations (0.1: ten times faster).
    speed: float = 1.0


@attrs.frozen
class SimulatedCloudStack:
    listen: str = "tcp:0:interface=127.0.0.1"
    api_key: str = attrs.field(default="simulated-api-key", repr=False)
    secret_key: str = attrs.field(default="simulated-secret-key", repr=False)
    job_duration: float = 1.0


@attrs.frozen
class SimulatedVIM:
    listen: str = "tcp:0:interface=127.0.0.1"
    create_duration: float = 2.0
    delete_duration: float = 1.0
    #: At most this many live infrastructures (None: no limit); creates beyond it fail INSUFFICIENT_CAPACITY.
    capacity: int | None = None


@attrs.frozen
class InfrastructureConfig:
    #: Location type -> that driver's settings (its `DriverContext.config`).
    drivers: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Seconds to the first poll of an accepted task (and to the first report retry), doubled up to `max_interval`.
    interval: float = 1.0
    max_interval: float = 30.0


def _driver_settings(value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of location type to settings, not {type(value).__name__}")
    settings, bad = {}, []
    for name, options in value.items():
        if not isinstance(name, str) or not LOCATION_TYPE.fullmatch(name):
            bad.append(f"{name!r} is not a location type (1-64 letters, digits, '.', '_' or '-')")
        elif options is not None and not isinstance(options, dict):
            bad.append(f"{name}: settings must be a mapping, not {type(options).__name__}")
        else:
            settings[name] = dict(options or {})
    if bad:
        raise ValueError("; ".join(bad))
    return settings


def _poll_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.01 <= value <= 3600:
        raise ValueError(f"must be a number of seconds from 0.01 to 3600, not {value!r}")
    return float(value)


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
        raise ValueError(f"must be a number of seconds from 0 to 86400, not {value!r}")
    return float(value)


@attrs.frozen
class ClusterConfig:
    regions: tuple[str, ...]
    name: str = attrs.field(factory=default_name)
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    secret_file: Path | None = None
    maas: MAASConfig | None = None
    simulate_maas: SimulatedMAAS | None = None
    simulate_cloudstack: SimulatedCloudStack | None = None
    mount_root: str = "/mnt/migration"
    #: Simulated block devices that follow CloudStack's attachments (its simulator running elsewhere).
    simulate_devices: bool = False
    #: Orphaned job volumes found at start: "report" them, or "clean" them up.
    orphans: str = "report"
    #: Server endpoint of a small listener serving GET /metrics; None: no listener.
    metrics_listen: str | None = None
    infrastructure: InfrastructureConfig = attrs.field(factory=InfrastructureConfig)
    #: A simulated VIM in this process, which the ``simulated`` driver is pointed at.
    simulate_vim: SimulatedVIM | None = None

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
            Field("maas", lambda v: v, None),
            Field("simulate", lambda v: v, None),
            Field("volumes", lambda v: v, None),
            Field("metrics", lambda v: v, None),
            Field("infrastructure", lambda v: v, None),
        ],
        problems,
    )
    maas = parse_maas_config(values["maas"], problems)
    simulate_maas = None
    simulate = load_section(
        values["simulate"], "simulate",
        [Field("maas", lambda v: v, None), Field("cloudstack", lambda v: v, None), Field("devices", boolean, False),
         Field("vim", lambda v: v, None)], problems,
    )
    simulate_cloudstack = None
    if simulate["cloudstack"] is not None:
        sim_cs = load_section(
            simulate["cloudstack"] if simulate["cloudstack"] is not True else {},
            "simulate.cloudstack",
            [Field("listen", server_endpoint, "tcp:0:interface=127.0.0.1"), Field("api_key", string, "simulated-api-key"),
             Field("secret_key", string, "simulated-secret-key"), Field("job_duration", positive_float, 1.0)],
            problems,
        )
        simulate_cloudstack = SimulatedCloudStack(**sim_cs)
    volumes = load_section(
        values["volumes"], "volumes",
        [Field("mount_root", _absolute_dir, "/mnt/migration"), Field("orphans", _orphan_policy, "report")], problems,
    )
    metrics = load_section(values["metrics"], "metrics", [Field("listen", optional(server_endpoint), None)], problems)
    infrastructure, simulate_vim = _infrastructure(values["infrastructure"], simulate["vim"], problems)
    if simulate["maas"] is not None:
        sim = load_section(
            simulate["maas"] if simulate["maas"] is not True else {},
            "simulate.maas",
            [Field("machines", int_between(0, 100_000), 20), Field("seed", int_between(0, 2**31), 0),
             Field("speed", positive_float, 1.0)],
            problems,
        )
        simulate_maas = SimulatedMAAS(**sim)
        if values["maas"] is not None:
            problems.append("simulate.maas: a cluster has a real MAAS (maas:) or a simulated one, not both")
    if problems:
        raise ConfigError(problems)
    return ClusterConfig(
        regions=tuple(values["regions"]),
        name=values["name"] or default_name(),
        state_dir=values["state_dir"],
        secret_file=values["secret_file"],
        maas=maas,
        simulate_maas=simulate_maas,
        simulate_cloudstack=simulate_cloudstack,
        mount_root=volumes["mount_root"],
        orphans=volumes["orphans"],
        simulate_devices=simulate["devices"],
        metrics_listen=metrics["listen"],
        infrastructure=infrastructure,
        simulate_vim=simulate_vim,
    )


def _infrastructure(section: Any, vim: Any, problems: list[str]) -> tuple[InfrastructureConfig, SimulatedVIM | None]:
    """The ``infrastructure:`` section and ``simulate.vim``."""
    values = load_section(
        section, "infrastructure", [Field("drivers", _driver_settings, {}), Field("monitor", lambda v: v, None)], problems
    )
    monitor = load_section(
        values["monitor"], "infrastructure.monitor",
        [Field("interval", _poll_seconds, 1.0), Field("max_interval", _poll_seconds, 30.0)], problems,
    )
    if monitor["interval"] > monitor["max_interval"]:
        problems.append(f"infrastructure.monitor.interval: must not be above max_interval ({monitor['max_interval']:g})")
    simulate_vim = None
    if vim is not None and vim is not False:
        sim = load_section(
            vim if vim is not True else {}, "simulate.vim",
            [Field("listen", server_endpoint, "tcp:0:interface=127.0.0.1"), Field("create_duration", _duration, 2.0),
             Field("delete_duration", _duration, 1.0), Field("capacity", optional(int_between(0, 1_000_000)), None)],
            problems,
        )
        simulate_vim = SimulatedVIM(**sim)
        if "url" in values["drivers"].get("simulated", {}):
            problems.append("simulate.vim: the simulated driver uses a simulated VIM here or the one at "
                            "infrastructure.drivers.simulated.url, not both")
    config = InfrastructureConfig(drivers=values["drivers"], interval=monitor["interval"], max_interval=monitor["max_interval"])
    return config, simulate_vim

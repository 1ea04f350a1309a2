"""
The region daemon's configuration.

Example (every key optional; these are the defaults)::

    state_dir: /var/lib/outpost/region
    secret_file: null          # default <state_dir>/secret
    database:
      dsn: null                # null: a private PostgreSQL in <state_dir>/postgres
      pool_size: 8
    rpc:
      listen: tcp:5250:interface=127.0.0.1
      advertise: null          # host clusters dial; default: the listen interface
    http:
      listen: tcp:5240:interface=127.0.0.1
    maas:
      sync_interval: 300       # seconds between full inventory syncs
      transitional_interval: 15  # seconds between polls of machines mid-transition
      webhook_secret_file: null  # hex secret for POST /api/v1/webhooks/maas/{cluster}
    storage: null              # the CSCS storage resources API fed from Waldur (see README)
    metrics:
      require_token: false     # true: GET /metrics needs a token (any role)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from regiond.storage import StorageConfig, parse_storage_config
from outpost.config import (
    ConfigError,
    Field,
    boolean,
    load_section,
    optional,
    parse_yaml,
    positive_float,
    int_between,
    server_endpoint,
    string,
)

__all__ = [
    "RegionConfig", "DatabaseConfig", "RPCConfig", "HTTPConfig", "MAASConfig", "MetricsConfig", "load_config", "ConfigError",
]

DEFAULT_STATE_DIR = "/var/lib/outpost/region"


@attrs.frozen
class DatabaseConfig:
    dsn: str | None = None
    pool_size: int = 8


DEFAULT_RPC_LISTEN = "tcp:5250:interface=127.0.0.1"
DEFAULT_HTTP_LISTEN = "tcp:5240:interface=127.0.0.1"


@attrs.frozen
class RPCConfig:
    listen: str = DEFAULT_RPC_LISTEN
    advertise: str | None = None


@attrs.frozen
class HTTPConfig:
    listen: str = DEFAULT_HTTP_LISTEN


@attrs.frozen
class MAASConfig:
    sync_interval: float = 300.0
    transitional_interval: float = 15.0
    webhook_secret_file: Path | None = None


@attrs.frozen
class MetricsConfig:
    #: GET /metrics is open by default (like /api/v1/health); true makes it need a token.
    require_token: bool = False


@attrs.frozen
class RegionConfig:
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    secret_file: Path | None = None
    database: DatabaseConfig = DatabaseConfig()
    rpc: RPCConfig = RPCConfig()
    http: HTTPConfig = HTTPConfig()
    maas: MAASConfig = MAASConfig()
    storage: StorageConfig | None = None
    metrics: MetricsConfig = MetricsConfig()

    @property
    def secret_path(self) -> Path:
        return self.secret_file or self.state_dir / "secret"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"


def _path(value: Any) -> Path:
    return Path(string(value)).absolute()


def load_config(text: str) -> RegionConfig:
    """Parse and validate a region YAML document; raises `ConfigError` listing every problem."""
    data = parse_yaml(text)
    problems: list[str] = []
    top = load_section(
        data,
        "",
        [
            Field("state_dir", _path, Path(DEFAULT_STATE_DIR)),
            Field("secret_file", optional(_path), None),
            Field("database", lambda v: v, None),
            Field("rpc", lambda v: v, None),
            Field("http", lambda v: v, None),
            Field("maas", lambda v: v, None),
            Field("storage", lambda v: v, None),
            Field("metrics", lambda v: v, None),
        ],
        problems,
    )
    database = load_section(
        top["database"],
        "database",
        [Field("dsn", optional(string), None), Field("pool_size", int_between(1, 100), 8)],
        problems,
    )
    rpc = load_section(
        top["rpc"],
        "rpc",
        [Field("listen", server_endpoint, DEFAULT_RPC_LISTEN), Field("advertise", optional(string), None)],
        problems,
    )
    http = load_section(top["http"], "http", [Field("listen", server_endpoint, DEFAULT_HTTP_LISTEN)], problems)
    maas = load_section(
        top["maas"],
        "maas",
        [
            Field("sync_interval", positive_float, 300.0),
            Field("transitional_interval", positive_float, 15.0),
            Field("webhook_secret_file", optional(_path), None),
        ],
        problems,
    )
    storage = parse_storage_config(top["storage"], problems)
    metrics = load_section(top["metrics"], "metrics", [Field("require_token", boolean, False)], problems)
    if problems:
        raise ConfigError(problems)
    return RegionConfig(
        state_dir=top["state_dir"],
        secret_file=top["secret_file"],
        database=DatabaseConfig(**database),
        rpc=RPCConfig(**rpc),
        http=HTTPConfig(**http),
        maas=MAASConfig(**maas),
        storage=storage,
        metrics=MetricsConfig(**metrics),
    )

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
    webhooks: []               # outgoing webhooks: the event log POSTed as it grows, e.g.
    # - url: https://hooks.example/outpost          # http:// or https://; each URL once
    #   secret_file: /etc/outpost/hook.secret       # hex, at least 16 bytes, mode 0600: signs each body
    #   types: [infrastructure.task]                 # type names, or prefixes ending in "." (machine.);
    #                                                # the default is [infrastructure.task]

The secret files are read when the region starts (a missing, unreadable or
too open one stops it with a message naming the key), not when this file is
parsed, so that the admin command can read the same file as another user.
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
    http_url,
    list_of,
    server_endpoint,
    string,
)

__all__ = [
    "RegionConfig", "DatabaseConfig", "RPCConfig", "HTTPConfig", "MAASConfig", "MetricsConfig", "WebhookConfig", "load_config", "ConfigError",
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


#: What a webhook is sent when its ``types`` are not given.
DEFAULT_WEBHOOK_TYPES = ("infrastructure.task",)


@attrs.frozen
class WebhookConfig:
    """One outgoing webhook (its secret is read at start: `regiond.webhooks.load_webhooks`)."""

    url: str
    secret_file: Path
    #: Event type names, and prefixes ending in "." matching every type under them.
    types: tuple[str, ...] = DEFAULT_WEBHOOK_TYPES


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
    webhooks: tuple[WebhookConfig, ...] = ()

    @property
    def secret_path(self) -> Path:
        return self.secret_file or self.state_dir / "secret"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"


def _path(value: Any) -> Path:
    return Path(string(value)).absolute()


def _event_type(value: Any) -> str:
    text = string(value)
    if len(text) > 255 or any(c.isspace() for c in text):
        raise ValueError(f"must be an event type or a prefix ending in '.', without spaces, not {text!r}")
    return text


def _webhook_types(value: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(list_of(_event_type, min_items=1)(value)))


def _webhooks(data: Any, problems: list[str]) -> tuple[WebhookConfig, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        problems.append(f"webhooks: must be a list of mappings (url, secret_file, types), not {type(data).__name__}")
        return ()
    hooks: list[WebhookConfig] = []
    for index, item in enumerate(data):
        path = f"webhooks[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{path}: must be a mapping (url, secret_file, types), not {type(item).__name__}")
            continue
        before = len(problems)
        values = load_section(
            item, path,
            [Field("url", http_url), Field("secret_file", _path), Field("types", _webhook_types, DEFAULT_WEBHOOK_TYPES)],
            problems,
        )
        if len(problems) > before:
            continue
        if any(hook.url == values["url"] for hook in hooks):
            # Delivery progress is kept per URL: one URL, one webhook.
            problems.append(f"{path}.url: {values['url']} is configured more than once")
            continue
        hooks.append(WebhookConfig(**values))
    return tuple(hooks)


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
            Field("webhooks", lambda v: v, None),
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
    webhooks = _webhooks(top["webhooks"], problems)
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
        webhooks=webhooks,
    )

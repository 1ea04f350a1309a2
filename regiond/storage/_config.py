"""
The ``storage:`` section of the region's configuration.

The keys are the CSCS storage proxy's own (``waldur_api_url``,
``waldur_api_token``, ``storage_systems``, ``backend_settings``,
``backend_components``, ``hpc_user_api``), so a proxy configuration
moves over nearly unchanged; ``waldur_timeout`` and ``waldur_retries``
are ours.  Example::

    storage:
      waldur_api_url: https://waldur.example.org/api/
      waldur_api_token: 0123abcd...
      storage_systems: {capstor: capstor, vast: vast, iopsstor: iopsstor}
      backend_settings:
        storage_file_system: lustre
        inode_soft_coefficient: 1.33
        inode_hard_coefficient: 2.0
        inode_base_multiplier: 1000000
        use_mock_target_items: false
        development_mode: false
      backend_components:
        storage: {measured_unit: TB, accounting_type: limit, label: Storage, unit_factor: 1}
      hpc_user_api:                 # optional
        api_url: https://hpc-user-api.example.org
        client_id: outpost
        client_secret: ...
        oidc_token_url: https://auth.example.org/realms/cscs/protocol/openid-connect/token
        oidc_scope: openid
      waldur_timeout: 30            # seconds per request to Waldur
      waldur_retries: 2             # retries of a failed or timed-out GET

Secrets (``waldur_api_token``, ``hpc_user_api.client_secret``) are kept out
of every ``repr``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import attrs

from outpost.config import Field, boolean, http_url, int_between, load_section, positive_float, string

__all__ = ["StorageConfig", "BackendSettings", "HpcUserApiConfig", "parse_storage_config", "DEFAULT_COMPONENTS"]

DEFAULT_COMPONENTS: Mapping[str, Mapping[str, Any]] = {
    "storage": {"measured_unit": "TB", "accounting_type": "limit", "label": "Storage", "unit_factor": 1}
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Keys the CSCS proxy accepts that we refuse, each with the reason.
_REFUSED_TOP = {
    "auth": "not used: the region authenticates clients with its own bearer tokens (role read)",
    "waldur_socks_proxy": "SOCKS proxies are not supported; reach Waldur directly",
    "waldur_verify_ssl": "not supported: HTTPS certificates are always verified",
}
_REFUSED_HPC = {"socks_proxy": "SOCKS proxies are not supported; reach the HPC User API directly"}
#: The proxy's legacy ``backend_settings`` keys for the HPC User API → their place now.
_LEGACY_BACKEND = {
    "hpc_user_api_url": "storage.hpc_user_api.api_url",
    "hpc_user_client_id": "storage.hpc_user_api.client_id",
    "hpc_user_client_secret": "storage.hpc_user_api.client_secret",
    "hpc_user_oidc_token_url": "storage.hpc_user_api.oidc_token_url",
    "hpc_user_oidc_scope": "storage.hpc_user_api.oidc_scope",
    "hpc_user_socks_proxy": "nowhere (SOCKS proxies are not supported)",
}


def _positive_number(value: Any) -> int | float:
    """A number above 0, kept as given (an int stays an int, as the proxy echoes it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"must be a number above 0, not {value!r}")
    return value


def _secret(value: Any) -> str:
    """A non-empty string; the message never repeats the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string (a {type(value).__name__} was given; its value is not shown)")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what} must be letters, digits, '.', '_' or '-' (no commas or spaces), not {value!r}")
    return value


@attrs.frozen
class BackendSettings:
    storage_file_system: str = "lustre"
    inode_soft_coefficient: int | float = 1.33
    inode_hard_coefficient: int | float = 2.0
    inode_base_multiplier: int | float = 1_000_000
    use_mock_target_items: bool = False
    development_mode: bool = False

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class HpcUserApiConfig:
    api_url: str
    client_id: str
    client_secret: str = attrs.field(repr=False)
    oidc_token_url: str
    oidc_scope: str = "openid"
    timeout: float = 30.0


@attrs.frozen
class StorageConfig:
    waldur_api_url: str
    waldur_api_token: str = attrs.field(repr=False)
    #: storage system name (the ``storage_system`` query value) → Waldur offering slug.
    storage_systems: Mapping[str, str] = attrs.field(converter=dict)
    backend_settings: BackendSettings = BackendSettings()
    backend_components: Mapping[str, Mapping[str, Any]] = attrs.field(converter=dict, factory=lambda: dict(DEFAULT_COMPONENTS))
    hpc_user_api: HpcUserApiConfig | None = None
    waldur_timeout: float = 30.0
    waldur_retries: int = 2

    @property
    def offering_slugs(self) -> list[str]:
        return list(self.storage_systems.values())


def _storage_systems(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"must be a mapping of storage system name to Waldur offering slug, with at least one entry, not {value!r}")
    bad = []
    out: dict[str, str] = {}
    for name, slug in value.items():
        try:
            out[_name(name, "a name")] = _name(slug, f"the offering slug of {name!r}")
        except ValueError as e:
            bad.append(str(e))
    if bad:
        raise ValueError("; ".join(bad))
    return out


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or isinstance(value, float) and math.isfinite(value)


def _components(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of component name to its settings, not {value!r}")
    if "storage" not in value:
        raise ValueError("needs a 'storage' component (quotas are read from the storage limit)")
    out: dict[str, dict[str, Any]] = {}
    for name, settings in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"component names must be non-empty strings, not {name!r}")
        if not isinstance(settings, dict) or not all(isinstance(k, str) and _scalar(v) for k, v in settings.items()):
            raise ValueError(f"component {name!r} must map setting names to strings, numbers or booleans")
        out[name] = dict(settings)
    return out


def _mapping(value: Any) -> Any:
    return value


def _refuse(data: dict[str, Any], refused: Mapping[str, str], prefix: str, problems: list[str]) -> dict[str, Any]:
    for key, reason in refused.items():
        if key in data:
            problems.append(f"{prefix}.{key}: {reason}")
    return {k: v for k, v in data.items() if k not in refused}


def _backend_settings(data: Any, problems: list[str]) -> BackendSettings:
    path = "storage.backend_settings"
    if isinstance(data, dict):
        for key, place in _LEGACY_BACKEND.items():
            if key in data:
                problems.append(f"{path}.{key}: the legacy location; move it to {place}")
        data = {k: v for k, v in data.items() if k not in _LEGACY_BACKEND}
    defaults = BackendSettings()
    values = load_section(
        data,
        path,
        [
            Field("storage_file_system", string, defaults.storage_file_system),
            Field("inode_soft_coefficient", _positive_number, defaults.inode_soft_coefficient),
            Field("inode_hard_coefficient", _positive_number, defaults.inode_hard_coefficient),
            Field("inode_base_multiplier", _positive_number, defaults.inode_base_multiplier),
            Field("use_mock_target_items", boolean, defaults.use_mock_target_items),
            Field("development_mode", boolean, defaults.development_mode),
        ],
        problems,
    )
    if values["inode_hard_coefficient"] < values["inode_soft_coefficient"]:
        problems.append(
            f"{path}.inode_hard_coefficient: must be at least inode_soft_coefficient "
            f"({values['inode_hard_coefficient']!r} < {values['inode_soft_coefficient']!r})"
        )
    return BackendSettings(**values)


def _hpc_user_api(data: Any, problems: list[str]) -> HpcUserApiConfig | None:
    path = "storage.hpc_user_api"
    if data is None:
        return None
    if isinstance(data, dict):
        data = _refuse(data, _REFUSED_HPC, path, problems)
    before = len(problems)
    values = load_section(
        data,
        path,
        [
            Field("api_url", http_url),
            Field("client_id", string),
            Field("client_secret", _secret),
            Field("oidc_token_url", http_url),
            Field("oidc_scope", string, "openid"),
            Field("timeout", positive_float, 30.0),
        ],
        problems,
    )
    if len(problems) > before:
        return None
    return HpcUserApiConfig(**values)


def parse_storage_config(data: Any, problems: list[str]) -> StorageConfig | None:
    """
    Validate the ``storage:`` section (`data` is its value).

    Appends every problem to `problems` with its dotted key
    (``storage.waldur_api_url: required``) and returns None when there is
    any, or when the section is absent (`data` is None).
    """
    if data is None:
        return None
    before = len(problems)
    if isinstance(data, dict):
        data = _refuse(data, _REFUSED_TOP, "storage", problems)
    top = load_section(
        data,
        "storage",
        [
            Field("waldur_api_url", http_url),
            Field("waldur_api_token", _secret),
            Field("storage_systems", _storage_systems),
            Field("backend_settings", _mapping, None),
            Field("backend_components", _components, None),
            Field("hpc_user_api", _mapping, None),
            Field("waldur_timeout", positive_float, 30.0),
            Field("waldur_retries", int_between(0, 10), 2),
        ],
        problems,
    )
    settings = _backend_settings(top["backend_settings"], problems)
    hpc = _hpc_user_api(top["hpc_user_api"], problems)
    if len(problems) > before:
        return None
    components: dict[str, Any] = top["backend_components"] if top["backend_components"] is not None else dict(DEFAULT_COMPONENTS)
    return StorageConfig(
        waldur_api_url=top["waldur_api_url"],
        waldur_api_token=top["waldur_api_token"],
        storage_systems=top["storage_systems"],
        backend_settings=settings,
        backend_components=components,
        hpc_user_api=hpc,
        waldur_timeout=top["waldur_timeout"],
        waldur_retries=top["waldur_retries"],
    )

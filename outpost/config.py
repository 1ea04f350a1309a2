"""
Validating YAML configuration into frozen attrs classes.

`load_section` checks one mapping against a list of `Field`s and collects
every problem (with its dotted key) instead of stopping at the first; the
daemons' ``load_config`` raise one `ConfigError` listing them all.  Unknown
keys are problems too: a misspelt key silently ignored is an outage later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import attrs
import yaml
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

__all__ = [
    "ConfigError",
    "Field",
    "load_section",
    "parse_yaml",
    "string",
    "boolean",
    "positive_int",
    "int_between",
    "positive_float",
    "server_endpoint",
    "read_config_file",
    "http_url",
    "optional",
    "list_of",
]

REQUIRED = object()


class ConfigError(Exception):
    """The configuration is wrong; `problems` lists every problem found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


@attrs.frozen
class Field:
    name: str
    convert: Callable[[Any], Any]
    default: Any = REQUIRED


def parse_yaml(text: str) -> dict[str, Any]:
    """The top-level mapping of a YAML document (an empty document is an empty mapping)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"]) from None
    except RecursionError:
        raise ConfigError(["not valid YAML: nested too deeply"]) from None
    except (ValueError, TypeError, OverflowError) as e:
        # PyYAML's constructors raise these for values such as 2001-13-40 or !!int 0b2.
        raise ConfigError([f"not valid YAML: {e}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping, not {type(data).__name__}"])
    return data


def read_config_file(path: str | None) -> str:
    """The text of the configuration file at `path` ("" for none: all defaults)."""
    if path is None:
        return ""
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ConfigError([f"cannot read {path}: {e.strerror}"]) from None


def load_section(data: Any, path: str, fields: list[Field], problems: list[str]) -> dict[str, Any]:
    """
    Check `data` (the mapping at dotted `path`) against `fields`.

    Returns the converted values (defaults filled in) and appends a problem
    for each missing, invalid or unknown key.
    """
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path or 'config'}: must be a mapping, not {type(data).__name__}")
        data = {}
    known = {f.name for f in fields}
    for key in data:
        if key not in known:
            problems.append(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for field in fields:
        if field.name not in data:
            if field.default is REQUIRED:
                problems.append(f"{prefix}{field.name}: required")
            else:
                values[field.name] = field.default
            continue
        try:
            values[field.name] = field.convert(data[field.name])
        except (TypeError, ValueError) as e:
            problems.append(f"{prefix}{field.name}: {e}")
            values[field.name] = None if field.default is REQUIRED else field.default
    return values


# -- converters: each returns the value or raises ValueError with the reason --


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number of at least 1, not {value!r}")
    return value


def int_between(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    return convert


def positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"must be a number above 0, not {value!r}")
    return float(value)


_SYSTEMD_DOMAINS = ("INET", "INET6", "UNIX")


def _systemd_endpoint(value: str) -> str:
    """
    ``systemd:domain=INET:name=http`` (or ``index=N``): a socket systemd passes in.

    Checked for form only.  Twisted's parser looks the socket up in LISTEN_FDS at once,
    and only the socket-activated daemon has one: the admin command and any other reader
    of the same file must accept it too.  A name systemd did not pass fails at listen.
    """
    fields: dict[str, str] = {}
    for part in value.split(":")[1:]:
        key, eq, item = part.partition("=")
        if not eq or not item or key not in ("domain", "index", "name") or key in fields:
            raise ValueError(f"must be systemd:domain=INET:name=NAME (or index=N), not {value!r}")
        fields[key] = item
    if fields.get("domain") not in _SYSTEMD_DOMAINS:
        raise ValueError(f"domain= must be one of {', '.join(_SYSTEMD_DOMAINS)}: {value!r}")
    if ("index" in fields) == ("name" in fields):
        raise ValueError(f"give exactly one of index= and name=: {value!r}")
    if "index" in fields and not fields["index"].isdigit():
        raise ValueError(f"index= must be a whole number: {value!r}")
    return value


def server_endpoint(value: Any) -> str:
    """A twisted server endpoint string such as ``tcp:5240:interface=127.0.0.1``."""
    text = string(value)
    if text.partition(":")[0] == "systemd":
        return _systemd_endpoint(text)
    try:
        serverFromString(MemoryReactor(), text)
    except Exception as e:
        raise ValueError(f"not a server endpoint description ({e}): {text!r}") from None
    return text


def http_url(value: Any) -> str:
    text = string(value)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in URL {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, not {text!r}")
    del port
    return text


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert_optional(value: Any) -> Any:
        return None if value is None else convert(value)

    return convert_optional


def list_of(convert: Callable[[Any], Any], min_items: int = 0) -> Callable[[Any], list[Any]]:
    def convert_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list, not {value!r}")
        if len(value) < min_items:
            raise ValueError(f"needs at least {min_items} item(s)")
        out, bad = [], []
        for index, item in enumerate(value):
            try:
                out.append(convert(item))
            except ValueError as e:
                bad.append(f"item {index}: {e}")
        if bad:
            raise ValueError("; ".join(bad))
        return out

    return convert_list

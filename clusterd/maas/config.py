"""
The ``maas:`` section of the cluster's configuration.

Example::

    maas:
      url: http://maas.example:5240/MAAS/
      api_key_file: /etc/outpost/maas.key   # mode 0600; or api_key: "consumer:token:secret"
      timeout: 30                           # seconds per try
      retry: {attempts: 4, base: 0.5, cap: 30}

Where the API key comes from, in order: ``api_key`` or ``api_key_file``
in the file (giving both is an error); only if the file names neither, the
environment variable ``OUTPOST_MAAS_API_KEY``.  The file wins because it is
the reviewed, explicit source; the variable is a fallback for containers
that inject secrets into the environment.  The key is never put in a
message, a repr or a log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import attrs

from clusterd.maas.oauth import Credentials
from clusterd.maas.retry import RetryPolicy
from outpost.secret import SecretError, read_private_file
from outpost.config import Field, http_url, int_between, load_section, optional, positive_float, string

__all__ = ["MAASConfig", "parse_maas_config", "ENV_API_KEY"]

ENV_API_KEY = "OUTPOST_MAAS_API_KEY"
_UNSET = object()


@attrs.frozen
class MAASConfig:
    url: str
    api_key: str = attrs.field(repr=False)
    timeout: float = 30.0
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    #: Where the key came from ("api_key", "api_key_file <path>" or the variable's name); safe to log.
    api_key_source: str = "api_key"


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise ValueError(f"must be a number of seconds from 0 to 3600, not {value!r}")
    return float(value)


def _timeout(value: Any) -> float:
    seconds = positive_float(value)
    if seconds > 3600:
        raise ValueError(f"must be at most 3600 seconds, not {value!r}")
    return seconds


def _key_problem(key: str) -> str | None:
    try:
        Credentials.parse(key)
    except ValueError as e:
        return str(e)
    return None


def _read_key_file(path: Path) -> str:
    """The key in `path`; raises ValueError saying what is wrong (never the key)."""
    try:
        return read_private_file(path, "key file")
    except SecretError as e:
        raise ValueError(str(e)) from None


def parse_maas_config(
    data: Any, problems: list[str], *, environ: Mapping[str, str] | None = None, path: str = "maas"
) -> MAASConfig | None:
    """
    Check the ``maas:`` mapping `data`, appending every problem to
    `problems`; the config, or None when `data` is None (MAAS not used) or
    has problems.
    """
    if data is None:
        return None
    environ = os.environ if environ is None else environ
    before = len(problems)
    values = load_section(
        data,
        path,
        [
            Field("url", http_url),
            Field("api_key", optional(string), _UNSET),
            Field("api_key_file", optional(string), _UNSET),
            Field("timeout", _timeout, 30.0),
            Field("retry", lambda v: v, None),
        ],
        problems,
    )
    retry_values = load_section(
        values["retry"],
        f"{path}.retry",
        [
            Field("attempts", int_between(1, 20), RetryPolicy().attempts),
            Field("base", _seconds, RetryPolicy().base),
            Field("cap", _seconds, RetryPolicy().cap),
        ],
        problems,
    )
    if retry_values["cap"] < retry_values["base"]:
        problems.append(f"{path}.retry.cap: must be at least base ({retry_values['base']:g})")

    key, source, label = None, "", ""
    inline = None if values["api_key"] is _UNSET else values["api_key"]
    key_file = None if values["api_key_file"] is _UNSET else values["api_key_file"]
    if inline is not None and key_file is not None:
        problems.append(f"{path}: give api_key or api_key_file, not both")
    elif inline is not None:
        key, source, label = inline, "api_key", f"{path}.api_key"
    elif key_file is not None:
        label = f"{path}.api_key_file"
        try:
            key, source = _read_key_file(Path(key_file).absolute()), f"api_key_file {key_file}"
        except ValueError as e:
            problems.append(f"{label}: {e}")
    elif environ.get(ENV_API_KEY):
        key, source, label = environ[ENV_API_KEY], ENV_API_KEY, f"environment variable {ENV_API_KEY}"
    else:
        problems.append(f"{path}.api_key: required (or api_key_file, or the environment variable {ENV_API_KEY})")
    if key is not None:
        problem = _key_problem(key)
        if problem:
            problems.append(f"{label}: {problem}")
            key = None
    if len(problems) > before or key is None:
        return None
    return MAASConfig(
        url=values["url"],
        api_key=key,
        timeout=values["timeout"],
        retry=RetryPolicy(retry_values["attempts"], retry_values["base"], retry_values["cap"]),
        api_key_source=source,
    )

"""
The ``cloudstack:`` section of the cluster's configuration.

Example::

    cloudstack:
      url: http://cloudstack.example:8080/client/api
      api_key: "GdsWBVHco0OO…"
      secret_key_file: /etc/outpost/cloudstack.secret   # mode 0600; or secret_key: "…"
      zone: OSSEA-Zone            # name or id
      disk_offering: Custom       # name or id
      oma_vm_id: f47ac10b-58cc-4372-a567-0e02b2c3d479
      domain: /                   # optional
      timeout: 30                 # seconds per HTTP try
      job_timeout: 600            # seconds an async job may take

The secret key is never put in a message, a repr or a log.  The API key is
not secret on its own (it is sent in every URL), but it is kept out of reprs
too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from outpost.config import Field, http_url, load_section, optional, positive_float, string
from outpost.secret import SecretError, read_private_file

__all__ = ["CloudStackConfig", "parse_cloudstack_config"]

_UNSET = object()


@attrs.frozen
class CloudStackConfig:
    url: str
    api_key: str = attrs.field(repr=False)
    secret_key: str = attrs.field(repr=False)
    zone: str
    disk_offering: str
    oma_vm_id: str
    domain: str | None = None
    timeout: float = 30.0
    job_timeout: float = 600.0
    #: Where the secret key came from ("secret_key" or "secret_key_file <path>"); safe to log.
    secret_key_source: str = "secret_key"


def _seconds_up_to(limit: float) -> Any:
    def convert(value: Any) -> float:
        seconds = positive_float(value)
        if seconds > limit:
            raise ValueError(f"must be at most {limit:g} seconds, not {value!r}")
        return seconds

    return convert


def _secret_string(value: Any) -> str:
    # Never quote the value: it may be the secret.
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def parse_cloudstack_config(data: Any, problems: list[str], *, path: str = "cloudstack") -> CloudStackConfig | None:
    """
    Check the ``cloudstack:`` mapping `data`, appending every problem to
    `problems`; the config, or None when `data` is None (CloudStack not
    used) or has problems.
    """
    if data is None:
        return None
    before = len(problems)
    values = load_section(
        data,
        path,
        [
            Field("url", http_url),
            Field("api_key", _secret_string),
            Field("secret_key", optional(_secret_string), _UNSET),
            Field("secret_key_file", optional(string), _UNSET),
            Field("zone", string),
            Field("disk_offering", string),
            Field("oma_vm_id", string),
            Field("domain", optional(string), None),
            Field("timeout", _seconds_up_to(3600), 30.0),
            Field("job_timeout", _seconds_up_to(86400), 600.0),
        ],
        problems,
    )
    secret, source = None, ""
    inline = None if values["secret_key"] is _UNSET else values["secret_key"]
    key_file = None if values["secret_key_file"] is _UNSET else values["secret_key_file"]
    if inline is not None and key_file is not None:
        problems.append(f"{path}: give secret_key or secret_key_file, not both")
    elif inline is not None:
        secret, source = inline, "secret_key"
    elif key_file is not None:
        try:
            secret = read_private_file(Path(key_file).absolute(), "secret key file")
        except SecretError as e:
            problems.append(f"{path}.secret_key_file: {e}")
        else:
            if not secret:
                problems.append(f"{path}.secret_key_file: {key_file} is empty")
                secret = None
            source = f"secret_key_file {key_file}"
    else:
        problems.append(f"{path}.secret_key: required (or secret_key_file)")
    if len(problems) > before or secret is None:
        return None
    return CloudStackConfig(
        url=values["url"],
        api_key=values["api_key"],
        secret_key=secret,
        zone=values["zone"],
        disk_offering=values["disk_offering"],
        oma_vm_id=values["oma_vm_id"],
        domain=values["domain"],
        timeout=values["timeout"],
        job_timeout=values["job_timeout"],
        secret_key_source=source,
    )

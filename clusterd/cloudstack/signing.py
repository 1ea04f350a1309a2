"""
CloudStack request signing (signature version 3), as the ``cs`` package does it.

1. Take every parameter, including ``apiKey``, ``command``, ``response=json``,
   ``signatureVersion=3`` and ``expires`` (never ``signature``).
2. Sort by name.
3. Join ``name=quote(value)`` with ``&`` and lowercase the whole string.
   ``quote`` is Python's with only ``*`` kept safe, which is how ``cs``
   mimics Java's ``URLEncoder.encode(v).replace("+", "%20")``.
4. HMAC-SHA1 with the secret key, base64: the ``signature`` parameter.

`flatten` turns typed values into CloudStack's wire form first (lists joined
with commas, booleans as true/false, maps as ``tags[0].key=…``), again as
``cs`` does, so both sign the same strings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import quote

__all__ = ["sign", "string_to_sign", "encode_value", "flatten", "format_expires", "parse_expires", "EXPIRES_FORMAT"]

#: CloudStack's ``expires`` format (``yyyy-MM-dd'T'HH:mm:ssZ``).
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def encode_value(value: str) -> str:
    """A value as it appears in the string to sign."""
    return quote(value, safe="*")


def string_to_sign(params: Mapping[str, str]) -> str:
    """The lowercased, sorted ``name=value&…`` string that is signed (``signature`` left out)."""
    return "&".join(f"{name}={encode_value(value)}" for name, value in sorted(params.items()) if name != "signature").lower()


def sign(params: Mapping[str, str], secret_key: str) -> str:
    """The base64 HMAC-SHA1 signature of `params` (already flattened to strings) with `secret_key`."""
    digest = hmac.new(secret_key.encode("utf-8"), string_to_sign(params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def flatten(params: Mapping[str, Any]) -> dict[str, str]:
    """
    CloudStack's wire form of typed parameters: None and empty collections are
    left out; bools become ``true``/``false``; numbers ``str()``; lists and
    sets of scalars are joined with commas; a dict (or a list of dicts) named
    ``tags`` becomes ``tags[0].key=…``, ``tags[0].value=…``, ….
    """
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            out[name] = str(value)
        elif isinstance(value, (list, tuple, set, frozenset, dict)):
            if not value:
                continue
            items: list[Any] = [value] if isinstance(value, dict) else sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
            if isinstance(items[0], dict):
                for index, entry in enumerate(items):
                    for key, item in entry.items():
                        out[f"{name}[{index}].{key}"] = str(item)
            else:
                out[name] = ",".join(map(str, items))
        else:
            raise TypeError(f"parameter {name} cannot be sent to CloudStack: {type(value).__name__}")
    return out


def format_expires(seconds: float) -> str:
    """The ``expires`` value for POSIX time `seconds`."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(EXPIRES_FORMAT)


def parse_expires(text: str) -> float:
    """POSIX seconds of an ``expires`` value; ValueError if it is not one."""
    return datetime.strptime(text, EXPIRES_FORMAT).timestamp()

"""
Checking a request's signature as CloudStack does (signature version 3).

The string to sign is every parameter but ``signature``, sorted by name,
``name=quote(value)`` joined with ``&`` and lowercased; the signature is
base64(HMAC-SHA1(secret, string)).  Written here apart from the client's
`clusterd.cloudstack.signing` on purpose, so a mistake there shows up as a
401 instead of being mirrored.

Stricter than CloudStack: ``expires`` (with ``signatureVersion=3``) is
required, because every client we care about sends it; a request without it
is refused like a bad signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Mapping
from urllib.parse import quote

from simulators.cloudstack.errors import ApiError

__all__ = ["verify", "expected_signature"]


def expected_signature(params: Mapping[str, str], secret_key: str) -> str:
    text = "&".join(f"{k}={quote(v, safe='*')}" for k, v in sorted(params.items()) if k != "signature").lower()
    return base64.b64encode(hmac.new(secret_key.encode(), text.encode(), hashlib.sha1).digest()).decode()


def verify(params: Mapping[str, str], keys: Mapping[str, str], now: float) -> str:
    """The API key of a correctly signed, unexpired request; raises a 401 `ApiError` otherwise."""
    signature = params.get("signature")
    api_key = params.get("apiKey") or params.get("apikey")
    if not signature or not api_key or api_key not in keys:
        raise ApiError.unauthorized()
    if params.get("signatureVersion") != "3" or "expires" not in params:
        raise ApiError.unauthorized()
    try:
        expires = datetime.strptime(params["expires"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        raise ApiError.unauthorized() from None
    if expires < now:
        raise ApiError.unauthorized()
    if not hmac.compare_digest(signature.encode(), expected_signature(params, keys[api_key]).encode()):
        raise ApiError.unauthorized()
    return api_key

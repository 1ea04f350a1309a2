"""
Checking MAAS's OAuth 1.0 PLAINTEXT ``Authorization`` header, as MAAS does.

The header is ``OAuth realm="…", oauth_nonce="…", …``; each value is
percent-encoded.  All of oauth_consumer_key, oauth_token,
oauth_signature_method (PLAINTEXT), oauth_signature, oauth_timestamp and
oauth_nonce must be there; oauth_version, if present, is "1.0".  The
decoded signature must equal ``escape(consumer_secret) & escape(token_secret)``
with an empty consumer secret.  Timestamps are checked for form only: the
simulator's clock may be a test clock.
"""

from __future__ import annotations

import hmac
import re
from typing import Callable
from urllib.parse import quote, unquote

from simulators.maas.errors import Unauthorized

__all__ = ["parse_oauth_header", "verify", "REQUIRED"]

REQUIRED = (
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature_method",
    "oauth_signature",
    "oauth_timestamp",
    "oauth_nonce",
)
_PARAM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"\s*')


def parse_oauth_header(header: str) -> dict[str, str]:
    """The decoded parameters of an OAuth header; raises `Unauthorized` if it is not one."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth":
        raise Unauthorized("Authorization header is not OAuth.")
    params: dict[str, str] = {}
    for item in rest.split(","):
        if not item.strip():
            continue
        match = _PARAM.fullmatch(item)
        if match is None:
            raise Unauthorized("Malformed OAuth header.")
        params[match.group(1)] = unquote(match.group(2))
    return params


def verify(header: str | None, lookup: Callable[[str, str], tuple[str, object] | None]) -> object:
    """
    The user the header's key belongs to; `lookup(consumer_key, token_key)`
    gives ``(token_secret, user)`` or None.  Raises `Unauthorized`.
    """
    if not header:
        raise Unauthorized("Authentication credentials were not provided.")
    params = parse_oauth_header(header)
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        raise Unauthorized(f"Missing OAuth parameters: {', '.join(missing)}.")
    if params.get("oauth_version", "1.0") != "1.0":
        raise Unauthorized("Unsupported OAuth version.")
    if params["oauth_signature_method"] != "PLAINTEXT":
        raise Unauthorized("Unsupported signature method.")
    if not params["oauth_timestamp"].isdigit():
        raise Unauthorized("Invalid timestamp.")
    found = lookup(params["oauth_consumer_key"], params["oauth_token"])
    if found is None:
        raise Unauthorized("Invalid access token.")
    token_secret, user = found
    expected = "&" + quote(token_secret, safe="~")
    if not hmac.compare_digest(params["oauth_signature"].encode("utf-8"), expected.encode("utf-8")):
        raise Unauthorized("Invalid signature.")
    return user

"""
MAAS API keys and the OAuth 1.0 PLAINTEXT header that carries them.

A MAAS API key is ``consumer_key:token_key:token_secret``.  The consumer
secret is empty, so the PLAINTEXT signature is ``&`` + the percent-encoded
token secret; in the header every value is percent-encoded once more, so the
signature goes out as ``%26…`` (RFC 5849 §3.4.4 and §3.5.1, as MAAS and
python-libmaas/oauthlib do it).
"""

from __future__ import annotations

from urllib.parse import quote

import attrs

__all__ = ["Credentials", "escape", "plaintext_signature", "authorization_header"]


def escape(value: str) -> str:
    """RFC 5849 percent-encoding: everything but ALPHA, DIGIT, '-', '.', '_' and '~'."""
    return quote(value, safe="~")


def plaintext_signature(token_secret: str, consumer_secret: str = "") -> str:
    return f"{escape(consumer_secret)}&{escape(token_secret)}"


@attrs.frozen(repr=False)
class Credentials:
    """The three parts of a MAAS API key.  Only the consumer key appears in repr."""

    consumer_key: str
    token_key: str
    token_secret: str

    @classmethod
    def parse(cls, api_key: str) -> "Credentials":
        """Split ``consumer_key:token_key:token_secret``; the message never quotes the key."""
        if not isinstance(api_key, str):
            raise ValueError("a MAAS API key must be a string")
        parts = api_key.split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError("a MAAS API key has three non-empty parts: consumer_key:token_key:token_secret")
        return cls(*parts)

    def __repr__(self) -> str:
        return f"Credentials(consumer_key={self.consumer_key!r}, token_key=<hidden>, token_secret=<hidden>)"

    def __str__(self) -> str:
        return repr(self)


def authorization_header(credentials: Credentials, *, nonce: str, timestamp: int) -> str:
    """The ``Authorization`` header value for one request."""
    params = (
        ("oauth_nonce", nonce),
        ("oauth_timestamp", str(timestamp)),
        ("oauth_version", "1.0"),
        ("oauth_signature_method", "PLAINTEXT"),
        ("oauth_consumer_key", credentials.consumer_key),
        ("oauth_token", credentials.token_key),
        ("oauth_signature", plaintext_signature(credentials.token_secret)),
    )
    return 'OAuth realm="OAuth", ' + ", ".join(f'{name}="{escape(value)}"' for name, value in params)

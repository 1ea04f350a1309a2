"""The OAuth 1.0 PLAINTEXT header: its exact form, and round trips through the simulator's verifier."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from clusterd.maas import Credentials, authorization_header
from simulators.maas.auth import REQUIRED, parse_oauth_header, verify
from simulators.maas.errors import Unauthorized

part = st.text(st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), min_size=1, max_size=30)


def lookup_for(credentials: Credentials) -> Any:
    def lookup(consumer_key: str, token_key: str) -> tuple[str, str] | None:
        if (consumer_key, token_key) == (credentials.consumer_key, credentials.token_key):
            return credentials.token_secret, "the-user"
        return None

    return lookup


def test_the_header_carries_exactly_maas_fields_with_the_signature_as_percent_26_secret() -> None:
    header = authorization_header(Credentials.parse("ck:tk:ts"), nonce="n1", timestamp=1700000000)
    assert header == (
        'OAuth realm="OAuth", oauth_nonce="n1", oauth_timestamp="1700000000", oauth_version="1.0", '
        'oauth_signature_method="PLAINTEXT", oauth_consumer_key="ck", oauth_token="tk", oauth_signature="%26ts"'
    )


def test_a_secret_with_reserved_characters_is_encoded_twice_as_rfc5849_says() -> None:
    header = authorization_header(Credentials.parse("ck:tk:a/b c"), nonce="n", timestamp=1)
    assert 'oauth_signature="%26a%252Fb%2520c"' in header
    assert parse_oauth_header(header)["oauth_signature"] == "&a%2Fb%20c"


@given(part, part, part, st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=20), st.integers(0, 2**40))
def test_any_api_key_round_trips_through_the_simulators_verifier(
    consumer: str, token: str, secret: str, nonce: str, timestamp: int
) -> None:
    credentials = Credentials.parse(f"{consumer}:{token}:{secret}")
    header = authorization_header(credentials, nonce=nonce, timestamp=timestamp)
    header.encode("ascii")  # HTTP-safe whatever the key holds
    assert verify(header, lookup_for(credentials)) == "the-user"


@given(part, part, part, part)
def test_a_wrong_secret_is_refused(consumer: str, token: str, secret: str, other: str) -> None:
    if other == secret:
        return
    registered = Credentials(consumer, token, secret)
    header = authorization_header(Credentials(consumer, token, other), nonce="n", timestamp=1)
    with pytest.raises(Unauthorized):
        verify(header, lookup_for(registered))


@pytest.mark.parametrize("missing", REQUIRED)
def test_each_required_oauth_parameter_must_be_present(missing: str) -> None:
    credentials = Credentials.parse("ck:tk:ts")
    header = authorization_header(credentials, nonce="n", timestamp=1)
    kept = ", ".join(p for p in header.removeprefix("OAuth ").split(", ") if not p.startswith(missing + "="))
    with pytest.raises(Unauthorized):
        verify("OAuth " + kept, lookup_for(credentials))


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer abc", "OAuth garbage", 'OAuth oauth_signature_method="HMAC-SHA1"'],
)
def test_missing_or_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        verify(header, lambda c, t: ("ts", "user"))


@given(st.text(max_size=200))
def test_the_verifier_never_fails_other_than_unauthorized(header: str) -> None:
    try:
        verify(header, lambda c, t: ("ts", "user"))
    except Unauthorized:
        pass


def test_python_libmaas_oauthlib_headers_are_accepted() -> None:
    oauth1 = pytest.importorskip("oauthlib.oauth1")
    client = oauth1.Client("ck", "", "tk", "t/s", signature_method=oauth1.SIGNATURE_PLAINTEXT, realm="OAuth")
    _, headers, _ = client.sign("http://maas/MAAS/api/2.0/machines/?op=x", "GET", None, {})
    credentials = Credentials.parse("ck:tk:t/s")
    assert verify(headers["Authorization"], lookup_for(credentials)) == "the-user"
    ours = parse_oauth_header(authorization_header(credentials, nonce="n", timestamp=1))
    theirs = parse_oauth_header(headers["Authorization"])
    assert ours["oauth_signature"] == theirs["oauth_signature"]
    assert set(ours) == set(theirs)


def test_credentials_hide_the_token_in_repr_and_messages() -> None:
    credentials = Credentials.parse("ck:tokenkey:tokensecret")
    assert "tokensecret" not in repr(credentials) and "tokenkey" not in str(credentials)
    with pytest.raises(ValueError) as info:
        Credentials.parse("ck:tokensecret")
    assert "tokensecret" not in str(info.value)

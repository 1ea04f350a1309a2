"""The shared secret file: made once, private, checked on every load."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from outpost.secret import MIN_BYTES, SecretError, load_or_create_secret, load_secret, write_secret


def test_first_load_creates_a_private_random_secret_and_later_loads_reuse_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    secret, created = load_or_create_secret(path)
    assert created and len(secret) >= MIN_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_secret(path)
    assert again == secret and not created_again


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path, b"k" * 32)
    path.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(path)


@pytest.mark.parametrize("content, message", [("zz" * 20, "hex"), ("ab" * 15 + "\n", "at least"), ("", "at least")])
def test_malformed_secrets_are_refused_with_the_reason(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SecretError, match=message):
        load_secret(path)


def test_missing_secret_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(tmp_path / "nope")


@given(st.binary(min_size=MIN_BYTES, max_size=128))
def test_any_long_enough_secret_round_trips(secret: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "secret"
        write_secret(path, secret)
        assert load_secret(path) == secret

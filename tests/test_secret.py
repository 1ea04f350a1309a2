"""
The shared secret file: made once, private, checked on every load; several
secrets a file (the first proves, all are accepted); the rotation steps;
atomic private writes; and the daemons' view that follows changes.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import assume, given, strategies as st
from twisted.logger import globalLogPublisher

from outpost import secret as secret_module
from outpost.secret import (
    MIN_BYTES,
    Entry,
    SecretError,
    SecretFile,
    Secrets,
    fingerprint,
    load_or_create_secret,
    load_secret,
    load_secrets,
    parse_secrets,
    update_secrets,
    write_secret,
    write_secrets,
)

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


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


@pytest.mark.parametrize(
    "content, message",
    [("zz" * 20, "line 1 is not a hex secret"), ("ab" * 15 + "\n", "line 1 is 15 bytes; at least 16"), ("", "holds no secret"),
     ("# only a note\n\n", "holds no secret"), ("ab" * 16 + "\n" + "abc" * 11, "line 2 has an odd number"),
     ("ab" * 16 + " # a note after the secret\n", "line 1 is not a hex secret"),
     ("\n" + "ab" * 16 + "\n\n" + "AB" * 16 + "\n", "line 4 repeats the secret on line 2")],
)
def test_malformed_files_are_refused_naming_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SecretError, match=message):
        load_secrets(path)


def test_missing_secret_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(tmp_path / "nope")


@given(st.binary(min_size=MIN_BYTES, max_size=128))
def test_any_long_enough_secret_round_trips(secret: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "secret"
        write_secret(path, secret)
        assert load_secret(path) == secret


def test_a_one_line_file_proves_and_accepts_its_only_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(OLD.hex() + "\n")
    path.chmod(0o600)
    found = load_secrets(path)
    assert found.prover == OLD and found.accepted == (OLD,)


def test_the_first_secret_proves_and_every_one_is_accepted_notes_are_ignored() -> None:
    text = f"# rotated in January\n\n  {NEW.hex().upper()}  \n# the old one\n{OLD.hex()}\n# trailing note\n"
    found = parse_secrets(text)
    assert found.prover == NEW and found.accepted == (NEW, OLD)
    assert found.fingerprints == (fingerprint(NEW), fingerprint(OLD))
    assert found.entries[1].notes == ("# the old one",) and found.trailer == ("# trailing note",)


def test_a_file_for_one_secret_only_refuses_several(tmp_path: Path) -> None:
    """The webhook secret is one secret; a second line there is a mistake, not a rotation."""
    path = tmp_path / "webhook"
    write_secrets(path, Secrets.of(NEW, OLD))
    with pytest.raises(SecretError, match="holds 2 secrets; only one"):
        load_secret(path)


def test_fingerprints_are_short_sha256_and_say_nothing_of_the_secret() -> None:
    import hashlib

    assert fingerprint(OLD) == hashlib.sha256(OLD).hexdigest()[:8]
    assert fingerprint(OLD) != fingerprint(NEW) and OLD.hex()[:8] != fingerprint(OLD)


# -- the file format, with Hypothesis ---------------------------------------

secrets_lists = st.lists(st.binary(min_size=MIN_BYTES, max_size=64), min_size=1, max_size=6, unique=True)
notes = st.lists(st.one_of(st.just(""), st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20)
                           .map(lambda t: ("# " + t.strip()).rstrip())), max_size=3)


@given(secrets_lists, st.lists(notes, min_size=7, max_size=7), notes)
def test_any_list_of_valid_secrets_with_notes_round_trips(secrets: list[bytes], above: list[list[str]], trailer: list[str]) -> None:
    contents = Secrets(tuple(Entry(s, tuple(above[i])) for i, s in enumerate(secrets)), tuple(trailer))
    parsed = parse_secrets(contents.render())
    assert parsed.accepted == tuple(secrets) and parsed.prover == secrets[0]
    assert parsed == contents
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "secret"
        write_secrets(path, contents)
        assert load_secrets(path) == contents


bad_lines = st.one_of(
    st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and not t.strip().startswith("#") and "\n" not in t and "\r" not in t
                                            and t.splitlines() == [t] and not all(c in "0123456789abcdefABCDEF \t" for c in t)),
    st.binary(min_size=1, max_size=MIN_BYTES - 1).map(bytes.hex),  # too short
    st.binary(min_size=MIN_BYTES, max_size=40).map(lambda b: b.hex() + "a"),  # odd
)


@given(secrets_lists, st.data())
def test_a_malformed_line_anywhere_is_refused_naming_it_without_quoting_it(secrets: list[bytes], data: st.DataObject) -> None:
    lines = [s.hex() for s in secrets]
    where = data.draw(st.integers(0, len(lines)))
    bad = data.draw(bad_lines)
    assume(bad.strip())
    lines.insert(where, bad)
    with pytest.raises(SecretError) as raised:
        parse_secrets("\n".join(lines) + "\n", "the file")
    line = where + 1
    # One of a few fixed sentences naming the line: never the line's contents.
    assert re.fullmatch(
        rf"the file line {line} is not a hex secret: a secret line holds only hex digits \(notes go on lines of their own, starting with #\)"
        rf"|the file line {line} has an odd number of hex digits"
        rf"|the secret on the file line {line} is \d+ bytes; at least {MIN_BYTES} are needed",
        str(raised.value),
    ), str(raised.value)


# -- rotation steps ----------------------------------------------------------


def test_add_then_promote_then_retire() -> None:
    start = Secrets.of(OLD)
    added = start.with_added(NEW, now=T0)
    assert added.prover == OLD and added.accepted == (OLD, NEW)
    assert added.entries[1].added == T0 and added.newest.secret == NEW
    promoted = added.promoted()
    assert promoted.prover == NEW and promoted.accepted == (NEW, OLD)
    retired = promoted.retired()
    assert retired.accepted == (NEW,)


def test_every_step_can_be_repeated_without_undoing_itself() -> None:
    added = Secrets.of(OLD).with_added(NEW, now=T0)
    assert added.with_added(NEW, now=T0 + timedelta(1)) == added
    promoted = added.promoted()
    assert promoted.promoted() == promoted, "a second promote must not swap the secrets back"
    retired = promoted.retired()
    assert retired.retired() == retired


def test_retire_on_a_host_that_missed_the_promotion_is_refused() -> None:
    """Else that host would keep the old secret and drop the new one everyone else now proves."""
    added = Secrets.of(OLD).with_added(NEW, now=T0)
    with pytest.raises(SecretError, match=f"{fingerprint(NEW)} was added after the prover {fingerprint(OLD)}"):
        added.retired()
    with pytest.raises(SecretError, match="not " + fingerprint(NEW)):
        added.retired(fingerprint(NEW))
    # Naming the prover abandons the rotation on purpose.
    assert added.retired(fingerprint(OLD)).accepted == (OLD,)


def test_promote_by_fingerprint_prefix_and_unknown_fingerprints_are_clear() -> None:
    three = Secrets.of(OLD).with_added(NEW, now=T0).with_added(OTHER, now=T0 + timedelta(seconds=1))
    assert three.newest.secret == OTHER
    assert three.promoted(fingerprint(NEW)[:5]).prover == NEW
    assert three.promoted().prover == OTHER
    with pytest.raises(SecretError, match="no secret with fingerprint 0000"):
        three.promoted("0000")
    with pytest.raises(SecretError, match="not a fingerprint"):
        three.promoted("zz")


def test_newest_follows_the_added_notes_across_cycles() -> None:
    first = Secrets.of(OLD).with_added(NEW, now=T0).promoted().retired()
    second = first.with_added(OTHER, now=T0 + timedelta(days=90)).promoted()
    assert second.prover == OTHER and second.newest.secret == OTHER
    assert second.promoted() == second and second.retired().accepted == (OTHER,)


def test_notes_move_and_go_with_their_secret() -> None:
    contents = parse_secrets(f"# the first one\n{OLD.hex()}\n# the second\n{NEW.hex()}\n# end\n")
    promoted = contents.promoted(fingerprint(NEW))
    assert promoted.render() == f"# the second\n{NEW.hex()}\n# the first one\n{OLD.hex()}\n# end\n"
    assert promoted.retired().render() == f"# the second\n{NEW.hex()}\n# end\n"


def test_a_file_edited_by_hand_without_added_notes_takes_the_last_secret_as_the_newest() -> None:
    """With nothing to tell which came last, promote takes the last line and retire trusts the operator."""
    by_hand = parse_secrets(f"{OLD.hex()}\n{NEW.hex()}\n")
    assert by_hand.newest.secret == NEW and by_hand.promoted().prover == NEW
    assert by_hand.retired().accepted == (OLD,)


# -- writing -------------------------------------------------------------------


def test_updates_replace_the_file_atomically_keeping_it_private(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    inode = path.stat().st_ino
    old_umask = os.umask(0)
    try:
        before, after = update_secrets(path, lambda s: s.with_added(NEW))
    finally:
        os.umask(old_umask)
    assert before.accepted == (OLD,) and after.accepted == (OLD, NEW)
    assert path.stat().st_ino != inode, "replaced by a rename, never rewritten in place"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"], "no temporary file left behind"


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)

    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(secret_module.os, "replace", broken)
    with pytest.raises(OSError):
        update_secrets(path, lambda s: s.with_added(NEW))
    assert load_secrets(path).accepted == (OLD,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_an_update_by_root_keeps_the_files_owner(tmp_path: Path) -> None:
    """The region runs as its own user; root rotating its file must not make it unreadable to it."""
    path = tmp_path / "secret"
    write_secret(path, OLD)
    os.chown(path, 65534, 65534)
    update_secrets(path, lambda s: s.with_added(NEW))
    st_ = path.stat()
    assert (st_.st_uid, st_.st_gid) == (65534, 65534) and stat.S_IMODE(st_.st_mode) == 0o600


def test_an_unchanged_result_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    inode = path.stat().st_ino
    update_secrets(path, lambda s: s.promoted())
    assert path.stat().st_ino == inode


# -- the daemons' view ---------------------------------------------------------


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name("tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def test_the_daemons_view_follows_changes_and_is_cached_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    source = SecretFile.load(path)
    first = source.current()
    assert first.accepted == (OLD,) and source.current() is first, "unchanged: no re-read"
    update_secrets(path, lambda s: s.with_added(NEW))
    assert source.current().accepted == (OLD, NEW)
    update_secrets(path, lambda s: s.promoted())
    assert source.current().prover == NEW


def test_a_change_that_breaks_the_file_keeps_the_last_good_secrets_and_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    source = SecretFile.load(path)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        _replace(path, "not a secret\n")
        assert source.current().accepted == (OLD,)
        assert source.current().accepted == (OLD,)
        path.chmod(0o644)
        assert source.current().accepted == (OLD,)
    finally:
        globalLogPublisher.removeObserver(events.append)
    errors = [e for e in events if e.get("log_level") is not None and e["log_level"].name == "error"]
    assert len(errors) == 2, "once per bad change"
    assert "line 1 is not a hex secret" in errors[0]["problem"] and "chmod 600" in errors[1]["problem"]
    assert all(OLD.hex() not in str(e) for e in events)
    # Fixed again: the fixed contents are used.
    _replace(path, NEW.hex() + "\n")
    assert source.current().accepted == (NEW,)


def test_a_file_that_was_never_good_is_an_error_at_start(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("nope\n")
    path.chmod(0o600)
    with pytest.raises(SecretError, match="line 1"):
        SecretFile.load(path)

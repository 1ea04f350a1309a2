"""
The shared RPC secret file, and the rotation of the secrets it holds.

The file holds one or more secrets, each at least 16 random bytes written as
hex on a line of its own, and must be readable by its owner only (0600).
The **first** secret is the *prover*: it answers the peer's challenges (and
seals the region's stored CloudStack credentials).  **Every** secret in the
file is *accepted* when checking the peer's answer.  So a file of one line
works as it always did, and rotation is three steps, each done on every
host before the next (see ``outpost secret rotate``): add a new secret
(accepted, not yet proving), promote it (it proves, the old one is still
accepted), retire the old one.  At each step every pair of peers accepts
what the other proves.

Blank lines and lines starting with ``#`` are ignored by the daemons.  They
are notes for people: the rotate commands keep a run of such lines with the
secret below it (moving or dropping them with it) and keep those after the
last secret at the end.  A secret line holds only hex digits (any case;
spaces around are ignored).  ``rotate add`` writes the note
``# added <UTC time>`` above the secret it adds; that is how ``promote`` and
``retire`` tell the newest secret without being told (a secret without the
note counts as older than any with it), so running a step twice, or
retiring on a host that missed the promotion, cannot swap the secrets back
or drop the new one.  In a file with no such notes (edited by hand) the
last secret counts as the newest and ``retire`` cannot check.

Both daemons read the file through `SecretFile`, which re-reads it whenever
it changes (inode, size or mtime) and keeps the last good contents, loudly,
if a change leaves it unreadable.  The secrets themselves are never logged
or printed, only their *fingerprints*: the first 8 hex digits of their
SHA-256, which say which secret is which without revealing anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets as _random
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import attrs
from twisted.logger import Logger

from outpost.files import write_private_atomically

__all__ = [
    "SecretError",
    "MIN_BYTES",
    "NEW_BYTES",
    "Entry",
    "Secrets",
    "SecretFile",
    "fingerprint",
    "parse_secrets",
    "load_secrets",
    "load_secret",
    "load_or_create_secret",
    "read_private_file",
    "write_secret",
    "write_secrets",
    "export_secret",
    "new_secret",
    "update_secrets",
]

log = Logger()

MIN_BYTES = 16
#: More than anyone needs; a bound so a wrong file is not read into memory whole.
MAX_BYTES = 1024
NEW_BYTES = 32
FINGERPRINT_DIGITS = 8
_HEX = re.compile(r"[0-9a-fA-F]+")
_FINGERPRINT = re.compile(r"[0-9a-f]{4,64}")
_ADDED = re.compile(r"#\s*added\s+(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?)Z\b")
_ADDED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class SecretError(Exception):
    """The secret file is missing, unreadable, too open or malformed, or a rotation step does not apply."""


def fingerprint(secret: bytes) -> str:
    """What names `secret` in logs and output: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(secret).hexdigest()[:FINGERPRINT_DIGITS]


def new_secret() -> bytes:
    """A fresh random secret."""
    return _random.token_bytes(NEW_BYTES)


@attrs.frozen
class Entry:
    """One secret and the note lines (comments, blank lines) just above it."""

    secret: bytes = attrs.field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)

    @property
    def added(self) -> datetime | None:
        """When ``rotate add`` added it (its ``# added`` note), if it says."""
        for note in reversed(self.notes):
            found = _ADDED.match(note.strip())
            if found:
                try:
                    return datetime.fromisoformat(found.group(1)).replace(tzinfo=timezone.utc)
                except ValueError:
                    return None
        return None


@attrs.frozen
class Secrets:
    """
    The contents of a secret file: the prover first, then the other accepted
    secrets, with the file's note lines.  Also a fixed `SecretSource` (its
    `current` is itself), for tests and for callers with one secret in hand.
    """

    entries: tuple[Entry, ...]
    #: Note lines after the last secret.
    trailer: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.entries:
            raise SecretError("a secret file must hold at least one secret")

    @classmethod
    def of(cls, *secrets: bytes) -> "Secrets":
        return cls(tuple(Entry(s) for s in secrets))

    @property
    def prover(self) -> bytes:
        """The secret that answers challenges."""
        return self.entries[0].secret

    @property
    def accepted(self) -> tuple[bytes, ...]:
        """Every secret a peer may prove."""
        return tuple(e.secret for e in self.entries)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """The secrets' fingerprints, prover first."""
        return tuple(e.fingerprint for e in self.entries)

    def current(self) -> "Secrets":
        return self

    @property
    def newest(self) -> Entry:
        """The secret added last: the latest ``# added`` note, the later in the file on a tie; else the last."""
        never = datetime.min.replace(tzinfo=timezone.utc)
        return max(reversed(self.entries), key=lambda e: e.added or never) if any(e.added for e in self.entries) else self.entries[-1]

    def render(self) -> str:
        lines: list[str] = []
        for entry in self.entries:
            lines += entry.notes
            lines.append(entry.secret.hex())
        lines += self.trailer
        return "\n".join(lines) + "\n"

    # -- rotation steps (pure; `update_secrets` writes the result) --------

    def find(self, wanted: str) -> Entry:
        """The entry whose fingerprint starts with `wanted` (at least 4 hex digits)."""
        wanted = wanted.strip().lower()
        if not _FINGERPRINT.fullmatch(wanted):
            raise SecretError(f"{wanted!r} is not a fingerprint (4 to 8 hex digits, as `outpost secret status` prints)")
        found = [e for e in self.entries if e.fingerprint.startswith(wanted[:FINGERPRINT_DIGITS])]
        if not found:
            raise SecretError(f"no secret with fingerprint {wanted} here (this file holds {', '.join(self.fingerprints)})")
        if len(found) > 1:
            raise SecretError(f"fingerprint {wanted} matches {len(found)} secrets; give more digits")
        return found[0]

    def with_added(self, secret: bytes, now: datetime | None = None) -> "Secrets":
        """
        `secret` accepted, after the others, under an ``# added`` note
        (unchanged if it is here already).
        """
        _check_length(secret, "the new secret")
        if secret in self.accepted:
            return self
        when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        note = f"# added {when.strftime(_ADDED_FORMAT)} (outpost secret rotate add)"
        return attrs.evolve(self, entries=self.entries + (Entry(secret, (note,)),))

    def promoted(self, wanted: str | None = None) -> "Secrets":
        """
        The secret with fingerprint `wanted` (default: the newest) made the
        prover; the old prover stays accepted, next.  Unchanged if it
        proves already, so the step can be repeated.
        """
        target = self.newest if wanted is None else self.find(wanted)
        if target is self.entries[0]:
            return self
        rest = tuple(e for e in self.entries if e is not target)
        return attrs.evolve(self, entries=(target,) + rest)

    def retired(self, expected_prover: str | None = None) -> "Secrets":
        """
        Only the prover kept.  Refused when the prover is not
        `expected_prover`, or (without it) when a secret added after it
        (by its ``# added`` note) is here: a host that missed the promotion
        would otherwise drop the new secret and keep the old.  Naming the
        prover drops a newer secret on purpose (abandoning a rotation).
        """
        prover = self.entries[0]
        if expected_prover is not None:
            if self.find(expected_prover) is not prover:
                raise SecretError(
                    f"the prover here is {prover.fingerprint}, not {expected_prover}: "
                    f"run `outpost secret rotate promote {expected_prover}` on this host first"
                )
        elif self.newest is not prover and any(e.added for e in self.entries):
            newest = self.newest.fingerprint
            raise SecretError(
                f"{newest} was added after the prover {prover.fingerprint} and does not prove yet: run "
                f"`outpost secret rotate promote` here first (or, to drop {newest}, name the prover to keep: "
                f"`outpost secret rotate retire {prover.fingerprint}`)"
            )
        return attrs.evolve(self, entries=(prover,))


def _check_length(secret: bytes, what: str) -> None:
    if len(secret) < MIN_BYTES:
        raise SecretError(f"{what} is {len(secret)} bytes; at least {MIN_BYTES} are needed")
    if len(secret) > MAX_BYTES:
        raise SecretError(f"{what} is {len(secret)} bytes; at most {MAX_BYTES} are allowed")


def parse_secrets(text: str, where: str = "secret file") -> Secrets:
    """
    The secrets in `text` (a secret file's contents).  `SecretError` names
    the first bad line by number and says what is wrong with it, never what
    it holds.
    """
    entries: list[Entry] = []
    notes: list[str] = []
    seen: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            notes.append(line.rstrip())
            continue
        if not _HEX.fullmatch(stripped):
            raise SecretError(
                f"{where} line {number} is not a hex secret: a secret line holds only hex digits "
                "(notes go on lines of their own, starting with #)"
            )
        if len(stripped) % 2:
            raise SecretError(f"{where} line {number} has an odd number of hex digits")
        if len(stripped) > 2 * MAX_BYTES:
            raise SecretError(f"{where} line {number}: the secret is over {MAX_BYTES} bytes")
        secret = bytes.fromhex(stripped)
        _check_length(secret, f"the secret on {where} line {number}")
        if secret in seen:
            raise SecretError(f"{where} line {number} repeats the secret on line {seen[secret]}")
        seen[secret] = number
        entries.append(Entry(secret, tuple(notes)))
        notes = []
    if not entries:
        raise SecretError(f"{where} holds no secret (at least {MIN_BYTES} bytes, hex, one a line)")
    return Secrets(tuple(entries), tuple(notes))


def _read_private(path: Path, what: str) -> str:
    try:
        st = path.stat()
        if st.st_size > 64 * MAX_BYTES:
            raise SecretError(f"{what} {path} is too large to be a secret file ({st.st_size} bytes)")
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SecretError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{what} {path} is readable by others; chmod 600 {path}")
    return text


def read_private_file(path: Path, what: str = "secret file") -> str:
    """
    The stripped text of `path`, which must be readable by its owner only;
    `SecretError` says what is wrong (never what the file holds).
    """
    return _read_private(path, what).strip()


def load_secrets(path: Path) -> Secrets:
    """Read and check the secret file at `path`."""
    return parse_secrets(_read_private(path, "secret file"), f"secret file {path}")


def load_secret(path: Path) -> bytes:
    """The one secret in the file at `path` (for files that may hold only one, such as the webhook secret)."""
    found = load_secrets(path)
    if len(found.entries) != 1:
        raise SecretError(f"secret file {path} holds {len(found.entries)} secrets; only one is allowed here")
    return found.prover


def write_secrets(path: Path, contents: Secrets) -> None:
    """
    Replace the file at `path` with `contents`, atomically (a private
    temporary file, fsync, rename, fsync of the directory), with mode 0600
    and, if it existed, its owner and group kept.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        before: os.stat_result | None = path.stat()
    except FileNotFoundError:
        before = None
    owner = None if before is None else (before.st_uid, before.st_gid)
    try:
        write_private_atomically(path, contents.render().encode("utf-8"), owner=owner)
    except PermissionError:
        if owner is None:
            raise
        raise SecretError(
            f"cannot keep the owner of {path} (uid {owner[0]}, gid {owner[1]}): run this as root or as that user"
        ) from None


def write_secret(path: Path, secret: bytes) -> None:
    """Write a file holding `secret` alone to `path`, with mode 0600, atomically."""
    write_secrets(path, Secrets.of(secret))


def load_or_create_secret(path: Path) -> tuple[bytes, bool]:
    """The prover at `path`, creating a file with a new random secret if there is none; (secret, created)."""
    source, created = SecretFile.open_or_create(path)
    return source.current().prover, created


@contextlib.contextmanager
def _directory_locked(directory: Path) -> Iterator[None]:
    """One rotate command at a time per directory (an flock on the directory itself: no lock file left behind)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_secrets(path: Path, change: Callable[[Secrets], Secrets]) -> tuple[Secrets, Secrets]:
    """
    Apply one rotation step to the file at `path`: read it, apply `change`,
    write the result (only if it differs); (before, after).
    """
    with _directory_locked(path.parent):
        before = load_secrets(path)
        after = change(before)
        if after != before:
            write_secrets(path, after)
    return before, after


@attrs.define(eq=False)
class SecretFile:
    """
    A secret file as the daemons see it: `current` re-reads it when it has
    changed (a stat per call otherwise), so an edit takes effect for the
    next connection without a restart.  A change that leaves the file
    missing, too open or malformed is logged (once per change) and the last
    good secrets stay in use.
    """

    path: Path
    _secrets: Secrets | None = attrs.field(default=None, init=False, repr=False)
    _stamp: tuple[int, ...] | None = attrs.field(default=None, init=False)
    _bad_stamp: tuple[int, ...] | None = attrs.field(default=None, init=False)

    @classmethod
    def load(cls, path: Path) -> "SecretFile":
        """The file at `path`, read now; `SecretError` if it cannot be."""
        source = cls(path)
        source._reload(source._stat())
        return source

    @classmethod
    def open_or_create(cls, path: Path) -> tuple["SecretFile", bool]:
        """The file at `path`, made with one new random secret if there is none; (file, created)."""
        created = False
        if not path.exists():
            write_secret(path, new_secret())
            created = True
        return cls.load(path), created

    def _stat(self) -> tuple[int, ...]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise SecretError(f"secret file {self.path} does not exist") from None
        except OSError as e:
            raise SecretError(f"cannot read secret file {self.path}: {e.strerror}") from None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)

    def _reload(self, stamp: tuple[int, ...]) -> Secrets:
        found = load_secrets(self.path)
        previous, self._secrets, self._stamp, self._bad_stamp = self._secrets, found, stamp, None
        if previous is not None and previous.fingerprints != found.fingerprints:
            log.info(
                "RPC secrets in {path} changed: proving with {prover}, accepting {fingerprints}",
                path=str(self.path), prover=found.fingerprints[0], fingerprints=", ".join(found.fingerprints),
            )
        return found

    def current(self) -> Secrets:
        """The secrets now in the file (or the last good ones, if it has gone bad)."""
        try:
            stamp = self._stat()
            if stamp == self._stamp and self._secrets is not None:
                return self._secrets
            if stamp == self._bad_stamp and self._secrets is not None:
                return self._secrets
            return self._reload(stamp)
        except SecretError as e:
            if self._secrets is None:
                raise
            try:
                bad = self._stat()
            except SecretError:
                bad = (-1,)
            if bad != self._bad_stamp:
                self._bad_stamp = bad
                log.error(
                    "{problem}; still using the secrets read before ({fingerprints})",
                    problem=str(e), fingerprints=", ".join(self._secrets.fingerprints),
                )
            return self._secrets


def export_secret(path: Path, secret: bytes) -> None:
    """Write `secret` alone to a new file at `path` (mode 0600), for copying to the other hosts; never overwrites."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"{path} exists already; give a path that does not (nothing is overwritten)") from None
    except OSError as e:
        raise SecretError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(secret.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())

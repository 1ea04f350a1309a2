"""
The cluster's infrastructure journal: what must survive a restart.

Two things are kept, in one JSON file (``<state_dir>/journal.json``):

- the tasks being monitored, recorded *before* the region is told a
  create or delete was accepted, so a restarted cluster polls them again;
- the completions the region has not yet acknowledged, kept until it does,
  so a report lost to a disconnect or a restart is sent again.

Every change is written atomically (a temporary file, fsync, rename, fsync
of the directory), with mode 0600: after a crash the file is the state
before or after the change, never half of it.  Each change returns a
Deferred that fires once it is on disk.  The writes run off the reactor
thread (`write_in_thread`: an fsync takes milliseconds, more on a busy
disk, and the reactor has RPC to answer meanwhile), one at a time, and
changes made while one is running go to disk together in the next: a
burst of completions costs two writes, not one each.  A file that cannot
be read back (not JSON, wrong shape, bad entries) is moved aside with a
logged error and the cluster starts from what could be read, rather than not
starting at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from clusterd.errors import ClusterError
from outpost.files import write_private_atomically

__all__ = [
    "Journal", "JournalError", "Watched", "Completion", "JOURNAL_NAME", "OPERATIONS", "Writer", "write_here", "write_in_thread",
]

log = Logger()

JOURNAL_NAME = "journal.json"
VERSION = 1
OPERATIONS = ("create", "delete")


class JournalError(ClusterError):
    """The journal could not be written; the change is kept in memory and written with the next one."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def _operation(value: Any) -> str:
    if value not in OPERATIONS:
        raise ValueError(f"operation must be create or delete, not {value!r}")
    return str(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, not {value!r}")
    return value


@attrs.frozen
class Watched:
    """A create or delete the driver accepted, being polled until it ends."""

    request_id: str = attrs.field(validator=lambda _, __, v: _text(v))
    infrastructure_id: str = attrs.field(validator=lambda _, __, v: _text(v))
    operation: str = attrs.field(validator=lambda _, __, v: _operation(v))
    deployment_location: dict[str, Any] = attrs.field(validator=lambda _, __, v: _mapping(v))

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "Watched":
        data = _mapping(data)
        return cls(data.get("request_id"), data.get("infrastructure_id"), data.get("operation"), data.get("deployment_location"))


@attrs.frozen
class Completion:
    """How a task ended (Ignition's task event in `task`), waiting for the region's acknowledgement."""

    request_id: str = attrs.field(validator=lambda _, __, v: _text(v))
    infrastructure_id: str = attrs.field(validator=lambda _, __, v: _text(v))
    operation: str = attrs.field(validator=lambda _, __, v: _operation(v))
    deployment_location: dict[str, Any] = attrs.field(validator=lambda _, __, v: _mapping(v))
    task: dict[str, Any] = attrs.field(validator=lambda _, __, v: _mapping(v))

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "Completion":
        data = _mapping(data)
        return cls(
            data.get("request_id"), data.get("infrastructure_id"), data.get("operation"), data.get("deployment_location"),
            data.get("task"),
        )


_write_atomically = write_private_atomically

#: Writes `data` to `path` atomically; the Deferred fires once it is on disk.
Writer = Callable[[Path, bytes], "Deferred[None]"]


def write_here(path: Path, data: bytes) -> Deferred[None]:
    """Write on the calling thread: done (or failed) when this returns.  For tests and tools."""
    return maybeDeferred(_write_atomically, path, data)


def write_in_thread(reactor: Any) -> Writer:
    """Write in `reactor`'s thread pool (the journal has at most one write running)."""

    def write(path: Path, data: bytes) -> Deferred[None]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), _write_atomically, path, data)

    return write


@attrs.define(eq=False)
class Journal:
    """The monitored tasks and unacknowledged completions, in memory and in `path`."""

    path: Path
    _write: Writer = attrs.field(default=write_here, repr=False)
    _watched: dict[str, Watched] = attrs.field(factory=dict)
    _undelivered: dict[str, Completion] = attrs.field(factory=dict)
    #: Changes made so far; a write covers every change made before it started.
    _changes: int = attrs.field(init=False, default=0, repr=False)
    #: (change number, fired once a write covering it is done), oldest first.
    _waiting: list[tuple[int, Deferred[None]]] = attrs.field(init=False, factory=list, repr=False)
    _writing: bool = attrs.field(init=False, default=False, repr=False)
    _idle: list[Deferred[None]] = attrs.field(init=False, factory=list, repr=False)

    @classmethod
    def open(cls, directory: Path, write: Writer = write_here) -> "Journal":
        """
        The journal in `directory` (made with mode 0700 if missing); empty if
        there is none yet.  `write` does its writes (`write_in_thread` in the
        cluster); reading it here, at open, is done at once.
        """
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        journal = cls(directory / JOURNAL_NAME, write)
        journal._load()
        return journal

    # -- reading -------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            self._move_aside(f"cannot be read ({e.strerror or e}); starting with an empty journal")
            return
        problems: list[str] = []
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} journal")
            watched, undelivered = data.get("monitored", []), data.get("undelivered", [])
            if not isinstance(watched, list) or not isinstance(undelivered, list):
                raise ValueError("monitored and undelivered must be lists")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self._move_aside(f"unreadable ({e}); starting with an empty journal")
            return
        for index, entry in enumerate(watched):
            try:
                item = Watched.from_json(entry)
                self._watched[item.request_id] = item
            except (ValueError, TypeError) as e:
                problems.append(f"monitored[{index}]: {e}")
        for index, entry in enumerate(undelivered):
            try:
                done = Completion.from_json(entry)
                self._undelivered[done.request_id] = done
            except (ValueError, TypeError) as e:
                problems.append(f"undelivered[{index}]: {e}")
        for request_id in set(self._watched) & set(self._undelivered):
            del self._watched[request_id]  # it ended; only its report is left to send
        if problems:
            self._move_aside("has bad entries, which were dropped: " + "; ".join(problems))
            self._save_quietly()

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        n = 0
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt.{n}")
        try:
            os.replace(self.path, aside)
        except OSError as e:
            log.error("Infrastructure journal {path} {why}; it could not be moved aside: {error}", path=str(self.path), why=why,
                      error=str(e))
            return
        log.error("Infrastructure journal {path} {why}; the file was moved to {aside}", path=str(self.path), why=why,
                  aside=str(aside))

    # -- what is in it -------------------------------------------------------

    @property
    def watched(self) -> tuple[Watched, ...]:
        return tuple(self._watched.values())

    @property
    def undelivered(self) -> tuple[Completion, ...]:
        return tuple(self._undelivered.values())

    @property
    def monitored_count(self) -> int:
        return len(self._watched)

    @property
    def undelivered_count(self) -> int:
        return len(self._undelivered)

    def is_watched(self, request_id: str) -> bool:
        return request_id in self._watched

    # -- changes: each is in memory at once, and on disk when its Deferred fires --

    def watch(self, task: Watched) -> Deferred[None]:
        """Record a task to monitor; fails with `JournalError` if it could not be written (it stays in memory)."""
        self._watched[task.request_id] = task
        return self._changed()

    def complete(self, completion: Completion) -> Deferred[None]:
        """A monitored task ended: swap it for its completion, to deliver (one atomic write)."""
        self._watched.pop(completion.request_id, None)
        self._undelivered[completion.request_id] = completion
        return self._changed()

    def acknowledge(self, request_id: str) -> Deferred[bool]:
        """The region acknowledged the completion of `request_id`: forget it.  False if it was not there."""
        if self._undelivered.pop(request_id, None) is None:
            return succeed(False)
        return self._changed().addCallback(lambda _: True)

    def idle(self) -> Deferred[None]:
        """Fires once no write is running or waiting (to stop without leaving one half-way)."""
        if not self._writing:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._idle.append(done)
        return done

    def _changed(self) -> Deferred[None]:
        self._changes += 1
        done: Deferred[None] = Deferred()
        self._waiting.append((self._changes, done))
        if not self._writing:
            self._start_write()
        return done

    def _document(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "monitored": [w.to_json() for w in self._watched.values()],
            "undelivered": [c.to_json() for c in self._undelivered.values()],
        }

    def _encode(self) -> bytes:
        return json.dumps(self._document(), separators=(",", ":")).encode()

    def _start_write(self) -> None:
        covers = self._changes
        self._writing = True
        # Encoding can fail too (an entry that is not JSON): that is a failed write like any other.
        maybeDeferred(self._encode).addCallback(lambda data: self._write(self.path, data)).addBoth(self._written, covers)

    def _written(self, result: None | Failure, covers: int) -> None:
        done = [d for n, d in self._waiting if n <= covers]
        self._waiting = [(n, d) for n, d in self._waiting if n > covers]
        # Still "writing" while the callbacks run, so a change one of them makes
        # waits for the next write instead of starting one beside this.
        if isinstance(result, Failure):
            error = self._write_failed(result.value)
            for d in done:
                d.errback(error)
        else:
            for d in done:
                d.callback(None)
        self._writing = False
        if self._waiting:
            self._start_write()  # the changes made while this write ran
        else:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _write_failed(self, error: object) -> JournalError:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        log.error("Could not write the infrastructure journal {path}: {error}", path=str(self.path), error=str(error))
        return JournalError(f"could not write the infrastructure journal {self.path}: {reason}")

    def _save(self) -> None:
        """Write now, on this thread (at open, before anything else can run)."""
        try:
            _write_atomically(self.path, self._encode())
        except OSError as e:
            raise self._write_failed(e) from None

    def _save_quietly(self) -> None:
        try:
            self._save()
        except JournalError:
            pass


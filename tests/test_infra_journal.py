"""
The infrastructure journal: what it keeps across a restart, how it writes
(atomic, 0600; one write at a time, the changes made meanwhile together in
the next; off the reactor thread), and what a corrupt or unwritable file
does (moved aside and logged; kept in memory) instead of stopping the
cluster.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from clusterd.infrastructure import journal as journal_module
from clusterd.infrastructure.journal import (
    JOURNAL_NAME,
    Completion,
    Journal,
    JournalError,
    Watched,
    write_in_thread,
)
from tests.deferreds import result

LOCATION = {"name": "site-1", "type": "simulated", "properties": {"zone": "a"}}


def completion(request_id: str, status: str = "COMPLETE") -> Completion:
    return Completion(request_id, "inf-" + request_id, "create", LOCATION,
                      {"requestId": request_id, "infrastructureId": "inf-" + request_id, "status": status})


def errors_in(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]


def test_a_new_journal_is_empty_and_makes_its_directory_private(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "infrastructure"
    journal = Journal.open(directory)
    assert journal.watched == () and journal.undelivered == ()
    assert (journal.monitored_count, journal.undelivered_count) == (0, 0)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert not (directory / JOURNAL_NAME).exists(), "nothing is written until something changes"


def test_every_change_is_on_disk_when_it_returns_with_mode_0600(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.watch(Watched("r1", "i1", "create", LOCATION))
    journal.watch(Watched("r2", "i2", "delete", LOCATION))
    path = tmp_path / JOURNAL_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [w.request_id for w in Journal.open(tmp_path).watched] == ["r1", "r2"]
    journal.complete(completion("r1"))
    reread = Journal.open(tmp_path)
    assert [w.request_id for w in reread.watched] == ["r2"], "completing swaps the task for its report in one write"
    assert reread.undelivered == (completion("r1"),)
    assert (reread.monitored_count, reread.undelivered_count) == (1, 1)
    assert result(journal.acknowledge("r1")) is True
    assert result(journal.acknowledge("r1")) is False, "a second acknowledgement finds nothing"
    assert Journal.open(tmp_path).undelivered == ()
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_NAME], "no temporary files are left behind"


def test_entries_round_trip_exactly(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    watched = Watched("r1", "i1", "delete", {"name": "x", "type": "maas", "properties": {"n": [1, 2, {"deep": None}]}})
    done = Completion("r2", "i2", "create", LOCATION, {"requestId": "r2", "infrastructureId": "i2", "status": "FAILED",
                                                       "failureDetails": {"failureCode": "INTERNAL_ERROR", "description": "é"}})
    journal.watch(watched)
    journal.watch(Watched("r2", "i2", "create", LOCATION))
    journal.complete(done)
    reread = Journal.open(tmp_path)
    assert reread.watched == (watched,) and reread.undelivered == (done,)


def test_a_failed_write_keeps_the_old_file_and_the_change_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     logged: list[dict[str, Any]]) -> None:
    journal = Journal.open(tmp_path)
    journal.watch(Watched("r1", "i1", "create", LOCATION))
    before = (tmp_path / JOURNAL_NAME).read_bytes()

    def disk_full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "replace", disk_full)
    with pytest.raises(JournalError, match="No space left on device"):
        result(journal.watch(Watched("r2", "i2", "create", LOCATION)))
    assert (tmp_path / JOURNAL_NAME).read_bytes() == before, "the file is the state before the change"
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_NAME], "the temporary file is removed"
    assert journal.is_watched("r2"), "the change is kept in memory"
    assert any("No space left on device" in e for e in errors_in(logged))
    monkeypatch.undo()
    journal.complete(completion("r1"))
    reread = Journal.open(tmp_path)
    assert [w.request_id for w in reread.watched] == ["r2"], "the next write carries the earlier change too"


@pytest.mark.parametrize("content", [
    b"{not json",
    b"\xff\xfe\x00",
    b"[]",
    b'{"version": 99, "monitored": [], "undelivered": []}',
    b'{"version": 1, "monitored": {}, "undelivered": []}',
    b"[" * 100_000,
], ids=["not-json", "not-utf8", "a-list", "unknown-version", "wrong-shape", "deep-nesting"])
def test_an_unreadable_journal_is_moved_aside_and_logged(tmp_path: Path, content: bytes, logged: list[dict[str, Any]]) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(content)
    journal = Journal.open(tmp_path)
    assert journal.watched == () and journal.undelivered == ()
    assert (tmp_path / (JOURNAL_NAME + ".corrupt")).read_bytes() == content, "kept for a person to look at"
    assert not (tmp_path / JOURNAL_NAME).exists()
    [error] = errors_in(logged)
    assert "moved to" in error and JOURNAL_NAME + ".corrupt" in error
    # A second corrupt file does not overwrite the first one moved aside.
    (tmp_path / JOURNAL_NAME).write_bytes(b"again")
    Journal.open(tmp_path)
    assert (tmp_path / (JOURNAL_NAME + ".corrupt.1")).read_bytes() == b"again"
    assert (tmp_path / (JOURNAL_NAME + ".corrupt")).read_bytes() == content


def test_bad_entries_are_dropped_and_the_good_ones_kept(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    good = Watched("r1", "i1", "create", LOCATION)
    document = {
        "version": 1,
        "monitored": [good.to_json(), {"request_id": "r2"}, "junk", {**good.to_json(), "request_id": "r3", "operation": "update"}],
        "undelivered": [completion("r4").to_json(), {**completion("r5").to_json(), "task": []}],
    }
    (tmp_path / JOURNAL_NAME).write_text(json.dumps(document))
    journal = Journal.open(tmp_path)
    assert journal.watched == (good,) and journal.undelivered == (completion("r4"),)
    [error] = errors_in(logged)
    assert "monitored[1]" in error and "monitored[2]" in error and "monitored[3]" in error and "undelivered[1]" in error
    assert json.loads((tmp_path / (JOURNAL_NAME + ".corrupt")).read_text()) == document
    reread = Journal.open(tmp_path)
    assert reread.watched == (good,) and reread.undelivered == (completion("r4"),), "what was kept is written back"


def test_a_task_that_is_both_watched_and_ended_is_only_delivered(tmp_path: Path) -> None:
    document = {"version": 1, "monitored": [Watched("r1", "i1", "create", LOCATION).to_json()],
                "undelivered": [completion("r1").to_json()]}
    (tmp_path / JOURNAL_NAME).write_text(json.dumps(document))
    journal = Journal.open(tmp_path)
    assert journal.watched == () and journal.undelivered == (completion("r1"),)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["version", "monitored", "undelivered", "request_id", "infrastructure_id", "operation",
                             "deployment_location", "task", "x"]), inner, max_size=6),
        max_leaves=30,
    ).map(lambda v: json.dumps(v).encode()),
))
def test_any_file_content_opens_to_a_journal(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    directory = tmp_path_factory.mktemp("journal")
    (directory / JOURNAL_NAME).write_bytes(content)
    journal = Journal.open(directory)
    for task in journal.watched:
        assert task.operation in ("create", "delete") and isinstance(task.deployment_location, dict)
    journal.watch(Watched("new", "i", "create", LOCATION))
    assert Journal.open(directory).is_watched("new"), "a journal that was corrupt is usable afterwards"


def test_a_journal_path_that_cannot_be_read_is_moved_aside(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    (tmp_path / JOURNAL_NAME).mkdir()
    journal = Journal.open(tmp_path)
    assert journal.watched == ()
    assert (tmp_path / (JOURNAL_NAME + ".corrupt")).is_dir()
    assert len(errors_in(logged)) == 1
    journal.watch(Watched("r1", "i1", "create", LOCATION))
    assert Journal.open(tmp_path).is_watched("r1")


class HeldWrites:
    """A writer whose writes land (for real) only when the test says so."""

    def __init__(self) -> None:
        self.held: list[tuple[Path, bytes, Deferred[None]]] = []

    def __call__(self, path: Path, data: bytes) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self.held.append((path, data, done))
        return done

    def land(self, error: OSError | None = None) -> list[str]:
        """Finish the oldest write; the request ids it held as monitored."""
        path, data, done = self.held.pop(0)
        if error is not None:
            done.errback(error)
        else:
            journal_module.write_private_atomically(path, data)
            done.callback(None)
        return [w["request_id"] for w in json.loads(data)["monitored"]]


def test_changes_made_while_a_write_runs_go_to_disk_together_in_the_next(tmp_path: Path) -> None:
    """A burst costs two writes, not one each, and no change is reported written before it is."""
    directory = tmp_path
    writes = HeldWrites()
    journal = Journal.open(directory, write=writes)
    first = journal.watch(Watched("r1", "i1", "create", LOCATION))
    rest = [journal.watch(Watched(f"r{n}", f"i{n}", "create", LOCATION)) for n in (2, 3, 4)]
    assert len(writes.held) == 1, "one write at a time"
    assert journal.idle().called is False
    assert writes.land() == ["r1"]
    assert result(first) is None and not any(d.called for d in rest), "r2-r4 are not on disk yet"
    assert len(writes.held) == 1, "the changes made meanwhile, in one write"
    idle = journal.idle()
    assert writes.land() == ["r1", "r2", "r3", "r4"]
    assert [result(d) for d in rest] == [None, None, None] and idle.called
    assert writes.held == [] and [w.request_id for w in Journal.open(directory).watched] == ["r1", "r2", "r3", "r4"]


def test_a_change_made_when_a_write_lands_waits_for_the_next_write(tmp_path: Path) -> None:
    """A callback that changes the journal (the monitor's, say) never starts a second write beside the first."""
    writes = HeldWrites()
    journal = Journal.open(tmp_path, write=writes)
    first = journal.watch(Watched("r1", "i1", "create", LOCATION))
    then: list[Deferred[None]] = []
    first.addCallback(lambda _: then.append(journal.complete(completion("r1"))))
    assert writes.land() == ["r1"] and len(then) == 1
    assert len(writes.held) == 1, "one write at a time"
    idle = journal.idle()
    assert not idle.called and not then[0].called
    assert writes.land() == [] and result(then[0]) is None and idle.called
    assert writes.held == [] and Journal.open(tmp_path).undelivered == (completion("r1"),)


def test_an_entry_that_cannot_be_encoded_fails_its_change_and_nothing_hangs(tmp_path: Path,
                                                                           logged: list[dict[str, Any]]) -> None:
    writes = HeldWrites()
    journal = Journal.open(tmp_path, write=writes)
    first = journal.watch(Watched("r1", "i1", "create", LOCATION))
    later = journal.complete(Completion("r2", "i2", "create", LOCATION, {"requestId": "r2", "outputs": {"x": object()}}))
    writes.land()
    assert result(first) is None
    with pytest.raises(JournalError, match="not JSON serializable"):
        result(later)
    assert writes.held == [] and result(journal.idle()) is None


def test_a_failed_write_fails_every_change_it_carried_and_the_next_write_carries_them_again(
        tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    directory = tmp_path
    writes = HeldWrites()
    journal = Journal.open(directory, write=writes)
    first = journal.watch(Watched("r1", "i1", "create", LOCATION))
    writes.land(OSError(28, "No space left on device"))
    with pytest.raises(JournalError, match="No space left on device"):
        result(first)
    assert any("No space left on device" in e for e in errors_in(logged))
    assert journal.is_watched("r1") and writes.held == [], "kept in memory; nothing retried on its own"
    second = journal.complete(completion("r2"))
    assert writes.land() == ["r1"] and result(second) is None
    assert Journal.open(directory).undelivered == (completion("r2"),)


@pytest_twisted.ensureDeferred
async def test_the_cluster_s_writer_writes_in_a_thread(tmp_path: Path) -> None:
    """`write_in_thread` (what the cluster uses): the reactor thread only waits for the Deferred."""
    import threading

    directory = tmp_path
    threads: list[str] = []
    real = journal_module._write_atomically

    def noting(path: Path, data: bytes) -> None:
        threads.append(threading.current_thread().name)
        real(path, data)

    journal_module._write_atomically = noting
    try:
        journal = Journal.open(directory, write=write_in_thread(reactor))
        await journal.watch(Watched("r1", "i1", "create", LOCATION))
        assert await journal.acknowledge("nope") is False
        await journal.complete(completion("r1"))
        await journal.idle()
    finally:
        journal_module._write_atomically = real
    assert len(threads) == 2, "a write for the watch, one for the completion; the acknowledgement found nothing"
    assert threading.main_thread().name not in threads
    reread = Journal.open(directory)
    assert reread.watched == () and reread.undelivered == (completion("r1"),)

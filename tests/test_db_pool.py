"""Database: the region's async PostgreSQL API, against a real server."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg2.errors
import pytest
import pytest_twisted
from psycopg2.extensions import make_dsn
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent

from regiond.db import Database, DatabaseConnectError, DatabaseUnavailable, EmbeddedPostgres, Json, Transaction
from tests.pg import PgServer, wait_for


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _table(db: Database) -> None:
    await db.execute("CREATE TABLE t (id integer PRIMARY KEY, name text NOT NULL)")


@pytest_twisted.ensureDeferred
async def test_fetch_returns_rows_as_dicts_keyed_by_column(db: Database) -> None:
    await _table(db)
    await db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    assert await db.fetch("SELECT id, name FROM t ORDER BY id") == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
    ]
    assert await db.fetch("SELECT * FROM t WHERE id > %s", (5,)) == []


@pytest_twisted.ensureDeferred
async def test_fetchone_returns_the_first_row_or_none(db: Database) -> None:
    await _table(db)
    await db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    assert await db.fetchone("SELECT name FROM t ORDER BY id DESC") == {"name": "b"}
    assert await db.fetchone("SELECT name FROM t WHERE id = %s", (3,)) is None


@pytest_twisted.ensureDeferred
async def test_execute_returns_the_row_count(db: Database) -> None:
    await _table(db)
    assert await db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')") == 3
    assert await db.execute("UPDATE t SET name = %s WHERE id >= %s", ("x", 2)) == 2
    assert await db.execute("DELETE FROM t WHERE id = %s", (9,)) == 0


@pytest_twisted.ensureDeferred
async def test_parameters_are_sent_as_values_never_as_sql(db: Database) -> None:
    await _table(db)
    hostile = "x'); DROP TABLE t; --"
    await db.execute("INSERT INTO t VALUES (%s, %s)", (1, hostile))
    assert await db.fetchone("SELECT name FROM t") == {"name": hostile}


@pytest_twisted.ensureDeferred
async def test_sql_without_parameters_is_sent_as_written(db: Database) -> None:
    # A literal % needs no doubling when there are no parameters.
    assert await db.fetchone("SELECT '100%' AS p") == {"p": "100%"}
    assert await db.fetchone("SELECT %s || '%%' AS p", ("100",)) == {"p": "100%"}


@pytest_twisted.ensureDeferred
async def test_uuid_and_jsonb_round_trip(db: Database) -> None:
    cluster = uuid.uuid4()
    await db.execute(
        "INSERT INTO clusters (uuid, name, capabilities) VALUES (%s, %s, %s)",
        (str(cluster), "site-1", Json(["power", "storage"])),
    )
    row = await db.fetchone("SELECT uuid, capabilities FROM clusters")
    assert row == {"uuid": str(cluster), "capabilities": ["power", "storage"]}


@pytest_twisted.ensureDeferred
async def test_transaction_commits_and_returns_what_fn_returns(db: Database) -> None:
    await _table(db)

    async def work(tx: Transaction) -> int:
        await tx.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        row = await tx.fetchone("SELECT count(*) AS n FROM t")
        assert row is not None
        rows = await tx.fetch("SELECT name FROM t")
        assert rows == [{"name": "a"}]
        return int(row["n"])

    assert await db.transaction(work) == 1
    assert await db.fetch("SELECT id FROM t") == [{"id": 1}]


class Boom(Exception):
    pass


@pytest_twisted.ensureDeferred
async def test_transaction_rolls_back_when_fn_raises(db: Database) -> None:
    await _table(db)

    async def work(tx: Transaction) -> None:
        await tx.execute("INSERT INTO t VALUES (1, 'a')")
        await tx.execute("UPDATE t SET name = 'b'")
        raise Boom()

    with pytest.raises(Boom):
        await db.transaction(work)
    assert await db.fetch("SELECT * FROM t") == []


@pytest_twisted.ensureDeferred
async def test_transaction_rolls_back_on_sql_error_and_pool_stays_usable(
    db: Database,
) -> None:
    await _table(db)
    await db.execute("INSERT INTO t VALUES (1, 'a')")

    async def work(tx: Transaction) -> None:
        await tx.execute("INSERT INTO t VALUES (2, 'b')")
        await tx.execute("INSERT INTO t VALUES (1, 'duplicate')")

    with pytest.raises(psycopg2.errors.UniqueViolation):
        await db.transaction(work)
    # Every pooled connection is still usable (none left in a failed transaction).
    results = await gatherResults(
        [Deferred.fromCoroutine(db.fetch("SELECT id FROM t")) for _ in range(8)]
    )
    assert results == [[{"id": 1}]] * 8


@pytest_twisted.ensureDeferred
async def test_more_concurrent_queries_than_connections_all_complete(
    db: Database,
) -> None:
    queries = [
        Deferred.fromCoroutine(db.fetchone("SELECT %s AS n, pg_sleep(0.01)", (n,)))
        for n in range(20)
    ]
    rows = await gatherResults(queries)
    assert rows == [{"n": n, "pg_sleep": ""} for n in range(20)]


@pytest_twisted.ensureDeferred
async def test_listen_delivers_notify_payload(db: Database) -> None:
    received: Deferred[tuple[str, str]] = Deferred()
    await db.listen(
        "region_events", lambda channel, payload: received.callback((channel, payload))
    )
    await db.notify("region_events", "héllo 'world'")
    result = await received.addTimeout(5, _reactor())
    assert result == ("region_events", "héllo 'world'")


@pytest_twisted.ensureDeferred
async def test_notify_from_another_connection_reaches_every_listener(
    db: Database, db_dsn: str
) -> None:
    first: Deferred[str] = Deferred()
    second: Deferred[str] = Deferred()
    await db.listen("Mixed.Case", lambda c, p: first.callback(p))
    await db.listen("Mixed.Case", lambda c, p: second.callback(p))
    other = await Database.connect(_reactor(), db_dsn, size=1)
    try:
        await other.execute("NOTIFY \"Mixed.Case\", 'from elsewhere'")
    finally:
        await other.close()
    assert await first.addTimeout(5, _reactor()) == "from elsewhere"
    assert await second.addTimeout(5, _reactor()) == "from elsewhere"


@pytest_twisted.ensureDeferred
async def test_unlisten_stops_delivery(db: Database) -> None:
    stale: list[str] = []
    done: Deferred[str] = Deferred()

    def on_stale(channel: str, payload: str) -> None:
        stale.append(payload)

    await db.listen("stale", on_stale)
    await db.listen("marker", lambda c, p: done.callback(p))
    await db.unlisten("stale", on_stale)
    await db.notify("stale", "too late")
    # Notifications arrive in commit order, so once the marker is in, the
    # stale one would have been too.
    await db.notify("marker", "end")
    assert await done.addTimeout(5, _reactor()) == "end"
    assert stale == []


@pytest_twisted.ensureDeferred
async def test_a_failing_callback_does_not_stop_the_others(db: Database) -> None:
    received: Deferred[str] = Deferred()

    def broken(channel: str, payload: str) -> None:
        raise Boom()

    await db.listen("ch", broken)
    await db.listen("ch", lambda c, p: received.callback(p))
    await db.notify("ch", "still delivered")
    assert await received.addTimeout(5, _reactor()) == "still delivered"


@pytest_twisted.ensureDeferred
async def test_close_ends_every_session_even_mid_query(
    db_dsn: str, db: Database
) -> None:
    closing = await Database.connect(_reactor(), db_dsn, size=2)
    await closing.listen("ch", lambda c, p: None)
    running = Deferred.fromCoroutine(closing.fetch("SELECT pg_sleep(30)"))
    await closing.close()
    with pytest.raises(Exception):
        await running.addTimeout(5, _reactor())
    await closing.close()  # a second close is harmless
    with pytest.raises(DatabaseUnavailable, match="closed"):
        await closing.fetch("SELECT 1")  # closed for good: never reopened

    # The server notices a closed socket only when it next reads from it; the
    # backend still running pg_sleep is the server's business, not a leak.
    counts: list[int] = []
    deadline = _reactor().seconds() + 5
    while True:
        row = await db.fetchone(
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query <> 'SELECT pg_sleep(30)'"
        )
        assert row is not None
        counts.append(row["n"])
        if row["n"] == 3:  # db's own other pooled connections
            break
        assert _reactor().seconds() < deadline, counts
        await deferLater(_reactor(), 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_connect_to_a_missing_server_is_a_database_connect_error_without_secrets(
    pg_server: PgServer, tmp_path: Path
) -> None:
    dsn = make_dsn(pg_server.server.dsn, host=str(tmp_path), password="s3cret")
    with pytest.raises(DatabaseConnectError) as caught:
        await Database.connect(_reactor(), dsn, size=2)
    assert str(tmp_path) in str(caught.value)
    assert "s3cret" not in str(caught.value)  # messages end up in logs


# -- sessions that end: PostgreSQL restarted, or an admin's pg_terminate_backend --


async def _end_sessions(pg_server: PgServer, db: Database) -> int:
    """
    End every session of `db`'s database, as a PostgreSQL restart would, and
    return how many ended. Each backend has exited when this returns, but
    this process's reactor may not yet have read that from the sockets.
    """
    database = psycopg2.extensions.parse_dsn(db.dsn)["dbname"]
    rows = await pg_server.admin.fetch(
        "SELECT pg_terminate_backend(pid, 5000) AS ended FROM pg_stat_activity WHERE datname = %s", (database,)
    )
    return sum(1 for row in rows if row["ended"])


def _tracebacks(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events if "log_failure" in e or e.get("isError")]


@pytest_twisted.ensureDeferred
async def test_connections_whose_sessions_ended_are_reopened_on_next_use(
    pg_server: PgServer, db: Database, logged: list[dict[str, Any]]
) -> None:
    await _table(db)
    assert await _end_sessions(pg_server, db) == 4
    # Every connection is reopened as it is checked out: nothing fails.
    assert await gatherResults([
        Deferred.fromCoroutine(db.execute("INSERT INTO t VALUES (%s, 'x')", (i,))) for i in range(8)
    ]) == [1] * 8
    assert await db.transaction(lambda tx: tx.fetchone("SELECT count(*) AS n FROM t")) == {"n": 8}
    assert not any(c.lost for c in db._pool._every_connection)
    assert db.pool_in_use() == (0, 4)
    # One line each, no traceback.
    assert _tracebacks(logged) == []
    warnings = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]
    assert len(warnings) == 4 and all("PostgreSQL ended a session" in w for w in warnings)


@pytest_twisted.ensureDeferred
async def test_a_statement_whose_session_ends_fails_as_unavailable_and_the_pool_recovers(
    pg_server: PgServer, db: Database, logged: list[dict[str, Any]]
) -> None:
    running = Deferred.fromCoroutine(db.fetch("SELECT pg_sleep(30)"))
    await wait_for(lambda: db.pool_in_use()[0] == 1)
    await _end_sessions(pg_server, db)
    with pytest.raises(DatabaseUnavailable, match="lost the connection to PostgreSQL"):
        await running.addTimeout(10, _reactor())
    assert await db.fetchone("SELECT 1 AS ok") == {"ok": 1}
    assert db.pool_in_use() == (0, 4)
    assert _tracebacks(logged) == []


@pytest_twisted.ensureDeferred
async def test_a_transaction_whose_session_ends_fails_as_unavailable_and_commits_nothing(
    pg_server: PgServer, db: Database
) -> None:
    await _table(db)
    inserted: Deferred[None] = Deferred()

    async def interrupted(tx: Transaction) -> None:
        await tx.execute("INSERT INTO t VALUES (1, 'lost')")
        inserted.callback(None)
        await tx.execute("SELECT pg_sleep(30)")

    running = Deferred.fromCoroutine(db.transaction(interrupted))
    await inserted
    await _end_sessions(pg_server, db)
    with pytest.raises(DatabaseUnavailable):
        await running.addTimeout(10, _reactor())
    assert await db.fetch("SELECT * FROM t") == []


@pytest_twisted.ensureDeferred
async def test_statement_errors_on_a_live_connection_are_not_wrapped(db: Database) -> None:
    # A statement's own OperationalError (a serialization failure, which a
    # caller may retry) is the caller's to handle, not an unavailable database.
    conflict = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"
    with pytest.raises(psycopg2.errors.SerializationFailure):
        await db.transaction(lambda tx: tx.execute(conflict))
    with pytest.raises(psycopg2.errors.SerializationFailure):
        await db.execute(conflict)
    assert await db.fetchone("SELECT 1 AS ok") == {"ok": 1}


@pytest_twisted.ensureDeferred
async def test_a_stopped_server_is_unavailable_without_secrets_then_served_again_when_back(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    root = Path(tempfile.mkdtemp(prefix="outpost-pg-", dir="/tmp"))
    root.chmod(0o755)
    server = EmbeddedPostgres(_reactor(), root / "pg", settings={"fsync": "off"})
    try:
        await server.start()
        db = await Database.connect(_reactor(), make_dsn(server.dsn, password="s3cret"), size=2)
        try:
            assert await db.fetchone("SELECT 1 AS ok") == {"ok": 1}
            await server.stop()
            for _ in range(3):  # each try reopens, fails, and leaves the pool whole
                with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL") as caught:
                    await db.fetch("SELECT 1")
                assert "s3cret" not in str(caught.value)
            assert db.pool_in_use() == (0, 2)
            await server.start()
            assert await db.fetchone("SELECT 2 AS ok") == {"ok": 2}
        finally:
            await db.close()
    finally:
        await server.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert _tracebacks(logged) == []
    assert not any("s3cret" in formatEvent(e) for e in logged)

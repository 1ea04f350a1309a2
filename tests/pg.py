"""
pytest plugin: real PostgreSQL for integration tests.

One embedded server runs for the whole session (initdb costs ~0.7 s, a start
~0.12 s). Migrations are applied once, to a template database; each test that
asks for ``db_dsn`` or ``db`` gets its own copy of it (~50 ms to create), so
tests cannot see each other's rows and need no cleanup.

Fixtures:

- ``pg_server`` (session): a `PgServer`, for tests that need more than one
  database or a database at another schema version.
- ``db_dsn``: the DSN of a fresh, migrated database, dropped afterwards.
- ``empty_db_dsn``: the DSN of a fresh database with no schema at all.
- ``db``: a connected `Database` on ``db_dsn``.

Enable it with ``pytest_plugins = ["tests.pg"]`` in a conftest.py.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from psycopg2.extensions import make_dsn
from psycopg2.sql import SQL, Identifier
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from regiond.db import Database, EmbeddedPostgres, migrate

__all__ = ["PgServer", "server_account", "wait_for"]

_TEMPLATE = "outpost_template"
_FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _reactor() -> Any:
    # Tests may use the global reactor: pytest-twisted runs it.
    from twisted.internet import reactor

    return reactor


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """
    Poll ``predicate`` on the reactor until it holds; fail after ``timeout``.

    For waiting on something outside the process (a child exiting, say)
    without sleeping the reactor's thread.
    """
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await deferLater(reactor, interval, lambda: None)


@attrs.define
class PgServer:
    """The session's server, an admin connection to it, and database names."""

    server: EmbeddedPostgres
    admin: Database
    template: str = _TEMPLATE
    _counter: Iterator[int] = attrs.field(factory=itertools.count, init=False)
    _drops: list[Deferred[None]] = attrs.field(factory=list, init=False)

    def dsn_for(self, database: str) -> str:
        return make_dsn(self.server.dsn, dbname=database)

    async def create_database(self, template: str | None = None) -> str:
        """Create ``test_<n>`` (a copy of ``template``, if given); return its name."""
        name = f"test_{next(self._counter)}"
        statement = SQL("CREATE DATABASE {}").format(Identifier(name))
        if template is not None:
            statement = SQL("{} TEMPLATE {}").format(statement, Identifier(template))
        await self.admin.execute(statement)
        return name

    async def drop_database(self, name: str) -> None:
        # FORCE: a test that failed may have left connections open.
        await self.admin.execute(
            SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(name))
        )

    def drop_later(self, name: str) -> None:
        """
        Drop ``name`` in the background; `settle` waits for every such drop.

        A drop takes ~0.1 s that no test needs to wait for: the admin pool
        has a second connection, so the next test's CREATE runs meanwhile.
        """
        self._drops.append(Deferred.fromCoroutine(self.drop_database(name)))

    async def settle(self) -> None:
        drops, self._drops = self._drops, []
        await gatherResults(drops)


async def _start(directory: Path) -> PgServer:
    reactor = _reactor()
    # Durability buys nothing for throwaway databases and costs an fsync per
    # commit and per CREATE DATABASE (seconds per run on a busy disk).
    server = EmbeddedPostgres(reactor, directory, settings=_FAST)
    await server.start()
    try:
        admin = await Database.connect(reactor, server.dsn, size=2)
        pg = PgServer(server, admin)
        await admin.execute(SQL("CREATE DATABASE {}").format(Identifier(pg.template)))
        template = await Database.connect(reactor, pg.dsn_for(pg.template), size=1)
        try:
            await migrate(template)
        finally:
            # CREATE DATABASE ... TEMPLATE needs the template to have no sessions.
            await template.close()
    except BaseException:
        await server.stop()  # fast mode: it ends the sessions left open
        raise
    return pg


async def _finish(pg: PgServer) -> None:
    await pg.settle()
    await pg.admin.close()
    await pg.server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Not pytest's tmp_path: that lies under a 0700 directory which the
    # postgres user (the server's account when tests run as root) can't enter.
    root = Path(tempfile.mkdtemp(prefix="outpost-pg-", dir="/tmp"))
    root.chmod(0o755)
    try:
        pg = pytest_twisted.blockon(Deferred.fromCoroutine(_start(root / "pg")))
        try:
            yield pg
        finally:
            pytest_twisted.blockon(Deferred.fromCoroutine(_finish(pg)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _database(pg: PgServer, template: str | None) -> Iterator[str]:
    name = pytest_twisted.blockon(Deferred.fromCoroutine(pg.create_database(template)))
    try:
        yield pg.dsn_for(name)
    finally:
        pg.drop_later(name)


@pytest.fixture
def db_dsn(pg_server: PgServer) -> Iterator[str]:
    yield from _database(pg_server, pg_server.template)


@pytest.fixture
def empty_db_dsn(pg_server: PgServer) -> Iterator[str]:
    yield from _database(pg_server, None)


@pytest_twisted.async_yield_fixture
async def db(db_dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(_reactor(), db_dsn)
    try:
        yield database
    finally:
        await database.close()


def server_account() -> tuple[int, int] | None:
    """(uid, gid) the embedded server runs as, or None when it runs as us."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid

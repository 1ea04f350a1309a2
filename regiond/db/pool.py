"""
The region's connection to PostgreSQL: a small async API over txpostgres.

Rows come back as dicts keyed by column name, so callers do not depend on
column order. Every statement takes ``%s`` placeholders and a parameter
tuple; SQL is never built by string formatting. Query errors are psycopg2's
own (``psycopg2.errors.UniqueViolation`` and so on), so callers can catch the
one they handle. The exception is a lost connection: when PostgreSQL ends a
session (it restarted, say), the statement on it fails with
`DatabaseUnavailable` and the connection is reopened on its next use, so the
region rides out a database restart without being restarted itself. Session
state (SET, session advisory locks) does not survive that: whoever relies on
it checks for it (see `regiond.leader`).

Type mapping is psycopg2's default: ``uuid`` columns come back as ``str``,
``json``/``jsonb`` as Python objects, ``timestamptz`` as aware datetimes. To
pass a dict or list into a ``jsonb`` parameter, wrap it in ``Json(...)``.
"""

from __future__ import annotations

import select
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, Protocol, TypeAlias, TypeVar

import attrs
import psycopg2
from psycopg2.extensions import Notify, make_dsn, parse_dsn
from psycopg2.sql import SQL, Composable, Identifier
from twisted.internet.defer import Deferred, DeferredLock, FirstError
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from txpostgres.txpostgres import Connection, ConnectionPool, Cursor, RollbackFailed

from regiond.errors import DatabaseConnectError, DatabaseUnavailable

__all__ = [
    "Database",
    "IDatabaseReactor",
    "NotifyCallback",
    "Params",
    "Query",
    "Row",
    "Transaction",
]

_log = Logger()

Row = dict[str, Any]
#: SQL text with %s placeholders, or a psycopg2.sql composition (for identifiers).
Query: TypeAlias = str | Composable
Params = Sequence[Any]
#: Called with (channel, payload) for each NOTIFY on a channel listened to.
NotifyCallback = Callable[[str, str], object]
_T = TypeVar("_T")


class IDatabaseReactor(IReactorFDSet, IReactorTime):
    """
    What Database needs of a reactor: txpostgres watches the libpq sockets
    (IReactorFDSet) and schedules its callbacks (IReactorTime).
    """


class QueryMetrics(Protocol):
    """What `Database` times its statements into (`outpost.metrics.QueryMetrics`)."""

    def observe(self, kind: str, ok: bool, seconds: float) -> None: ...


def _params(params: Params) -> Params | None:
    # psycopg2 applies %-formatting whenever params is not None, so an empty
    # tuple would make a literal '%' in parameterless SQL an IndexError.
    # Without parameters the text is therefore sent exactly as written.
    return params if params else None


def _redacted(dsn: str) -> str:
    """The DSN, fit for an error message or a log: no password."""
    try:
        parts = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "an unparseable DSN"
    if "password" in parts:
        parts["password"] = "***"
    return str(make_dsn(**parts))


def _rows(cursor: Cursor) -> list[Row]:
    if cursor.description is None:
        return []
    names = [column.name for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class _Connection(Connection):  # type: ignore[misc]
    """
    txpostgres's connection, which knows when its session has ended and says
    so in one line.

    txpostgres keeps every connection registered for reading so that NOTIFYs
    arrive at once; when PostgreSQL ends the session (a restart, a
    ``pg_terminate_backend``), that read raises and the reactor would log it
    with a traceback. An ended session is expected, and the pool reopens the
    connection on its next use, so it is logged as a warning instead.
    """

    @property
    def lost(self) -> bool:
        """Whether the session is gone (or never opened): the next use must reopen it."""
        return self._connection is None or bool(self._connection.closed)

    def lost_while_idle(self) -> bool:
        """
        Whether the session is gone, reading what the server sent while the
        connection sat idle (without waiting): a session the server has just
        ended is found here even before the reactor has read its socket.
        """
        if self.lost:
            return True
        try:
            readable, _, _ = select.select([self._connection.fileno()], [], [], 0)
            if readable:
                self._connection.poll()
        except psycopg2.Error as e:
            _ended(e)
        except (OSError, ValueError):
            pass  # a socket closed under us: `lost` says so
        return self.lost

    def doRead(self) -> object:  # noqa: N802 (Twisted's name)
        try:
            return super().doRead()
        except psycopg2.Error as e:
            _ended(e)
            # Returned, not raised: the reactor then calls connectionLost without logging a traceback.
            return ConnectionLost(_first_line(e))


def _ended(error: psycopg2.Error) -> None:
    _log.warn("PostgreSQL ended a session ({error}); it is reopened on its next use", error=_first_line(error))


class _Pool(ConnectionPool):  # type: ignore[misc]
    """
    txpostgres's pool, with an injected reactor and cooperator instead of the
    global ones; a connection whose session has ended is reopened when it is
    next checked out, and a statement that loses its connection fails with
    `DatabaseUnavailable`. (txpostgres's own pool keeps a dead connection for
    good, so one PostgreSQL restart would fail every later query.) One extra
    operation runs a function on a pooled connection's cursor outside any
    transaction: the pool's own runQuery and runOperation return neither
    column names nor row counts.
    """

    connectionFactory = _Connection

    def __init__(
        self, reactor: IDatabaseReactor, cooperator: Cooperator, dsn: str, size: int
    ) -> None:
        # ConnectionPool reads these in __init__ to build its connections.
        self.reactor = reactor
        self.cooperator = cooperator
        self.dsn = dsn
        super().__init__(None, dsn, min=size)
        # `connections` holds only the idle ones; closing must reach all.
        self._every_connection = frozenset(self.connections)
        #: Set by `close_all`: nothing is reopened after it.
        self.closed = False

    def run_with_cursor(self, fn: Callable[[Cursor], Awaitable[_T]]) -> Deferred[_T]:
        async def use(connection: _Connection) -> _T:
            cursor = connection.cursor()
            try:
                return await fn(cursor)
            finally:
                with suppress(psycopg2.Error):  # the connection may be gone
                    cursor.close()

        # The connection's own lock keeps queries on it one at a time.
        return self._checked_out(lambda c: c.lock.run(lambda: Deferred.fromCoroutine(use(c))))

    def run_interaction(self, fn: Callable[[Cursor], Deferred[_T]]) -> Deferred[_T]:
        """As ``runInteraction``: `fn` runs between BEGIN and COMMIT (ROLLBACK if it fails)."""
        return self._checked_out(lambda c: c.runInteraction(fn))

    def _checked_out(self, use: Callable[[_Connection], Deferred[_T]]) -> Deferred[_T]:
        # As ConnectionPool._runQuery: the semaphore guarantees a free connection.
        return self._semaphore.run(lambda: Deferred.fromCoroutine(self._on_connection(use)))  # type: ignore[no-any-return]

    async def _on_connection(self, use: Callable[[_Connection], Deferred[_T]]) -> _T:
        if self.closed:
            raise DatabaseUnavailable("this Database has been closed")
        connection = self.connections.pop()
        try:
            if connection.lost_while_idle():
                await self._reopen(connection)
            try:
                return await use(connection)
            except (psycopg2.OperationalError, psycopg2.InterfaceError, RollbackFailed) as e:
                if not connection.lost:
                    raise  # a statement's own error (a serialization failure, say)
                cause = e.originalFailure.value if isinstance(e, RollbackFailed) else e
                raise DatabaseUnavailable(
                    f"lost the connection to PostgreSQL: {_first_line(cause)}"
                ) from e
        finally:
            self.connections.add(connection)

    async def _reopen(self, connection: _Connection) -> None:
        if connection._connection is not None:
            connection.close()
        try:
            await connection.connect(self.dsn)
        except Exception as e:
            if connection._connection is not None:
                with suppress(psycopg2.Error):
                    connection._connection.close()  # so that it counts as lost
            raise DatabaseUnavailable(
                f"cannot reach PostgreSQL ({_redacted(self.dsn)}): {_first_line(e)}"
            ) from e
        _log.info("Reopened a connection to PostgreSQL")

    def in_use(self) -> tuple[int, int]:
        """(connections in use, pool size)."""
        size = len(self._every_connection)
        return size - len(self.connections), size

    def close_all(self) -> None:
        """Close every connection, including ones that never connected, for good."""
        self.closed = True
        for connection in self._every_connection:
            if connection._connection is not None:
                connection.close()


@attrs.define
class Transaction:
    """
    What a ``Database.transaction`` function is given: the query methods of
    ``Database``, all run on one connection inside one transaction.
    """

    _cursor: Cursor

    async def execute(self, sql: Query, params: Params = ()) -> int:
        """Run a statement; return its row count."""
        await self._cursor.execute(sql, _params(params))
        return int(self._cursor.rowcount)

    async def fetch(self, sql: Query, params: Params = ()) -> list[Row]:
        """Run a query; return all its rows."""
        await self._cursor.execute(sql, _params(params))
        return _rows(self._cursor)

    async def fetchone(self, sql: Query, params: Params = ()) -> Row | None:
        """Run a query; return its first row, or None if it has none."""
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None


@attrs.define
class Database:
    """
    A pool of connections to one database, plus one more for LISTEN.

    Notifications need a connection of their own: LISTEN is per session, and
    a pooled connection is shared by whoever runs the next query.
    """

    reactor: IDatabaseReactor
    dsn: str = attrs.field(repr=False)  # it may hold a password
    _pool: _Pool
    _cooperator: Cooperator
    _listener: Connection | None = attrs.field(default=None, init=False)
    _listener_lock: DeferredLock = attrs.field(factory=DeferredLock, init=False)
    _callbacks: dict[str, list[NotifyCallback]] = attrs.field(factory=dict, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    #: Times every fetch, execute and transaction; None records nothing.
    metrics: QueryMetrics | None = attrs.field(default=None, kw_only=True)

    @classmethod
    async def connect(
        cls, reactor: IDatabaseReactor, dsn: str, size: int = 4
    ) -> Database:
        """Open ``size`` connections to ``dsn``; raise DatabaseConnectError."""
        # txpostgres hands NOTIFYs to observers through a Cooperator; its
        # default is the global one, which runs on the global reactor.
        cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))
        pool = _Pool(reactor, cooperator, dsn, size)
        try:
            await pool.start()
        except FirstError as e:
            pool.close_all()
            cooperator.stop()
            cause = e.subFailure.value
            raise DatabaseConnectError(
                f"could not connect to PostgreSQL ({_redacted(dsn)}): {cause}".strip()
            ) from cause
        return cls(reactor, dsn, pool, cooperator)

    async def fetch(self, sql: Query, params: Params = ()) -> list[Row]:
        """Run a query outside any transaction; return all its rows."""

        async def run(cursor: Cursor) -> list[Row]:
            await cursor.execute(sql, _params(params))
            return _rows(cursor)

        return await self._timed("fetch", self._pool.run_with_cursor(run))

    async def fetchone(self, sql: Query, params: Params = ()) -> Row | None:
        """Run a query; return its first row, or None if it has none."""
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: Query, params: Params = ()) -> int:
        """Run one statement in its own transaction; return its row count."""

        async def run(cursor: Cursor) -> int:
            await cursor.execute(sql, _params(params))
            return int(cursor.rowcount)

        return await self._timed("execute", self._pool.run_with_cursor(run))

    def pool_in_use(self) -> tuple[int, int]:
        """(pooled connections in use, pool size): cheap, for a gauge read at scrape time."""
        return self._pool.in_use()

    async def _timed(self, kind: str, d: Deferred[_T]) -> _T:
        """`d`'s result, its time (waiting for a connection included) recorded under `kind`."""
        if self.metrics is None:
            return await d
        started = self.reactor.seconds()
        try:
            result = await d
        except BaseException:
            self.metrics.observe(kind, False, self.reactor.seconds() - started)
            raise
        self.metrics.observe(kind, True, self.reactor.seconds() - started)
        return result

    async def transaction(self, fn: Callable[[Transaction], Awaitable[_T]]) -> _T:
        """
        Run ``fn`` inside one transaction and return what it returns.

        It commits when ``fn`` returns, and rolls back when ``fn`` raises (the
        exception then propagates unchanged). ``fn`` must not run anything on
        this Database itself: that would need a second pooled connection and
        could deadlock a full pool.
        """

        def interaction(cursor: Cursor) -> Deferred[_T]:
            return Deferred.fromCoroutine(_call(fn, Transaction(cursor)))

        return await self._timed("transaction", self._pool.run_interaction(interaction))

    async def notify(self, channel: str, payload: str = "") -> None:
        """Send a NOTIFY (through the pool; listeners get it on commit)."""
        await self.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def listen(self, channel: str, callback: NotifyCallback) -> None:
        """
        Call ``callback(channel, payload)`` for every NOTIFY on ``channel``.

        When this returns, the LISTEN is in effect: a NOTIFY committed after
        that is delivered. A callback's exceptions are logged, not raised.
        """
        listener = await self._listener_lock.run(
            lambda: Deferred.fromCoroutine(self._listener_connection())
        )
        self._callbacks.setdefault(channel, []).append(callback)
        try:
            # LISTEN is idempotent, and issuing it every time means a caller
            # never returns before its LISTEN has really been run.
            await listener.runOperation(SQL("LISTEN {}").format(Identifier(channel)))
        except BaseException:
            await self.unlisten(channel, callback)
            raise

    async def unlisten(self, channel: str, callback: NotifyCallback) -> None:
        """Stop calling ``callback`` for ``channel``; UNLISTEN if it was the last."""
        callbacks = self._callbacks.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if callbacks or self._listener is None:
            return
        self._callbacks.pop(channel, None)
        await self._listener.runOperation(
            SQL("UNLISTEN {}").format(Identifier(channel))
        )

    async def close(self) -> None:
        """Close every connection; queries still running fail. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._callbacks.clear()
        self._pool.close_all()
        self._cooperator.stop()

    async def _listener_connection(self) -> Connection:
        if self._listener is None:
            connection = _Connection(self.reactor, self._cooperator)
            try:
                await connection.connect(self.dsn)
            except Exception as e:
                raise DatabaseConnectError(
                    f"could not open the LISTEN connection ({_redacted(self.dsn)}): {e}"
                ) from e
            connection.addNotifyObserver(self._dispatch)
            self._listener = connection
        return self._listener

    def _dispatch(self, notify: Notify) -> None:
        for callback in list(self._callbacks.get(notify.channel, ())):
            try:
                callback(notify.channel, notify.payload)
            except Exception:
                _log.failure(
                    "NOTIFY callback {callback!r} for {channel!r} failed",
                    callback=callback,
                    channel=notify.channel,
                )


async def _call(fn: Callable[[Transaction], Awaitable[_T]], tx: Transaction) -> _T:
    return await fn(tx)

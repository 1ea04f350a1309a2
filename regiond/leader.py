"""
One runner per region-wide job, chosen by a PostgreSQL advisory lock.

Like buildbot's ClusteredBuildbotService: every region process tries to take
a session-level advisory lock on a connection of its own; the holder runs
the job.  If that connection fails the holder assumes it has lost the lock
(PostgreSQL released it when the session ended) and stops the job at once;
every process keeps trying, so another takes over within `interval`.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from regiond.db import Database

__all__ = ["Leadership"]

log = Logger()

#: Whether this session holds the session-level advisory lock on a bigint key
#: (which pg_locks shows split into its high and low 32 bits).
_STILL_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = %s) AS held"
)


class LockLost(Exception):
    """The lock is no longer held by this process's session."""


@attrs.define(eq=False)
class Leadership(Service):
    reactor: Any
    dsn: str = attrs.field(repr=False)
    key: int
    name: str
    on_gain: Callable[[], None]
    on_loss: Callable[[], None]
    interval: float = 10.0
    leader: bool = attrs.field(init=False, default=False)
    _db: Database | None = attrs.field(init=False, default=None)
    _loop: LoopingCall | None = attrs.field(init=False, default=None)
    _lock: DeferredLock = attrs.field(init=False, factory=DeferredLock)

    def startService(self) -> None:  # noqa: N802
        Service.startService(self)
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.check()))
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(lambda f: log.failure("Leadership loop for {name} stopped", f, name=self.name))

    def stopService(self) -> Deferred[None]:  # noqa: N802
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return Deferred.fromCoroutine(self._resign())

    async def check(self) -> bool:
        """Take the lock if free, or confirm we still hold it; act on any change."""
        # One check at a time: two at once could each open a session, and
        # the lock would be held by the one we then forget.
        return await self._lock.run(lambda: Deferred.fromCoroutine(self._check()))

    async def _check(self) -> bool:
        try:
            if self._db is None:
                self._db = await Database.connect(self.reactor, self.dsn, size=1)
            if self.leader:
                # Not just "is the connection alive": the pool reopens a lost
                # connection, and a new session does not hold the lock.
                row = await self._db.fetchone(_STILL_HELD, (self.key,))
                if not (row and row["held"]):
                    raise LockLost("this session no longer holds the lock (its connection was reopened)")
            else:
                row = await self._db.fetchone("SELECT pg_try_advisory_lock(%s) AS got", (self.key,))
                if row and row["got"]:
                    self.leader = True
                    log.info("This region process now runs {name}", name=self.name)
                    self.on_gain()
        except Exception as e:
            log.warn("Leadership check for {name} failed ({error}); assuming the lock is lost", name=self.name, error=str(e))
            await self._lose()
        return self.leader

    async def _lose(self) -> None:
        if self.leader:
            self.leader = False
            self.on_loss()
        if self._db is not None:
            db, self._db = self._db, None
            try:
                await db.close()
            except Exception:
                pass

    async def _resign(self) -> None:
        await self._lock.run(lambda: Deferred.fromCoroutine(self._release()))

    async def _release(self) -> None:
        if self.leader and self._db is not None:
            try:
                await self._db.fetchone("SELECT pg_advisory_unlock(%s) AS done", (self.key,))
            except Exception:
                pass
        await self._lose()

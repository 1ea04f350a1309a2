"""
``GET /api/v1/events/stream``: the event log as server-sent events, live.

- `EventFeed`, one per region process, holds the only LISTEN on
  ``outpost_events`` (migration 4's trigger NOTIFYs it once per statement
  that adds events), on a connection of its own so that it can be replaced
  when PostgreSQL drops it.  It keeps the *horizon* (below) and wakes its
  observers (the streams, the webhook dispatcher) when it moves.
- `_Subscription`, one per client: a cursor in the log.  Woken, it reads the
  matching events after its cursor up to the horizon, a page at a time and
  one read at a time, and writes them as SSE frames.
- `EventStreamAPI`: the route.

Why a horizon rather than "everything after my cursor": an event's id is
taken from a sequence when its row is inserted, but the row is seen only
when its transaction commits, so id 11 can be visible while id 10 is still
to come, and a reader that moved past 11 would never see 10.  The feed reads
the sequence's last value V, then the transactions holding ROW EXCLUSIVE on
``events`` (an inserter holds it from before it takes an id until it ends);
once every one of those has ended, no id up to V can still appear, and V is
the horizon.  Readers never read past it, so nothing is skipped.  The price:
two small queries per wake-up per process (not per client), and an event
waits for the transactions that were writing events when it committed (a
transaction left open that wrote to ``events`` holds the stream back).

Nothing is lost when the LISTEN connection goes (PostgreSQL restarted, its
backend ended): every `EventFeed.check_interval` seconds the feed NOTIFYs
itself on a channel of its own; if that ping has not come back by the next
tick it opens a new connection, LISTENs again and re-reads the horizon, and
every reader catches up from its cursor.  The tick re-reads the horizon in
any case, as a safety net.

Slow clients: a subscription is its request's push producer.  When twisted's
transport buffer passes its limit the subscription is paused and stops
reading events (its place is a cursor, not a queue in memory); a client still
paused after `EventStreamAPI.stall_timeout` seconds is disconnected, and
resumes with Last-Event-ID.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from regiond.api import errors
from regiond.api.events import EVENT_FILTER_QUERY, EventFilter, after_id, read_events
from regiond.api.router import ApiRequest, Response, Route, Stream, StreamWriter, parse_query
from regiond.db import Database
from regiond.errors import RegionError

__all__ = [
    "CHANNEL", "EventFeed", "EventStreamAPI", "FeedClosed", "FeedObserver", "sse_frame", "KEEPALIVE", "RETRY_MS",
]

log = Logger()

#: What migration 4's trigger NOTIFYs after every statement that adds events.
CHANNEL = "outpost_events"
#: Seconds between keep-alive comments (proxies close connections idle for about a minute).
KEEPALIVE = 15.0
#: Seconds a client may leave its connection unread before it is disconnected.
STALL_TIMEOUT = 60.0
#: Milliseconds an EventSource waits before reconnecting (the ``retry:`` hint).
RETRY_MS = 3000
#: Events read (and written) per query.
PAGE = 100
#: Re-reads of a horizon held back by open transactions: the first delay, doubling to the last.
RECHECK_FIRST, RECHECK_MAX = 0.05, 1.0
#: Horizon candidates kept while transactions are open (more only delay the horizon, never skip).
MAX_CANDIDATES = 256

_LAST_ID = "SELECT coalesce(pg_sequence_last_value('events_id_seq'::regclass), 0) AS last_id"
_WRITERS = """
SELECT virtualtransaction AS vxid FROM pg_locks
 WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' AND relation = 'events'::regclass
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND pid IS DISTINCT FROM pg_backend_pid()
"""


class FeedClosed(RegionError):
    """The event feed has stopped (the region is shutting down)."""


class FeedObserver(Protocol):
    """What the feed wakes: told when the horizon moves, and when the feed stops for good."""

    def wake(self) -> None: ...

    def feed_closed(self) -> None: ...


def _sanitized(name: str) -> str:
    # A field value ends at CR or LF; a type holding one must not break the framing.
    return name.replace("\r", " ").replace("\n", " ")


def sse_frame(item: dict[str, Any]) -> bytes:
    """One event as SSE (UTF-8): ``id``, ``event`` (its type) and ``data`` (the item as one line of ASCII JSON)."""
    data = json.dumps(item, separators=(",", ":"))
    return f"id: {item['id']}\nevent: {_sanitized(item['type'])}\ndata: {data}\n\n".encode("utf-8", "replace")


@attrs.define(eq=False)
class EventFeed:
    """One LISTEN per region process, the horizon, and the observers it wakes."""

    clock: IReactorTime
    #: Where the horizon is read (the region's pool).
    db: Database
    #: Opens the connection the feed LISTENs on: a `Database` of its own, so a lost one can be replaced.
    open_listener: Callable[[], Awaitable[Database]]
    check_interval: float = 10.0
    #: No event with an id up to this one can still appear; readers read no further.
    horizon: int = attrs.field(init=False, default=0)
    _observers: list[FeedObserver] = attrs.field(init=False, factory=list)
    _state: str = attrs.field(init=False, default="idle")  # idle → running → stopped
    _lock: DeferredLock = attrs.field(init=False, factory=DeferredLock)
    _listener: Database | None = attrs.field(init=False, default=None)
    _ticker: LoopingCall | None = attrs.field(init=False, default=None)
    _ping_channel: str = attrs.field(init=False, factory=lambda: f"outpost_events_ping_{secrets.token_hex(8)}")
    _pings: Iterator[int] = attrs.field(init=False, factory=itertools.count)
    _ping: str | None = attrs.field(init=False, default=None)
    _pong: bool = attrs.field(init=False, default=False)
    _candidates: list[tuple[int, frozenset[str]]] = attrs.field(init=False, factory=list)
    _computing: bool = attrs.field(init=False, default=False)
    _dirty: bool = attrs.field(init=False, default=False)
    _waiting: list[Deferred[int]] = attrs.field(init=False, factory=list)
    _recheck: IDelayedCall | None = attrs.field(init=False, default=None)
    _recheck_delay: float = attrs.field(init=False, default=RECHECK_FIRST)

    @classmethod
    def for_database(cls, db: Database, reactor: Any = None, **kwargs: Any) -> EventFeed:
        """
        A feed reading `db` and listening on a connection of its own to the
        same database (opened when the feed starts), on `reactor` (default: the database's).
        """
        on = reactor if reactor is not None else db.reactor
        return cls(on, db, lambda: Database.connect(on, db.dsn, size=1), **kwargs)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def observers(self) -> tuple[FeedObserver, ...]:
        return tuple(self._observers)

    async def subscribe(self, observer: FeedObserver) -> None:
        """
        Wake `observer` from now on, starting the feed if need be.  When this
        returns the LISTEN is in effect (or being retried), so a `refresh`
        after it covers everything committed before a later wake-up.
        """
        if self._state == "stopped":
            raise FeedClosed("the event feed has stopped")
        self._observers.append(observer)
        await self.start()

    def unsubscribe(self, observer: FeedObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    async def start(self) -> None:
        """Listen (once; later calls wait for the first connection attempt)."""
        if self._state == "idle":
            self._state = "running"
            self._ticker = LoopingCall(lambda: Deferred.fromCoroutine(self.check()))
            self._ticker.clock = self.clock
            self._ticker.start(self.check_interval, now=False).addErrback(lambda f: log.failure("Event feed ticker stopped", f))
        if self._state == "running":
            await self._lock.run(lambda: Deferred.fromCoroutine(self._ensure_listening()))

    async def stop(self) -> None:
        """Stop for good: observers are told, readers waiting for a horizon get `FeedClosed`."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self._recheck is not None and self._recheck.active():
            self._recheck.cancel()
        self._recheck = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(FeedClosed("the event feed has stopped"))
        observers, self._observers = self._observers, []
        for observer in observers:
            try:
                observer.feed_closed()
            except Exception:
                log.failure("Telling {observer!r} the event feed stopped failed", observer=observer)
        await self._lock.run(lambda: Deferred.fromCoroutine(self._drop_listener()))

    async def refresh(self) -> int:
        """A horizon read after this call (shared with other callers at the same moment)."""
        if self._state == "stopped":
            raise FeedClosed("the event feed has stopped")
        waiter: Deferred[int] = Deferred()
        self._waiting.append(waiter)
        self._kick()
        return await waiter

    # -- the LISTEN connection --------------------------------------------

    async def _ensure_listening(self) -> None:
        if self._listener is None and self._state == "running":
            await self._connect()

    async def _connect(self) -> None:
        try:
            listener = await self.open_listener()
        except Exception as e:
            log.warn("Cannot open the event LISTEN connection ({error}); trying again in {interval}s",
                     error=str(e), interval=self.check_interval)
            return
        try:
            await listener.listen(CHANNEL, self._notified)
            await listener.listen(self._ping_channel, self._ponged)
        except Exception as e:
            log.warn("LISTEN for events failed ({error}); trying again in {interval}s", error=str(e), interval=self.check_interval)
            await _close_quietly(listener)
            return
        if self._state != "running":
            await _close_quietly(listener)
            return
        self._listener, self._ping = listener, None
        # Whatever committed while nobody listened: every reader catches up from its cursor.
        self._dirty = True
        self._kick()

    async def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await _close_quietly(listener)

    def _notified(self, channel: str, payload: str) -> None:
        self._dirty = True
        self._kick()

    def _ponged(self, channel: str, payload: str) -> None:
        if payload == self._ping:
            self._pong = True

    async def check(self) -> None:
        """
        What the ticker does every `check_interval`: ping through the LISTEN
        connection (replacing it if the last ping never came back), and
        re-read the horizon as a safety net.
        """
        try:
            await self._lock.run(lambda: Deferred.fromCoroutine(self._check_listener()))
        except Exception:
            log.failure("Checking the event LISTEN connection failed")
        if self._observers and self._state == "running":
            self._dirty = True
            self._kick()

    async def _check_listener(self) -> None:
        if self._state != "running":
            return
        if self._listener is None:
            await self._connect()
            return
        if self._ping is not None and not self._pong:
            log.warn("The event LISTEN connection stopped answering; listening on a new one")
            await self._drop_listener()
            await self._connect()
            return
        self._ping, self._pong = str(next(self._pings)), False
        try:
            await self._listener.notify(self._ping_channel, self._ping)
        except Exception as e:
            log.warn("The event LISTEN connection failed ({error}); listening on a new one", error=str(e))
            await self._drop_listener()
            await self._connect()

    # -- the horizon -------------------------------------------------------

    def _kick(self) -> None:
        if not self._computing and self._state != "stopped":
            Deferred.fromCoroutine(self._compute_while_wanted()).addErrback(
                lambda f: log.failure("Reading the event horizon failed", f)
            )

    async def _compute_while_wanted(self) -> None:
        self._computing = True
        try:
            while (self._dirty or self._waiting) and self._state != "stopped":
                self._dirty = False
                waiting, self._waiting = self._waiting, []
                try:
                    horizon = await self._compute()
                except Exception as e:
                    if waiting:
                        for waiter in waiting:
                            waiter.errback(e)
                    else:
                        log.warn("Reading the event horizon failed ({error}); trying again soon", error=str(e))
                        self._schedule_recheck()
                    continue
                for waiter in waiting:
                    waiter.callback(horizon)
        finally:
            self._computing = False

    async def _compute(self) -> int:
        row = await self.db.fetchone(_LAST_ID)
        last = int(row["last_id"]) if row is not None else 0
        writing = frozenset(r["vxid"] for r in await self.db.fetch(_WRITERS))
        if len(self._candidates) >= MAX_CANDIDATES:
            self._candidates[-1] = (last, writing)
        else:
            self._candidates.append((last, writing))
        final = [value for value, writers in self._candidates if not writers & writing]
        if final:
            settled = max(final)
            self._candidates = [(v, w) for v, w in self._candidates if v > settled]
            if settled > self.horizon:
                self.horizon = settled
                self._wake_all()
        if self._candidates:
            self._schedule_recheck()
        else:
            self._recheck_delay = RECHECK_FIRST
        return self.horizon

    def _schedule_recheck(self) -> None:
        # Transactions that were writing events may end without a NOTIFY (a
        # rollback), or just after theirs reached us: look again soon.
        if self._state != "running" or (self._recheck is not None and self._recheck.active()):
            return
        delay, self._recheck_delay = self._recheck_delay, min(RECHECK_MAX, self._recheck_delay * 2)
        self._recheck = self.clock.callLater(delay, self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._dirty = True
        self._kick()

    def _wake_all(self) -> None:
        for observer in list(self._observers):
            try:
                observer.wake()
            except Exception:
                log.failure("Waking {observer!r} for new events failed", observer=observer)


async def _close_quietly(db: Database) -> None:
    try:
        await db.close()
    except Exception:
        pass


@implementer(IPushProducer)
class _Subscription:
    """One client's stream: a cursor, a keep-alive, and flow control."""

    def __init__(
        self, api: EventStreamAPI, writer: StreamWriter, where: EventFilter, cursor: int | None
    ) -> None:
        self._api = api
        self._writer = writer
        self._where = where
        self.cursor = cursor
        self._ended: Deferred[None] = Deferred()
        self._reading = False
        self._dirty = False
        self._paused_since: float | None = None
        self._keepalive: LoopingCall | None = None
        # Flow control and dropping a stalled client work on the request itself
        # (a writer without one, as in some tests, gets neither).
        self._request: Any = getattr(writer, "request", None)

    async def run(self) -> None:
        api = self._api
        if self._writer.closed:
            return
        self._writer.gone.addCallback(lambda _: self._end())
        self._writer.write(f"retry: {RETRY_MS}\n\n".encode("ascii"))
        producing = self._request is not None and getattr(self._request, "producer", None) is None
        if producing:
            self._request.registerProducer(self, True)
        self._keepalive = LoopingCall(self._tick)
        self._keepalive.clock = api.clock
        self._keepalive.start(api.keepalive, now=False)
        api.subscriptions.add(self)
        try:
            await api.feed.subscribe(self)
            horizon = await api.feed.refresh()
            if self.cursor is None:
                self.cursor = horizon
            self.wake()
            await self._ended
        except FeedClosed:
            pass
        finally:
            api.subscriptions.discard(self)
            api.feed.unsubscribe(self)
            if self._keepalive.running:
                self._keepalive.stop()
            if producing and getattr(self._request, "channel", None) is not None:
                self._request.unregisterProducer()

    # -- FeedObserver ------------------------------------------------------

    def wake(self) -> None:
        if self._ended.called or self.cursor is None:
            return
        self._dirty = True
        if not self._reading and self._paused_since is None:
            self._reading = True
            Deferred.fromCoroutine(self._catch_up()).addErrback(self._failed)

    def feed_closed(self) -> None:
        self._end()

    async def _catch_up(self) -> None:
        try:
            while self._dirty and self._paused_since is None and not self._ended.called:
                self._dirty = False
                assert self.cursor is not None
                horizon = self._api.feed.horizon
                items = await read_events(
                    self._api.db, after=self.cursor, until=horizon, where=self._where, limit=self._api.page
                )
                if self._ended.called:
                    return
                if items:
                    self._writer.write(b"".join(sse_frame(item) for item in items))
                if len(items) == self._api.page:
                    self.cursor = items[-1]["id"]
                    self._dirty = True
                else:
                    self.cursor = max(self.cursor, horizon)
        finally:
            self._reading = False

    @property
    def paused(self) -> bool:
        """Whether twisted's transport buffer for this client is full (reading events waits)."""
        return self._paused_since is not None

    def _failed(self, failure: Any) -> None:
        log.failure("Reading events for a stream failed; closing it (the client resumes from its last id)", failure)
        self._end()

    def _end(self) -> None:
        if not self._ended.called:
            self._ended.callback(None)

    def _tick(self) -> None:
        if self._paused_since is None:
            self._writer.write(b": keep-alive\n\n")
            return
        stalled = self._api.clock.seconds() - self._paused_since
        if stalled >= self._api.stall_timeout:
            log.info("Disconnecting an event stream client that read nothing for {seconds:.0f}s (at event {cursor})",
                     seconds=stalled, cursor=self.cursor)
            transport = getattr(self._request, "transport", None)
            if transport is not None and hasattr(transport, "abortConnection"):
                transport.abortConnection()  # the response ends when `gone` fires
            else:
                self._end()

    # -- IPushProducer: twisted's transport buffer is full, or has room -------

    def pauseProducing(self) -> None:  # noqa: N802
        if self._paused_since is None:
            self._paused_since = self._api.clock.seconds()

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused_since = None
        if self._dirty:
            self.wake()

    def stopProducing(self) -> None:  # noqa: N802
        self._end()


@attrs.define(eq=False)
class EventStreamAPI:
    feed: EventFeed
    db: Database
    #: Keep-alive and stall timers (the feed keeps its own).
    clock: IReactorTime
    keepalive: float = KEEPALIVE
    stall_timeout: float = STALL_TIMEOUT
    page: int = PAGE
    #: The streams open now.
    subscriptions: set[_Subscription] = attrs.field(init=False, factory=set)

    async def stream(self, request: ApiRequest) -> Stream | Response:
        where = EventFilter.from_request(request)
        header = request.headers.get("last-event-id", "").strip()
        if header:
            try:
                cursor: int | None = after_id(header)
            except ValueError as e:
                raise errors.BadRequest("invalid Last-Event-ID header", details={"Last-Event-ID": str(e)}) from None
        else:
            cursor = parse_query(request, "after", after_id, None)
        if request.method == "HEAD":
            return Response(b"", content_type="text/event-stream")  # a stream's head would never end
        return Stream(lambda writer: _Subscription(self, writer, where, cursor).run(), headers={"X-Accel-Buffering": "no"})

    def routes(self) -> list[Route]:
        return [
            Route(
                "GET", "/api/v1/events/stream", self.stream,
                "The event log live, as server-sent events; resumable with Last-Event-ID", tags=["events"],
                responses={
                    200: "text/event-stream: per event its id, its type as the event name and the item of"
                         " GET /api/v1/events as JSON data; keep-alive comments in between",
                    400: "Bad query parameter or Last-Event-ID",
                },
                query=[
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0},
                     "description": "Resume after this event (sent by EventSource on reconnection); wins over after"},
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0},
                     "description": "Start after this event id; without it (or Last-Event-ID), only new events"},
                    *EVENT_FILTER_QUERY,
                ],
            ),
        ]

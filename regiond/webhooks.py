"""
Outgoing webhooks: the event log POSTed to configured URLs, in order, at least once.

Each configured URL has a cursor in ``webhook_cursors`` (the last event id
it acknowledged, the failed attempts since, the last error).  A worker per
URL reads the events after its cursor whose types match, up to the event
feed's horizon (`regiond.api.stream.EventFeed`: no event can still appear
below it), and POSTs them one at a time, oldest first.  A 2xx moves the
cursor past the event; anything else (another status, a connection error, no
answer within `WebhookDispatcher.timeout`) leaves it where it is, records the
attempt and retries after a backoff: 1 s doubling to 10 minutes, each wait
spread by ±20 % so that receivers coming back are not hit all at once.  An
event is never skipped, so one receiver that keeps failing holds back only
its own URL.  A URL new to the table starts at the end of the log.

Only one region process delivers: the holder of the advisory lock
`WEBHOOK_LOCK_KEY` (`webhook_leadership`).  The cursor lives in PostgreSQL,
so a restart or a change of leader resumes where delivery stopped; an event
whose delivery was under way then may be sent twice (receivers deduplicate
on ``X-Outpost-Delivery``).  The worker wakes when the feed's horizon moves
(every NOTIFY), and every `WebhookDispatcher.poll_interval` seconds anyway.

A delivery is a POST of the event exactly as ``GET /api/v1/events`` shows it
(for ``infrastructure.task``, ``data`` is Ignition's task event), with::

    Content-Type: application/json
    X-Outpost-Event: <type>
    X-Outpost-Delivery: <event id>
    X-Outpost-Timestamp: <unix seconds>
    X-Outpost-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

`verify_signature` is what a receiver does.  Neither the secret nor the
signature is ever logged; URLs are logged without credentials or query.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import attrs
import treq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from outpost import __version__
from outpost.config import ConfigError
from outpost.secret import SecretError, load_secret
from regiond.api.events import EventFilter, read_events
from regiond.config import WebhookConfig
from regiond.db import Database
from regiond.leader import Leadership
from regiond.metrics import WebhookMetrics
from regiond.storage._http import make_http_client

__all__ = [
    "Webhook", "WebhookDispatcher", "load_webhooks", "sign", "verify_signature", "backoff", "webhook_leadership",
    "WEBHOOK_LOCK_KEY",
]

log = Logger()

#: The advisory lock whose holder delivers webhooks ("outwebhk").
WEBHOOK_LOCK_KEY = 0x6F7574776562686B
#: Seconds a receiver has to answer (connecting included).
TIMEOUT = 10.0
#: Seconds between wake-ups that do not wait for a NOTIFY.
POLL_INTERVAL = 30.0
FIRST_RETRY, MAX_RETRY, JITTER = 1.0, 600.0, 0.2
#: Events read per query.
PAGE = 50
#: How much of a refusing receiver's body `last_error` keeps.
MAX_ERROR_BODY = 300
#: What a receiver should accept between its clock and the timestamp (see verify_signature).
TOLERANCE = 300.0


@attrs.frozen
class Webhook:
    """A configured webhook with its secret read."""

    url: str
    secret: bytes = attrs.field(repr=False)
    types: tuple[str, ...]


def load_webhooks(configs: Sequence[WebhookConfig]) -> list[Webhook]:
    """Read every secret; a `ConfigError` lists each one that is missing, unreadable, too open or not hex."""
    hooks, problems = [], []
    for index, config in enumerate(configs):
        try:
            hooks.append(Webhook(config.url, load_secret(config.secret_file), config.types))
        except SecretError as e:
            problems.append(f"webhooks[{index}].secret_file: {e}")
    if problems:
        raise ConfigError(problems)
    return hooks


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Outpost-Signature`` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance: float = TOLERANCE
) -> bool:
    """
    What a receiver checks: the signature is ours for this timestamp and raw
    body (compared in constant time), and the timestamp is within `tolerance`
    seconds of `now` (so a captured request cannot be replayed later).
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `attempts`-th failure in a row: 1, 2, 4 … 600, each ±20 %."""
    # int ** int is typed Any (a negative exponent gives a float); this one never is negative.
    base: float = min(MAX_RETRY, FIRST_RETRY * 2 ** min(max(attempts, 1) - 1, 30))
    return min(MAX_RETRY, base * (1 - JITTER + 2 * JITTER * rand()))


def _shown(url: str) -> str:
    """`url` fit for a log: no credentials, no query (either may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


class HTTPClient(Protocol):
    """What a dispatcher needs of treq: a ``treq.client.HTTPClient`` or a ``treq.testing.StubTreq``."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


class Feed(Protocol):
    """What a dispatcher needs of the `EventFeed`: its horizon and its wake-ups."""

    horizon: int

    async def refresh(self) -> int: ...

    async def subscribe(self, observer: Any) -> None: ...

    def unsubscribe(self, observer: Any) -> None: ...


class _Refused(Exception):
    pass


@attrs.define(eq=False)
class _Worker:
    """One URL's delivery: its cursor, one POST at a time, and its retry timer."""

    dispatcher: WebhookDispatcher
    hook: Webhook
    cursor: int | None = None
    attempts: int = 0
    _running: bool = False
    _dirty: bool = False
    _stopped: bool = False
    _retry: IDelayedCall | None = None
    _inflight: Deferred[Any] | None = None

    async def load(self, horizon: int) -> None:
        db = self.dispatcher.db
        await db.execute(
            "INSERT INTO webhook_cursors (url, after_id) VALUES (%s, %s) ON CONFLICT (url) DO NOTHING", (self.hook.url, horizon)
        )
        row = await db.fetchone("SELECT after_id, attempts FROM webhook_cursors WHERE url = %s", (self.hook.url,))
        assert row is not None
        self.cursor, self.attempts = int(row["after_id"]), int(row["attempts"])

    def wake(self) -> None:
        if self._stopped or self.cursor is None:
            return
        self._dirty = True
        if self._running or self._retry is not None:
            return
        self._running = True
        Deferred.fromCoroutine(self._run()).addErrback(
            lambda f: log.failure("Webhook delivery to {url} failed", f, url=_shown(self.hook.url))
        )

    def stop(self) -> None:
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._inflight is not None:
            self._inflight.cancel()

    async def _run(self) -> None:
        dispatcher = self.dispatcher
        try:
            while self._dirty and not self._stopped:
                self._dirty = False
                assert self.cursor is not None
                horizon = dispatcher.feed.horizon
                try:
                    items = await read_events(
                        dispatcher.db, after=self.cursor, until=horizon, where=EventFilter(types=self.hook.types), limit=PAGE
                    )
                except Exception as e:
                    log.warn("Reading events for webhook {url} failed ({error}); trying again in {interval}s",
                             url=_shown(self.hook.url), error=str(e), interval=dispatcher.poll_interval)
                    return
                for item in items:
                    if self._stopped or not await self._deliver(item):
                        return
                if len(items) == PAGE:
                    self._dirty = True
                elif horizon > self.cursor:
                    # Past the events of other types too, so the next read starts here (nothing is pending).
                    await self._advance(horizon)
        finally:
            self._running = False

    async def _deliver(self, item: dict[str, Any]) -> bool:
        """POST one event; True if the receiver took it (the cursor moved past it)."""
        dispatcher = self.dispatcher
        body = json.dumps(item, separators=(",", ":")).encode("ascii")
        timestamp = str(int(dispatcher.clock.seconds()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"outpost-region/{__version__}",
            "X-Outpost-Event": item["type"].replace("\r", " ").replace("\n", " "),
            "X-Outpost-Delivery": str(item["id"]),
            "X-Outpost-Timestamp": timestamp,
            "X-Outpost-Signature": sign(self.hook.secret, timestamp, body),
        }
        attempt = Deferred.fromCoroutine(self._post(body, headers))
        # Cancelling a request surfaces as CancelledError or as the agent's own
        # wrapping of it (ResponseNeverReceived, ...): remember who cancelled.
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            attempt.cancel()

        timer = dispatcher.clock.callLater(dispatcher.timeout, time_out)
        self._inflight = attempt
        try:
            await attempt
        except Exception as e:
            if self._stopped:
                return False  # the lock is lost or the region stops: the next leader sends it again
            if timed_out:
                outcome, error = "failed", f"no answer within {dispatcher.timeout:g}s"
            elif isinstance(e, _Refused):
                outcome, error = "rejected", str(e)
            else:
                outcome, error = "failed", f"{type(e).__name__}: {e}"
        else:
            dispatcher.observe("delivered")
            await self._advance(item["id"])
            return True
        finally:
            self._inflight = None
            if timer.active():
                timer.cancel()
        dispatcher.observe(outcome)
        if not self._stopped:
            await self._failed(item, error)
        return False

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        response = await self.dispatcher.http.request("POST", self.hook.url, data=body, headers=headers)
        kept = bytearray()

        def collect(data: bytes) -> None:
            kept.extend(data[: MAX_ERROR_BODY - len(kept)])

        await treq.collect(response, collect)
        if not 200 <= response.code < 300:
            raise _Refused(f"HTTP {response.code}: {_printable(bytes(kept))}".strip())

    async def _advance(self, to: int) -> None:
        """Everything up to `to` is delivered: move the cursor there and clear the failures."""
        # Never backwards: a leader that lost the lock mid-delivery may still be finishing.
        await self.dispatcher.db.execute(
            "UPDATE webhook_cursors SET after_id = %s, attempts = 0, last_error = '', updated_at = now()"
            " WHERE url = %s AND after_id < %s",
            (to, self.hook.url, to),
        )
        self.cursor = max(to, self.cursor or 0)
        self.attempts = 0

    async def _failed(self, item: dict[str, Any], error: str) -> None:
        dispatcher = self.dispatcher
        self.attempts += 1
        delay = backoff(self.attempts, dispatcher.random)
        log.warn(
            "Webhook {url} did not take event {id} ({type}), attempt {attempts}: {error}; retrying in {delay:.1f}s",
            url=_shown(self.hook.url), id=item["id"], type=item["type"], attempts=self.attempts, error=error, delay=delay,
        )
        try:
            await dispatcher.db.execute(
                "UPDATE webhook_cursors SET attempts = %s, last_error = %s, updated_at = now() WHERE url = %s AND after_id = %s",
                (self.attempts, error[:1000], self.hook.url, self.cursor),
            )
        except Exception as e:
            log.warn("Recording a failed webhook delivery failed ({error})", error=str(e))
        if not self._stopped:
            self._retry = dispatcher.clock.callLater(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.wake()


@attrs.define(eq=False)
class WebhookDispatcher:
    """Delivers to every configured webhook while this process holds the lock (`start` / `stop`)."""

    clock: IReactorTime
    db: Database
    feed: Feed
    hooks: Sequence[Webhook]
    http: HTTPClient
    timeout: float = TIMEOUT
    poll_interval: float = POLL_INTERVAL
    metrics: WebhookMetrics | None = None
    #: Jitter source, in [0, 1).
    random: Callable[[], float] = random.random
    #: The HTTP client's pool, closed by `close` (None: the caller owns the client).
    pool: HTTPConnectionPool | None = None
    workers: dict[str, _Worker] = attrs.field(init=False, factory=dict)
    _generation: int = attrs.field(init=False, default=0)
    _running: bool = attrs.field(init=False, default=False)
    _timer: LoopingCall | None = attrs.field(init=False, default=None)

    @classmethod
    def create(cls, reactor: Any, db: Database, feed: Feed, hooks: Sequence[Webhook], **kwargs: Any) -> WebhookDispatcher:
        """A dispatcher posting with treq on `reactor`, through a pool of its own."""
        http, pool = make_http_client(reactor, persistent_per_host=2)
        return cls(reactor, db, feed, hooks, http, pool=pool, **kwargs)

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start delivering (this process now holds the lock)."""
        if self._running:
            return
        self._running = True
        self._generation += 1
        Deferred.fromCoroutine(self._start(self._generation)).addErrback(
            lambda f: log.failure("Starting webhook delivery failed", f)
        )

    async def _start(self, generation: int) -> None:
        await self.feed.subscribe(self)
        if generation != self._generation:
            self.feed.unsubscribe(self)
            return
        horizon = await self.feed.refresh()
        workers = {}
        for hook in self.hooks:
            worker = _Worker(self, hook)
            await worker.load(horizon)
            workers[hook.url] = worker
        if generation != self._generation or not self._running:
            return
        self.workers = workers
        self._timer = LoopingCall(lambda: Deferred.fromCoroutine(self._poll()))
        self._timer.clock = self.clock
        self._timer.start(self.poll_interval, now=False).addErrback(lambda f: log.failure("Webhook timer stopped", f))
        log.info("Delivering webhooks to {urls}", urls=", ".join(_shown(h.url) for h in self.hooks))
        self.wake()

    def stop(self) -> None:
        """Stop delivering (the lock is lost, or the region stops); a POST under way is abandoned."""
        if not self._running:
            return
        self._running = False
        self._generation += 1
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None
        self.feed.unsubscribe(self)
        workers, self.workers = self.workers, {}
        for worker in workers.values():
            worker.stop()

    async def close(self) -> None:
        self.stop()
        if self.pool is not None:
            await self.pool.closeCachedConnections()

    def wake(self) -> None:
        for worker in list(self.workers.values()):
            worker.wake()

    def feed_closed(self) -> None:
        self.stop()

    def observe(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.observe(outcome)

    async def _poll(self) -> None:
        try:
            await self.feed.refresh()
        except Exception as e:
            log.warn("Reading the event horizon for webhooks failed ({error})", error=str(e))
        self.wake()


def webhook_leadership(reactor: Any, dsn: str, dispatcher: WebhookDispatcher, interval: float = 10.0) -> Leadership:
    """The service that runs `dispatcher` in whichever region process holds `WEBHOOK_LOCK_KEY`."""
    return Leadership(
        reactor, dsn, WEBHOOK_LOCK_KEY, "webhook delivery", on_gain=dispatcher.start, on_loss=dispatcher.stop, interval=interval
    )

"""
Outgoing webhooks: signed POSTs of the event log, in order, at least once, from the leader only.

The dispatcher runs on the real database and the real event feed, with its
time on a `task.Clock` and HTTP through `treq.testing.StubTreq` (one test
posts over real TCP to a twisted.web receiver that checks the signature the
way the README tells receivers to).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from outpost.config import ConfigError
from outpost.secret import write_secret
from regiond import events
from regiond.api.events import EventsAPI
from regiond.api.router import ApiRequest
from regiond.api.stream import EventFeed
from regiond.config import WebhookConfig
from regiond.db import Database
from regiond.metrics import WebhookMetrics
from regiond.webhooks import (
    MAX_RETRY,
    TIMEOUT,
    Webhook,
    WebhookDispatcher,
    backoff,
    load_webhooks,
    sign,
    verify_signature,
    webhook_leadership,
)
from tests.regionstack import eventually

SECRET = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e7")
URL = "https://hooks.example/outpost?token=abc"
HOOK = Webhook(URL, SECRET, ("infrastructure.task",))
NOW = 1_700_000_000.0


async def _true(value: bool) -> bool:
    return value


@attrs.frozen
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver(Resource):
    """Records each POST (with the clock's time) and answers from `answers` (then 200); "hang" never answers."""

    isLeaf = True

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self.requests: list[Received] = []
        self.answers: list[int | str] = []

    def render_POST(self, request: Request) -> Any:  # noqa: N802
        headers = {k.decode().lower(): v[-1].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append(Received(self.clock.seconds(), headers, request.content.read()))
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            return NOT_DONE_YET
        assert isinstance(answer, int)
        request.setResponseCode(answer)
        return b"" if answer < 300 else b"receiver says no\x00\n" + b"x" * 5000

    def ids(self) -> list[int]:
        return [int(r.headers["x-outpost-delivery"]) for r in self.requests]


@attrs.define
class Rig:
    db: Database
    feed: EventFeed
    clock: Clock
    receiver: Receiver
    stub: StubTreq
    dispatchers: list[WebhookDispatcher] = attrs.field(factory=list)

    def dispatcher(self, hooks: list[Webhook] | None = None, stub: StubTreq | None = None, **kwargs: Any) -> WebhookDispatcher:
        d = WebhookDispatcher(self.clock, self.db, self.feed, hooks or [HOOK], stub or self.stub, random=lambda: 0.5, **kwargs)
        self.dispatchers.append(d)
        return d

    async def started(self, dispatcher: WebhookDispatcher) -> WebhookDispatcher:
        dispatcher.start()
        await eventually(lambda: _true(len(dispatcher.workers) == len(dispatcher.hooks)))
        return dispatcher

    async def until(self, predicate: Callable[[], bool], stub: StubTreq | None = None) -> None:
        """Pump the in-memory HTTP until `predicate` holds."""

        async def check() -> bool:
            (stub or self.stub).flush()
            return predicate()

        await eventually(check)

    async def cursor(self, url: str = URL) -> dict[str, Any]:
        row = await self.db.fetchone("SELECT after_id, attempts, last_error FROM webhook_cursors WHERE url = %s", (url,))
        assert row is not None
        return row


@pytest_twisted.async_yield_fixture
async def rig(db: Database) -> AsyncIterator[Rig]:
    feed = EventFeed(reactor, db, lambda: Database.connect(reactor, db.dsn, size=1), check_interval=3600)
    clock = Clock()
    clock.advance(NOW)
    receiver = Receiver(clock)
    r = Rig(db, feed, clock, receiver, StubTreq(receiver))
    try:
        yield r
    finally:
        for d in r.dispatchers:
            d.stop()
        await feed.stop()


async def record(db: Any, type: str, **kwargs: Any) -> int:
    await events.record(db, type, **kwargs)
    row = await db.fetchone("SELECT max(id) AS id FROM events")
    return int(row["id"])


def task(request_id: str, status: str = "COMPLETE") -> dict[str, Any]:
    return {"requestId": request_id, "infrastructureId": "inf-1", "status": status, "outputs": {"ip": "10.0.0.1"}}


# -- signing ---------------------------------------------------------------------------


@given(secret=st.binary(min_size=16, max_size=64), timestamp=st.integers(min_value=0, max_value=2**40), body=st.binary(max_size=200))
def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_and_verifies(secret: bytes, timestamp: int, body: bytes) -> None:
    ts = str(timestamp)
    expected = "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(secret, ts, body) == expected
    assert verify_signature(secret, ts, body, expected, now=timestamp + 299)
    assert not verify_signature(secret, ts, body + b" ", expected, now=timestamp)
    assert not verify_signature(secret + b"x", ts, body, expected, now=timestamp)
    assert not verify_signature(secret, ts, body, expected, now=timestamp + 301)  # too old: a replay
    assert not verify_signature(secret, "not-a-number", body, expected, now=timestamp)


@given(attempts=st.integers(min_value=1, max_value=10_000), rand=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_backoff_doubles_from_one_second_to_ten_minutes_with_twenty_percent_jitter(attempts: int, rand: float) -> None:
    base = min(MAX_RETRY, 2.0 ** (min(attempts, 40) - 1))
    delay = backoff(attempts, lambda: rand)
    assert 0.8 * base <= delay <= min(MAX_RETRY, 1.2 * base) + 1e-9
    assert [backoff(n, lambda: 0.5) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600]


# -- delivery -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_event_is_posted_signed_with_its_headers_as_the_event_list_shows_it(rig: Rig) -> None:
    await rig.started(rig.dispatcher())
    event = await record(rig.db, "infrastructure.task", cluster_uuid=None, subject="inf-1", outcome="COMPLETE", data=task("r1"))
    await rig.until(lambda: len(rig.receiver.requests) == 1)
    (got,) = rig.receiver.requests
    listed = await EventsAPI(rig.db).list_events(ApiRequest("GET", "/", {}, {"after": [str(event - 1)]}, {}, b"", None))
    assert got.json() == listed["items"][0]
    assert got.json()["data"] == task("r1")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-outpost-event"] == "infrastructure.task"
    assert got.headers["x-outpost-delivery"] == str(event)
    assert got.headers["x-outpost-timestamp"] == str(int(NOW))
    # What a receiver computes, written out independently of the code under test.
    mac = hmac.new(SECRET, got.headers["x-outpost-timestamp"].encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-outpost-signature"] == f"sha256={mac}"
    assert verify_signature(SECRET, got.headers["x-outpost-timestamp"], got.body, got.headers["x-outpost-signature"], now=NOW + 5)
    await eventually(lambda: _true(rig.dispatchers[0].workers[URL].cursor == event))
    assert await rig.cursor() == {"after_id": event, "attempts": 0, "last_error": ""}


@pytest_twisted.ensureDeferred
async def test_a_new_webhook_starts_at_the_end_and_gets_matching_types_in_order(rig: Rig) -> None:
    await record(rig.db, "infrastructure.task", data=task("before"))
    hook = Webhook(URL, SECRET, ("infrastructure.", "machine.power"))
    dispatcher = await rig.started(rig.dispatcher([hook]))
    wanted = []
    for type in ("infrastructure.task", "machine.status", "machine.power", "machine.power.requested", "infrastructure.request",
                 "volume.state", "infrastructure.task"):
        id = await record(rig.db, type, data=task(f"r-{type}"))
        if type.startswith("infrastructure.") or type == "machine.power":
            wanted.append(id)
    last = await record(rig.db, "volume.state")  # no match: the cursor still moves past it
    await rig.until(lambda: len(rig.receiver.requests) >= len(wanted))
    assert rig.receiver.ids() == wanted
    await eventually(lambda: _true(dispatcher.workers[URL].cursor == last))
    assert (await rig.cursor())["after_id"] == last


@pytest_twisted.ensureDeferred
async def test_failures_are_retried_with_backoff_in_order_and_recorded(rig: Rig) -> None:
    registry = CollectorRegistry()
    logged: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        dispatcher = await rig.started(rig.dispatcher(metrics=WebhookMetrics(registry)))
        rig.receiver.answers = [500, 503, "hang"]
        first = await record(rig.db, "infrastructure.task", data=task("r1"))
        second = await record(rig.db, "infrastructure.task", data=task("r2"))
        t0 = rig.clock.seconds()
        worker = dispatcher.workers[URL]

        async def failed(times: int) -> None:
            await rig.until(lambda: worker.attempts == times)
            await eventually(lambda: _true(worker._retry is not None))

        await failed(1)
        row = await rig.cursor()
        assert row["attempts"] == 1 and row["after_id"] == first - 1
        assert row["last_error"].startswith("HTTP 500: receiver says no") and "\x00" not in row["last_error"]
        assert len(row["last_error"]) < 400
        rig.clock.advance(0.999)
        rig.stub.flush()
        assert len(rig.receiver.requests) == 1  # not before its time
        rig.clock.advance(0.001)
        await failed(2)
        assert (await rig.cursor())["last_error"].startswith("HTTP 503")
        rig.clock.advance(2)
        await rig.until(lambda: len(rig.receiver.requests) == 3)
        rig.clock.advance(TIMEOUT)  # the receiver never answers
        await failed(3)
        assert (await rig.cursor())["last_error"] == f"no answer within {TIMEOUT:g}s"
        rig.clock.advance(3.999)
        rig.stub.flush()
        assert len(rig.receiver.requests) == 3
        rig.clock.advance(0.001)
        await rig.until(lambda: len(rig.receiver.requests) >= 5)
        received = rig.receiver.requests
        # Event 2 waited behind event 1: in order, every time.
        assert rig.receiver.ids() == [first, first, first, first, second]
        assert [r.at - t0 for r in received] == [0, 1, 3, 3 + TIMEOUT + 4, 3 + TIMEOUT + 4]
        await eventually(lambda: _true(worker.cursor == second))
        assert await rig.cursor() == {"after_id": second, "attempts": 0, "last_error": ""}
        value = registry.get_sample_value
        assert value("outpost_webhook_deliveries_total", {"outcome": "rejected"}) == 2
        assert value("outpost_webhook_deliveries_total", {"outcome": "failed"}) == 1
        assert value("outpost_webhook_deliveries_total", {"outcome": "delivered"}) == 2
    finally:
        globalLogPublisher.removeObserver(observe)
    text = "\n".join(logged)
    assert "did not take event" in text
    assert SECRET.hex() not in text and "token=abc" not in text
    assert not any(r.headers["x-outpost-signature"] in text for r in rig.receiver.requests)


@pytest_twisted.ensureDeferred
async def test_a_retry_waits_its_whole_backoff_even_when_woken(rig: Rig) -> None:
    dispatcher = await rig.started(rig.dispatcher())
    rig.receiver.answers = [500]
    first = await record(rig.db, "infrastructure.task", data=task("r1"))
    worker = dispatcher.workers[URL]
    await rig.until(lambda: worker.attempts == 1)
    await eventually(lambda: _true(worker._retry is not None))
    # New events (a NOTIFY each) do not send the failed one again before its time.
    second = await record(rig.db, "infrastructure.task", data=task("r2"))
    await eventually(lambda: _true(rig.feed.horizon >= second))
    rig.stub.flush()
    assert rig.receiver.ids() == [first]
    rig.clock.advance(1)
    await rig.until(lambda: len(rig.receiver.requests) == 3)
    assert rig.receiver.ids() == [first, first, second]


@pytest_twisted.ensureDeferred
async def test_the_cursor_and_attempts_survive_a_restart_of_the_dispatcher(rig: Rig) -> None:
    first = await rig.started(rig.dispatcher())
    a = await record(rig.db, "infrastructure.task", data=task("a"))
    b = await record(rig.db, "infrastructure.task", data=task("b"))
    await rig.until(lambda: rig.receiver.ids() == [a, b])
    await eventually(lambda: _true(first.workers[URL].cursor == b))
    first.stop()
    # Recorded while no process delivers.
    c = await record(rig.db, "infrastructure.task", data=task("c"))
    rig.receiver.answers = [500]
    second = await rig.started(rig.dispatcher())
    await rig.until(lambda: second.workers[URL].attempts == 1)
    await eventually(lambda: _attempts_recorded(rig, 1))
    second.stop()
    # The next process tries at once, and its backoff goes on where the last one left it (2 s after a 2nd failure).
    rig.receiver.answers = [503]
    third = await rig.started(rig.dispatcher())
    worker = third.workers[URL]
    await rig.until(lambda: worker.attempts == 2)
    await eventually(lambda: _true(worker._retry is not None))
    rig.clock.advance(1.999)
    rig.stub.flush()
    assert rig.receiver.ids() == [a, b, c, c]
    rig.clock.advance(0.001)
    await rig.until(lambda: rig.receiver.ids() == [a, b, c, c, c])
    await eventually(lambda: _true(worker.cursor == c))
    assert await rig.cursor() == {"after_id": c, "attempts": 0, "last_error": ""}


@pytest_twisted.ensureDeferred
async def test_the_timer_delivers_when_no_notify_comes(db: Database) -> None:
    async def no_listen() -> Database:
        raise OSError("LISTEN unavailable in this test")

    feed = EventFeed(reactor, db, no_listen, check_interval=3600)
    clock = Clock()
    receiver = Receiver(clock)
    stub = StubTreq(receiver)
    dispatcher = WebhookDispatcher(clock, db, feed, [HOOK], stub, poll_interval=30)
    try:
        dispatcher.start()
        await eventually(lambda: _true(bool(dispatcher.workers)))
        event = await record(db, "infrastructure.task", data=task("r1"))
        stub.flush()
        assert receiver.requests == []
        clock.advance(30)

        async def delivered() -> bool:
            stub.flush()
            return receiver.ids() == [event]

        await eventually(delivered)
    finally:
        dispatcher.stop()
        await feed.stop()


@pytest_twisted.ensureDeferred
async def test_only_the_leader_delivers_and_a_new_leader_resumes_from_the_cursor(rig: Rig, db_dsn: str) -> None:
    stub_b = StubTreq(rig.receiver)
    a, b = rig.dispatcher(), rig.dispatcher(stub=stub_b)
    lead_a, lead_b = webhook_leadership(reactor, db_dsn, a, interval=3600), webhook_leadership(reactor, db_dsn, b, interval=3600)
    try:
        assert await lead_a.check() is True
        assert await lead_b.check() is False
        assert a.running and not b.running
        await eventually(lambda: _true(bool(a.workers)))
        first = await record(rig.db, "infrastructure.task", data=task("r1"))
        await rig.until(lambda: rig.receiver.ids() == [first])
        await eventually(lambda: _true(a.workers[URL].cursor == first))
        await lead_a.stopService()
        assert not a.running
        second = await record(rig.db, "infrastructure.task", data=task("r2"))
        await eventually(lead_b.check, timeout=5)
        assert b.running
        await rig.until(lambda: len(rig.receiver.requests) == 2, stub=stub_b)
        assert rig.receiver.ids() == [first, second]
    finally:
        await lead_a.stopService()
        await lead_b.stopService()


@pytest_twisted.ensureDeferred
async def test_a_real_receiver_verifies_what_it_is_sent(db: Database) -> None:
    got: list[tuple[dict[str, Any], bool]] = []

    class Verifying(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> bytes:  # noqa: N802
            body = request.content.read()
            timestamp = request.getHeader("x-outpost-timestamp") or ""
            signature = request.getHeader("x-outpost-signature") or ""
            # The README's recipe.
            expected = "sha256=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(expected, signature) and abs(reactor.seconds() - int(timestamp)) <= 300
            got.append((json.loads(body), ok))
            request.setResponseCode(204 if ok else 401)
            return b""

    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(Verifying()))
    feed = EventFeed.for_database(db, check_interval=3600)
    hook = Webhook(f"http://127.0.0.1:{port.getHost().port}/hook", SECRET, ("infrastructure.task",))
    dispatcher = WebhookDispatcher.create(reactor, db, feed, [hook])
    try:
        dispatcher.start()
        await eventually(lambda: _true(bool(dispatcher.workers)))
        event = await record(db, "infrastructure.task", data=task("real"))
        await eventually(lambda: _true(len(got) == 1))
        assert got == [(got[0][0], True)] and got[0][0]["id"] == event
        await eventually(lambda: _true(dispatcher.workers[hook.url].cursor == event))
    finally:
        await dispatcher.close()
        await feed.stop()
        await port.stopListening()


async def _attempts_recorded(rig: Rig, n: int) -> bool:
    return (await rig.cursor())["attempts"] == n


# -- secrets at start -------------------------------------------------------------------


def test_webhook_secrets_are_read_at_start_and_every_bad_one_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good.secret"
    write_secret(good, SECRET)
    open_to_all = tmp_path / "open.secret"
    write_secret(open_to_all, SECRET)
    open_to_all.chmod(0o644)
    not_hex = tmp_path / "nothex.secret"
    not_hex.write_text("this is not hex\n")
    not_hex.chmod(0o600)
    configs = [
        WebhookConfig("https://a.example/", good),
        WebhookConfig("https://b.example/", tmp_path / "missing.secret"),
        WebhookConfig("https://c.example/", open_to_all),
        WebhookConfig("https://d.example/", not_hex, ("machine.",)),
    ]
    with pytest.raises(ConfigError) as info:
        load_webhooks(configs)
    problems = info.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [f"webhooks[{i}].secret_file" for i in (1, 2, 3)]
    assert "does not exist" in problems[0] and "chmod 600" in problems[1]
    assert SECRET.hex() not in str(info.value) and "this is not hex" not in str(info.value)
    hooks = load_webhooks(configs[:1])
    assert hooks == [Webhook("https://a.example/", SECRET, ("infrastructure.task",))]
    assert SECRET.hex() not in repr(hooks)


# -- the region process ---------------------------------------------------------------------


def _region_config(tmp_path: Path, dsn: str, url: str, secret_file: Path) -> Any:
    from regiond.config import DatabaseConfig, HTTPConfig, RegionConfig, RPCConfig

    return RegionConfig(
        state_dir=tmp_path / "region", database=DatabaseConfig(dsn, 2), rpc=RPCConfig("tcp:0:interface=127.0.0.1"),
        http=HTTPConfig("tcp:0:interface=127.0.0.1"), webhooks=(WebhookConfig(url, secret_file),),
    )


@pytest_twisted.ensureDeferred
async def test_a_region_with_an_unreadable_webhook_secret_does_not_start_and_says_why(tmp_path: Path, db_dsn: str) -> None:
    from regiond.service import RegionService

    service = RegionService(reactor, _region_config(tmp_path, db_dsn, "https://h.example/", tmp_path / "nope.secret"))
    # (The coroutine itself: startService would also stop the reactor, as a daemon must.)
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secret_file: secret file .*nope\.secret does not exist"):
        await service._start()
    assert service.db is None  # it stopped before opening anything


@pytest_twisted.ensureDeferred
async def test_the_region_delivers_webhooks_and_serves_the_stream_and_ends_both_when_it_stops(tmp_path: Path, db_dsn: str) -> None:
    from twisted.web.client import Agent, HTTPConnectionPool
    from twisted.web.http_headers import Headers

    from regiond.service import RegionService
    from regiond.tokens import READ, TokenStore
    from tests.test_event_stream import SSEClient

    got: list[int] = []

    class Taking(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> bytes:  # noqa: N802
            got.append(int(request.getHeader("x-outpost-delivery") or 0))
            return b""

    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(Taking()))
    secret_file = tmp_path / "hook.secret"
    write_secret(secret_file, SECRET)
    service = RegionService(reactor, _region_config(tmp_path, db_dsn, f"http://127.0.0.1:{port.getHost().port}/", secret_file))
    try:
        await service._start()
        assert service.db is not None and service.app is not None and service.app.webhook_dispatcher is not None
        dispatcher = service.app.webhook_dispatcher
        await eventually(lambda: _true(bool(dispatcher.workers)))
        _, token = await TokenStore(service.db).create(READ, "reader")
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        start = await service.db.fetchone("SELECT coalesce(max(id), 0) AS id FROM events")
        response = await agent.request(
            b"GET", f"{service.api_url}v1/events/stream?type=infrastructure.task&after={start['id']}".encode(),
            Headers({"Authorization": [f"Bearer {token}"]}),
        )
        assert response.code == 200
        client = SSEClient()
        response.deliverBody(client)
        await eventually(lambda: _true(len(service.app.event_feed.observers) == 2))  # the stream and the dispatcher
        await eventually(lambda: _true(client.parser.retry is not None))
        event = await record(service.db, "infrastructure.task", data=task("r1"))
        await eventually(lambda: _true(got == [event]))
        assert (await client.next()).id == str(event)
    finally:
        await service._stop()
        await port.stopListening()
    await client.ended  # the stream was ended, not left hanging
    assert not dispatcher.running

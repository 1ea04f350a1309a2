"""
``GET /api/v1/events/stream``: server-sent events over a real HTTP listener on the real database.

New events arrive; Last-Event-ID (or ?after=) replays then continues live;
the list's filters apply; keep-alives follow the injected clock; a client
that goes away is forgotten, timers and all; a client that stops reading is
paused, then dropped, and resumes where it was; events from another
connection ("another region process") arrive through NOTIFY; a lost LISTEN
connection is replaced without losing an event; an event committed late
with a lower id is not skipped.  The SSE framing is checked with a parser
written to the WHATWG rules, and with Hypothesis for any event.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from regiond import events
from regiond.api.events import EventsAPI
from regiond.api.router import ApiResource
from regiond.api.stream import KEEPALIVE, RETRY_MS, EventFeed, EventStreamAPI, sse_frame
from regiond.db import Database
from regiond.tokens import READ, TokenStore
from tests.regionstack import RegionStack, eventually, region_stack  # noqa: F401

C1 = "9d2f1c4e-3b5a-4c6d-8e7f-0a1b2c3d4e5f"
C2 = "1c0ffee0-0000-4000-8000-000000000002"
PATH = "/api/v1/events/stream"


# -- a small SSE parser (the WHATWG event-stream rules) ---------------------------------


@attrs.frozen
class SSEEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Incremental: bytes in any chunks; lines end at CRLF, LF or CR; a blank line dispatches."""

    _EOL = re.compile(rb"\r\n|\r|\n")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self.last_id: str | None = None
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        out = []
        while True:
            m = self._EOL.search(self._buffer)
            if m is None or (m.group() == b"\r" and m.end() == len(self._buffer)):
                break  # no line yet, or a CR that may be the first half of a CRLF
            line, self._buffer = self._buffer[: m.start()], self._buffer[m.end():]
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self.last_id, self._event or "message", "\n".join(self._data))
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None


def test_the_parser_follows_the_rules_for_fields_comments_and_line_ends() -> None:
    parser = SSEParser()
    got = parser.feed(b": hi\r\nretry: 10\rid: 7\r\nevent: x\ndata: a\ndata:b\n\ndata\n\nid\n\n")
    # "data" with no colon is the field with an empty value; the event name lasts one event; the id lasts.
    assert got == [SSEEvent("7", "x", "a\nb"), SSEEvent("7", "message", "")]
    assert parser.comments == ["hi"] and parser.retry == 10
    assert parser.last_id == ""  # an id field with no value resets it
    assert parser.feed(b"retry: 1x\nevent: y\n\n") == [] and parser.retry == 10
    assert parser.feed(b"id: 3\ndata: x\r") == []  # the CR may start a CRLF
    assert parser.feed(b"\n\r\n") == [SSEEvent("3", "message", "x")]


# -- framing ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
items = st.builds(
    lambda id, type, data, subject: {
        "id": id, "created_at": "2025-01-01T00:00:00+00:00", "type": type, "actor": "test", "cluster_uuid": None,
        "subject": subject, "outcome": "", "data": data,
    },
    id=st.integers(min_value=1, max_value=2**62),
    type=st.text(min_size=1, max_size=40),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    subject=st.text(max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(items, min_size=1, max_size=5), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_any_events_framed_and_cut_anywhere_parse_back_to_the_same_events(batch: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(sse_frame(item) for item in batch)
    # The data is one line of JSON: newlines, CRs and anything else in the values are escaped.
    assert all(line.startswith((b"id: ", b"event: ", b"data: ")) or line == b"" for line in stream.split(b"\n"))
    assert b"\r" not in stream
    parser, got, start = SSEParser(), [], 0
    for cut in sorted({min(c, len(stream)) for c in cuts}) + [len(stream)]:
        got += parser.feed(stream[start:cut])
        start = cut
    assert [e.json() for e in got] == batch
    assert [e.id for e in got] == [str(item["id"]) for item in batch]
    assert [e.event for e in got] == [item["type"].replace("\r", " ").replace("\n", " ") for item in batch]


# -- a server and clients ----------------------------------------------------------------


class SSEClient(Protocol):
    """One stream's body: parsed as it arrives; `close` hangs up."""

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.events: DeferredQueue[SSEEvent] = DeferredQueue()
        self.received: list[SSEEvent] = []
        self.ended: Deferred[None] = Deferred()
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for event in self.parser.feed(data):
            self.received.append(event)
            self.events.put(event)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        self.reason = reason
        self.ended.callback(None)

    async def next(self, timeout: float = 10.0) -> SSEEvent:
        d = self.events.get()
        d.addTimeout(timeout, reactor)
        return await d

    async def take(self, n: int) -> list[SSEEvent]:
        return [await self.next() for _ in range(n)]

    def close(self) -> None:
        self.transport.stopProducing()


@attrs.define
class Server:
    db: Database
    feed: EventFeed
    api: EventStreamAPI
    clock: Clock
    origin: str
    token: str
    port: IListeningPort
    clients: list[SSEClient] = attrs.field(factory=list)

    async def open(self, query: str = "", headers: dict[str, str] | None = None, token: str | None = None) -> tuple[int, SSEClient]:
        """GET the stream; (status, the client reading its body)."""
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        all_headers = {"Authorization": [f"Bearer {token or self.token}"], "Accept": ["text/event-stream"]}
        all_headers.update({k: [v] for k, v in (headers or {}).items()})
        response = await agent.request(b"GET", f"{self.origin}{PATH}{query}".encode(), Headers(all_headers))
        client = SSEClient()
        response.deliverBody(client)
        self.clients.append(client)
        if response.code == 200:
            assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
            await eventually(self._subscribed(client))
        return response.code, client

    def _subscribed(self, client: SSEClient) -> Any:
        async def check() -> bool:
            # The retry hint comes first; the subscription's cursor is set once it reads the horizon.
            return client.parser.retry is not None and all(s.cursor is not None for s in self.api.subscriptions)
        return check


async def record(db: Any, type: str, **kwargs: Any) -> int:
    await events.record(db, type, **kwargs)
    row = await db.fetchone("SELECT max(id) AS id FROM events")
    return int(row["id"])


async def serve(db: Database) -> Server:
    feed = EventFeed(reactor, db, lambda: Database.connect(reactor, db.dsn, size=1), check_interval=3600)
    clock = Clock()
    api = EventStreamAPI(feed, db, clock)
    tokens = TokenStore(db)
    _, token = await tokens.create(READ, "stream-reader")
    resource = ApiResource([*api.routes(), *EventsAPI(db).routes()], tokens.verify)
    site = Site(resource)
    site.displayTracebacks = False
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    return Server(db, feed, api, clock, f"http://127.0.0.1:{port.getHost().port}", token, port)


@pytest_twisted.async_yield_fixture
async def server(db: Database) -> AsyncIterator[Server]:
    s = await serve(db)
    try:
        yield s
    finally:
        for client in s.clients:
            if not client.ended.called:
                client.close()
        await s.feed.stop()
        await maybeDeferred(s.port.stopListening)


# -- behaviour -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_new_events_arrive_as_framed_items_of_the_event_list(server: Server) -> None:
    before = await record(server.db, "machine.status", subject="old")
    status, client = await server.open()
    assert status == 200
    assert client.parser.retry == RETRY_MS
    first = await record(server.db, "machine.status", cluster_uuid=None, subject="m1", outcome="ok", data={"to": "Ready"})
    second = await record(server.db, "volume.state", subject="job-1", data={"text": "two\nlines \u2028 and \"quotes\""})
    got = await client.take(2)
    # Only what came after the connection; in order; each as GET /api/v1/events shows it.
    listed = await EventsAPI(server.db).list_events(_request(after=str(before)))
    assert [e.id for e in got] == [str(first), str(second)]
    assert [e.event for e in got] == ["machine.status", "volume.state"]
    assert [e.json() for e in got] == listed["items"]
    assert got[1].json()["data"]["text"] == "two\nlines \u2028 and \"quotes\""


def _request(**query: str) -> Any:
    from regiond.api.router import ApiRequest

    return ApiRequest("GET", "/api/v1/events", {}, {k: [v] for k, v in query.items()}, {}, b"", None)


@pytest_twisted.ensureDeferred
async def test_last_event_id_replays_what_followed_it_then_continues_live(server: Server) -> None:
    ids = [await record(server.db, "machine.status", subject=f"m{n}") for n in range(5)]
    status, client = await server.open(headers={"Last-Event-ID": str(ids[1])})
    assert status == 200
    assert [e.id for e in await client.take(3)] == [str(i) for i in ids[2:]]
    live = await record(server.db, "machine.status", subject="live")
    assert (await client.next()).id == str(live)
    # ?after= does the same; a Last-Event-ID (an EventSource reconnecting) wins over it.
    _, by_query = await server.open(f"?after={ids[3]}")
    assert [e.id for e in await by_query.take(2)] == [str(ids[4]), str(live)]
    _, both = await server.open(f"?after={ids[0]}", headers={"Last-Event-ID": str(ids[3])})
    assert [e.id for e in await both.take(2)] == [str(ids[4]), str(live)]


@pytest_twisted.ensureDeferred
async def test_a_replay_longer_than_a_page_arrives_whole_and_in_order(server: Server) -> None:
    server.api.page = 7
    await server.db.execute(
        "INSERT INTO events (type, subject) SELECT 'machine.status', 'm' || n FROM generate_series(1, 30) AS n"
    )
    _, client = await server.open("?after=0&type=machine.status")
    got = await client.take(30)
    assert [e.json()["subject"] for e in got] == [f"m{n}" for n in range(1, 31)]
    assert [int(e.id) for e in got] == sorted(int(e.id) for e in got)


@pytest_twisted.ensureDeferred
async def test_the_filters_of_the_list_apply_with_type_prefixes_and_repeated_types(server: Server) -> None:
    _, client = await server.open(f"?type=infrastructure.&type=machine.power&cluster={C1}")
    wanted = []
    await record(server.db, "infrastructure.task", cluster_uuid=C2, data={"requestId": "r0"})  # other cluster
    wanted.append(await record(server.db, "infrastructure.task", cluster_uuid=C1, data={"requestId": "r1", "status": "COMPLETE"}))
    await record(server.db, "machine.power.requested", cluster_uuid=C1)  # "machine.power" is a name, not a prefix
    await record(server.db, "infrastructuretask", cluster_uuid=C1)  # the prefix ends at the dot
    await record(server.db, "volume.state", cluster_uuid=C1)
    wanted.append(await record(server.db, "machine.power", cluster_uuid=C1))
    wanted.append(await record(server.db, "infrastructure.request.accepted", cluster_uuid=C1))
    assert [e.id for e in await client.take(3)] == [str(i) for i in wanted]
    _, by_request = await server.open("?request_id=abc&subject=m9&after=0")
    await record(server.db, "machine.status", subject="m9", data={"request_id": "nope"})
    match = await record(server.db, "machine.status", subject="m9", data={"request_id": "abc"})
    assert (await by_request.next()).id == str(match)
    # Ignition's task events name it requestId.
    _, by_task = await server.open("?request_id=r-7&after=0")
    await record(server.db, "infrastructure.task", data={"requestId": "r-8"})
    task_event = await record(server.db, "infrastructure.task", data={"requestId": "r-7", "status": "FAILED"})
    assert (await by_task.next()).id == str(task_event)
    assert client.events.pending == [] and by_request.events.pending == []


@pytest_twisted.ensureDeferred
async def test_bad_input_is_refused_before_the_stream_starts_and_a_token_is_required(server: Server) -> None:
    for query, headers in [("?after=-1", {}), ("?type=", {}), ("?cluster=nope", {}), ("", {"Last-Event-ID": "x"})]:
        status, client = await server.open(query, headers=headers)
        assert status == 400, (query, headers)
        await client.ended
    status, client = await server.open(token="opt_not_a_token")
    assert status == 401
    await client.ended
    # HEAD answers the headers and ends (a stream's head would never end).
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    head = await agent.request(b"HEAD", f"{server.origin}{PATH}".encode(), Headers({"Authorization": [f"Bearer {server.token}"]}))
    assert head.code == 200 and head.headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert server.api.subscriptions == set()


@pytest_twisted.ensureDeferred
async def test_keep_alive_comments_follow_the_injected_clock(server: Server) -> None:
    _, client = await server.open()
    server.clock.advance(KEEPALIVE - 1)
    server.clock.advance(1)

    async def kept_alive() -> bool:
        return client.parser.comments == ["keep-alive"]

    await eventually(kept_alive)
    server.clock.advance(KEEPALIVE)
    await eventually(lambda: _true(client.parser.comments == ["keep-alive"] * 2))
    # Comments are not events; the stream still carries events.
    assert client.received == []
    event = await record(server.db, "machine.status")
    assert (await client.next()).id == str(event)


async def _true(value: bool) -> bool:
    return value


@pytest_twisted.ensureDeferred
async def test_a_client_that_goes_away_is_forgotten_with_its_timers(server: Server) -> None:
    _, first = await server.open()
    _, second = await server.open()
    assert len(server.api.subscriptions) == 2 and len(server.feed.observers) == 2
    first.close()
    await eventually(lambda: _true(len(server.api.subscriptions) == 1 and len(server.feed.observers) == 1))
    second.close()
    await eventually(lambda: _true(not server.api.subscriptions and not server.feed.observers))
    assert server.clock.getDelayedCalls() == []
    # Events keep being recorded; nobody is written to.
    await record(server.db, "machine.status")
    assert server.feed.listening


@pytest_twisted.ensureDeferred
async def test_an_event_from_another_connection_arrives_through_notify(server: Server) -> None:
    _, client = await server.open()
    other = await Database.connect(reactor, server.db.dsn, size=1)  # as another region process
    try:
        event = await record(other, "infrastructure.task", data={"requestId": "r1", "infrastructureId": "i1", "status": "COMPLETE"})
    finally:
        await other.close()
    got = await client.next()
    assert got.id == str(event) and got.event == "infrastructure.task"
    assert got.json()["data"] == {"requestId": "r1", "infrastructureId": "i1", "status": "COMPLETE"}


@pytest_twisted.ensureDeferred
async def test_an_event_committed_after_a_later_id_is_not_skipped(server: Server) -> None:
    _, client = await server.open()
    other = await Database.connect(reactor, server.db.dsn, size=1)
    release: Deferred[None] = Deferred()
    inserted: Deferred[int] = Deferred()

    async def slow(tx: Any) -> None:
        await events.record(tx, "machine.status", subject="slow")
        row = await tx.fetchone("SELECT currval('events_id_seq') AS id")
        inserted.callback(int(row["id"]))
        await release

    try:
        slow_commit = Deferred.fromCoroutine(other.transaction(slow))
        slow_id = await inserted
        fast_id = await record(server.db, "machine.status", subject="fast")
        assert slow_id < fast_id
        # The fast one is committed and notified, but the slow one's id is below it and still open:
        # the horizon stays below both, so no reader moves past the slow one.
        assert await server.feed.refresh() < slow_id
        assert client.received == []
        release.callback(None)
        await slow_commit
        got = await client.take(2)
        assert [e.json()["subject"] for e in got] == ["slow", "fast"]
    finally:
        if not release.called:
            release.callback(None)
        await other.close()


@pytest_twisted.ensureDeferred
async def test_a_rolled_back_writer_does_not_hold_the_stream_back(server: Server) -> None:
    _, client = await server.open()
    other = await Database.connect(reactor, server.db.dsn, size=1)
    release: Deferred[None] = Deferred()
    inserted: Deferred[None] = Deferred()

    async def doomed(tx: Any) -> None:
        await events.record(tx, "machine.status", subject="never")
        inserted.callback(None)
        await release
        raise RuntimeError("rolled back")

    try:
        failing = Deferred.fromCoroutine(other.transaction(doomed))
        await inserted
        after = await record(server.db, "machine.status", subject="after")
        release.callback(None)
        try:
            await failing
        except RuntimeError:
            pass
        # No NOTIFY comes from a rollback: the feed looks again by itself.
        got = await client.next()
        assert got.id == str(after)
    finally:
        if not release.called:
            release.callback(None)
        await other.close()


@pytest_twisted.ensureDeferred
async def test_a_lost_listen_connection_is_replaced_and_nothing_is_lost(server: Server) -> None:
    _, client = await server.open()
    assert server.feed.listening
    killed = await server.db.fetch(
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%%'"
    )
    assert killed and all(r["done"] for r in killed)
    during = await record(server.db, "machine.status", subject="during")
    # The first check pings through the dead connection; the next finds no answer and listens anew.
    await server.feed.check()
    await server.feed.check()
    assert server.feed.listening
    assert (await client.next()).id == str(during)
    # Live again through NOTIFY alone (no check in between).
    after = await record(server.db, "machine.status", subject="after")
    assert (await client.next()).id == str(after)


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_paused_then_dropped_and_resumes_where_it_was(server: Server) -> None:
    server.api.page = 50
    _, client = await server.open()
    handle = client.transport
    # Stop reading, with a small receive window, so the server's buffers fill.
    handle.pauseProducing()
    _shrink_receive_buffer(client)
    await server.db.execute(
        "INSERT INTO events (type, subject, data) SELECT 'machine.status', 'm' || n, jsonb_build_object('pad', repeat('x', 4000))"
        " FROM generate_series(1, 3000) AS n"
    )

    async def paused() -> bool:
        return any(s.paused for s in server.api.subscriptions)

    await eventually(paused, timeout=20)
    (subscription,) = server.api.subscriptions
    cursor_when_paused = subscription.cursor
    # Paused, it reads no more events: its place is a cursor, not a queue.
    server.clock.advance(KEEPALIVE)
    assert subscription.cursor == cursor_when_paused and subscription in server.api.subscriptions
    server.clock.advance(server.api.stall_timeout)
    await eventually(lambda: _true(not server.api.subscriptions))
    assert server.clock.getDelayedCalls() == []
    # The client, reading again, finds its connection gone: it kept what arrived before.
    handle.resumeProducing()
    await client.ended
    received = client.received
    last = int(received[-1].id) if received else 0
    _, again = await server.open(headers={"Last-Event-ID": str(last)})
    rest = await again.take(3000 - len(received))
    subjects = [e.json()["subject"] for e in received + rest]
    assert subjects == [f"m{n}" for n in range(1, 3001)]


def _shrink_receive_buffer(client: SSEClient) -> None:
    transport: Any = client.transport
    while transport is not None and not hasattr(transport, "getHandle"):
        transport = getattr(transport, "_producer", None) or getattr(transport, "transport", None)
    if transport is not None:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


@pytest_twisted.ensureDeferred
async def test_stopping_the_feed_ends_every_stream(server: Server) -> None:
    _, client = await server.open()
    await server.feed.stop()
    await client.ended
    assert server.api.subscriptions == set()
    # A stream opened after the stop ends at once.
    status, late = await _open_raw(server)
    assert status == 200
    await late.ended


async def _open_raw(server: Server) -> tuple[int, SSEClient]:
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    response = await agent.request(b"GET", f"{server.origin}{PATH}".encode(), Headers({"Authorization": [f"Bearer {server.token}"]}))
    client = SSEClient()
    response.deliverBody(client)
    return response.code, client


@pytest_twisted.ensureDeferred
async def test_the_region_serves_the_stream_with_its_tokens(region_stack: RegionStack) -> None:  # noqa: F811
    app = region_stack.app
    assert app is not None
    try:
        anonymous = await region_stack.request("GET", PATH)
        assert anonymous.status == 401
        row = await region_stack.db.fetchone("SELECT coalesce(max(id), 0) AS id FROM events")
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = await agent.request(
            b"GET", f"{region_stack.origin}{PATH}?type=infrastructure.&after={row['id']}".encode(),
            Headers({"Authorization": [f"Bearer {region_stack.read_token}"]}),
        )
        assert response.code == 200
        client = SSEClient()
        response.deliverBody(client)
        await eventually(lambda: _true(client.parser.retry is not None and len(app.event_feed.observers) == 1))
        await record(region_stack.db, "machine.status")
        event = await record(region_stack.db, "infrastructure.task", data={"requestId": "r", "status": "IN_PROGRESS"})
        got = await client.next()
        assert got.id == str(event) and got.event == "infrastructure.task"
        client.close()
        await client.ended
    finally:
        await app.event_feed.stop()

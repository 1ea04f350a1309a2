"""
pytest fixture: the region's API and RPC side, in-process, on real sockets.

`region_stack` wires the parts exactly as `regiond.service.RegionService`
does (stores, registry on the real reactor, this process registered with
its real RPC port, registrar, responders, `ApiResource` over the v1 routes
plus the OpenAPI route), against the ``db`` fixture's fresh database, and
listens for HTTP and RPC on 127.0.0.1 with OS-chosen ports.  Only the
secret file, the embedded PostgreSQL and the heartbeat are left out: a test
is over long before a heartbeat would be due.

Tests talk to it with treq over real TCP and dial real cluster-role RPC
connections into it with `RegionStack.connect_cluster`.

Use it by importing the fixture into the test module::

    from tests.regionstack import region_stack  # noqa: F401
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from regiond.api.router import Route
from regiond.app import RegionApp
from regiond.clusters import ClusterStore
from regiond.db import Database
from regiond.rpc.registrar import ClusterRegistrar
from regiond.rpc.registry import ConnectionRegistry
from regiond.tokens import ADMIN, READ, TokenStore
from rpc.protocol import CLUSTER, RPCFactory, RPCProtocol
from rpc.region import RegisterCluster

__all__ = ["RegionStack", "region_stack", "SECRET", "eventually", "HTTPResult"]

SECRET = b"region-stack-shared-secret-32byt"
#: The MAAS webhook secret the stack's region is configured with.
WEBHOOK_SECRET = b"webhook-secret-for-region-stack!"

#: Seconds any single HTTP request in these tests may take before it fails the test.
REQUEST_TIMEOUT = 15.0


def _reactor() -> Any:
    # Tests may use the global reactor: pytest-twisted runs it.
    from twisted.internet import reactor

    return reactor


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, interval: float = 0.02) -> None:
    """Await `check()` on the reactor until it is true; fail after `timeout` seconds (no sleeping)."""
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {check}")
        await deferLater(reactor, interval, lambda: None)


@attrs.frozen
class HTTPResult:
    """A response read in full: status, headers (lower-case names, last value) and body."""

    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


@attrs.define
class RegionStack:
    url: str  #: the API base, as RegionService.api_url: http://127.0.0.1:<port>/api/
    origin: str  #: http://127.0.0.1:<port>
    admin_token: str
    admin_token_id: int
    read_token: str
    read_token_id: int
    registry: ConnectionRegistry
    db: Database
    observed: list[tuple[str | None, str, int]]
    routes: list[Route]
    tokens: TokenStore
    clusters: ClusterStore
    registrar: ClusterRegistrar
    process_id: int
    rpc_host: str
    rpc_port: int
    http: HTTPClient
    _region_side: list[RPCProtocol] = attrs.field(factory=list)
    app: RegionApp | None = None
    _cluster_side: list[RPCProtocol] = attrs.field(factory=list)

    def region_side_connections(self) -> list[RPCProtocol]:
        """Every connection the region's RPC listener accepted."""
        return list(self._region_side)

    async def dial(self, secret: bytes = SECRET, locator: Any = None) -> RPCProtocol:
        """A cluster-role RPC connection to the region, authenticated, not registered."""
        factory = RPCFactory(
            secret=secret, role=CLUSTER, clock=_reactor(), ident="test-cluster",
            locator_factory=None if locator is None else (lambda proto: locator),
        )
        endpoint = TCP4ClientEndpoint(_reactor(), self.rpc_host, self.rpc_port, timeout=5)
        proto: RPCProtocol = await endpoint.connect(factory)
        self._cluster_side.append(proto)
        await proto.when_authenticated()
        return proto

    async def connect_cluster(
        self,
        uuid: str,
        name: str,
        secret: bytes = SECRET,
        *,
        version: str = "0.1",
        capabilities: list[str] | None = None,
        locator: Any = None,
    ) -> RPCProtocol:
        """
        Dial in as cluster `uuid`, authenticate and RegisterCluster; returns
        the cluster's end of the connection (``transport.loseConnection()``
        to disconnect it).  When this returns the region has recorded the
        connection and routes calls for `uuid` to it.
        """
        proto = await self.dial(secret, locator)
        await proto.call(
            RegisterCluster, uuid=uuid, name=name, version=version, capabilities=list(capabilities or []), timeout=10
        )
        return proto

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> HTTPResult:
        """
        `method` on `path` (relative to the origin, e.g. ``/api/v1/health``),
        with `token` as the bearer token if given; the whole response.
        """
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        response = await self.http.request(
            method, self.origin + path, headers=all_headers, timeout=REQUEST_TIMEOUT, **kwargs
        )
        raw = await treq.content(response)
        found = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return HTTPResult(response.code, found, raw)

    async def close(self, ports: list[IListeningPort], pool: HTTPConnectionPool) -> None:
        for port in reversed(ports):
            await port.stopListening()
        await pool.closeCachedConnections()
        open_ones = [p for p in [*self._region_side, *self._cluster_side] if p.connected]
        closed = [p.when_closed() for p in open_ones]
        for proto in open_ones:
            # Abort: a test may have paused a cluster's reading, so an
            # orderly close could wait on it.
            proto.transport.abortConnection()
        await DeferredList(closed)
        await self.registrar.settle()


async def _build(db: Database) -> tuple[RegionStack, list[IListeningPort], HTTPConnectionPool]:
    """The parts, wired as RegionService._start wires them."""
    reactor = _reactor()
    ports: list[IListeningPort] = []
    app = RegionApp(reactor, db, webhook_secret=WEBHOOK_SECRET, region_secret=SECRET)
    hostname, pid = socket.gethostname(), os.getpid()
    region_side: list[RPCProtocol] = []
    rpc_factory = app.rpc_factory(SECRET, f"{hostname}:{pid}", on_connect=region_side.append)
    rpc_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(rpc_factory)
    ports.append(rpc_port)
    rpc_address = rpc_port.getHost()
    process_id = await app.processes.register(hostname, pid, rpc_address.host, rpc_address.port)
    app.attach_process(process_id)
    registry, clusters, tokens, registrar = app.registry, app.clusters, app.tokens, app.registrar
    observed: list[tuple[str | None, str, int]] = []

    def observe(route: Route | None, method: str, status: int) -> None:
        observed.append((route.template if route is not None else None, method, status))

    resource = app.resource(observer=observe)
    routes = resource.routes
    site = Site(resource)
    site.displayTracebacks = False
    http_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    ports.append(http_port)
    http_address = http_port.getHost()
    origin = f"http://127.0.0.1:{http_address.port}"

    admin_id, admin_token = await tokens.create(ADMIN, "test-admin")
    read_id, read_token = await tokens.create(READ, "test-read")

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    pool.retryAutomatically = False
    stack = RegionStack(
        url=origin + "/api/",
        origin=origin,
        admin_token=admin_token,
        admin_token_id=admin_id,
        read_token=read_token,
        read_token_id=read_id,
        registry=registry,
        db=db,
        observed=observed,
        routes=routes,
        tokens=tokens,
        clusters=clusters,
        registrar=registrar,
        process_id=process_id,
        rpc_host=rpc_address.host,
        rpc_port=rpc_address.port,
        http=HTTPClient(Agent(reactor, pool=pool)),
        region_side=region_side,
        app=app,
    )
    return stack, ports, pool


@pytest_twisted.async_yield_fixture
async def region_stack(db: Database) -> AsyncIterator[RegionStack]:
    """A live region API + RPC listener on 127.0.0.1 over a fresh database."""
    stack, ports, pool = await _build(db)
    try:
        yield stack
    finally:
        await stack.close(ports, pool)

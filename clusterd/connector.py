"""
The cluster's connections to the region: one to every region process.

* Discovery: every 30 s (sooner, with backoff, until it first succeeds) the
  cluster fetches ``/api/v1/rpc-endpoints`` from a configured region URL, or
  asks a connected region with `GetRegionEndpoints`; it keeps one
  `ClientService` per endpoint and drops those no longer listed.
* Each connection authenticates, then registers (`RegisterCluster`); only
  then is it live and handed out by `getClient`.
* Liveness: each live connection is pinged every 30 s with a 10 s timeout;
  a connection that fails a ping is aborted, and `ClientService` reconnects
  with jittered exponential backoff capped at 30 s.
* A connection that ends before it registers (the region refused the
  secret or the registration) counts as a failed attempt, so a misconfigured
  cluster backs off to one try every 30 s instead of every second
  (`ClientService` alone would count its TCP connect as a success).
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any, Callable, Iterable

import attrs
import treq
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rpc.client import RegionClient
from rpc.common import Ping
from rpc.errors import NoConnectionsAvailable, RPCError
from rpc.protocol import CLUSTER, LocatorFactory, RPCFactory, RPCProtocol, SecretSource
from rpc.region import GetRegionEndpoints, RegisterCluster

__all__ = ["RegionConnector", "Endpoint", "PING_INTERVAL", "PING_TIMEOUT", "DISCOVERY_INTERVAL"]

log = Logger()

PING_INTERVAL = 30.0
PING_TIMEOUT = 10.0
DISCOVERY_INTERVAL = 30.0
DISCOVERY_TIMEOUT = 10.0
MAX_BACKOFF = 30.0

Endpoint = tuple[str, int]


def reconnect_policy(rng: Callable[[], float] = random.random) -> Callable[[int], float]:
    """Jittered exponential backoff from 1 s, capped at 30 s."""
    return backoffPolicy(initialDelay=1.0, factor=1.5, maxDelay=MAX_BACKOFF - 1, jitter=rng)


@attrs.define
class _Attempts:
    """
    A reconnect policy that also counts connections which ended unusable
    (before registering) since the last one that registered.
    """

    policy: Callable[[int], float]
    unusable: int = 0

    def __call__(self, failed_attempts: int) -> float:
        return self.policy(failed_attempts + self.unusable)


def parse_endpoints(document: Any) -> list[Endpoint]:
    """The (host, port) pairs in a discovery document; malformed entries are skipped."""
    found = []
    entries = document.get("endpoints") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            host, port = entry.get("host"), entry.get("port")
            if isinstance(host, str) and host and isinstance(port, int) and 0 < port < 65536:
                found.append((host, port))
    return found


@attrs.define(eq=False)
class RegionConnector(MultiService):
    reactor: Any = attrs.field(repr=False)
    region_urls: tuple[str, ...]
    #: The secret file (`outpost.secret.SecretFile`): read again for every
    #: new connection, so a rotation needs no restart; or one fixed secret.
    secret: bytes | SecretSource = attrs.field(repr=False)
    uuid: str
    name: str
    version: str
    capabilities: tuple[str, ...] = ()
    locator_factory: LocatorFactory | None = None
    http: Any = None  # a treq-like client; default: treq
    #: Makes the endpoint for a region's (host, port); tests pass in-memory ones.
    endpoint_factory: Callable[[Any, str, int], Any] = lambda reactor, host, port: HostnameEndpoint(reactor, host, port, timeout=10)
    rng: Callable[[], float] = random.random
    live: set[RPCProtocol] = attrs.field(init=False, factory=set)
    #: Called with no arguments each time a region connection becomes live (registered).
    on_live: list[Callable[[], None]] = attrs.field(init=False, factory=list)
    _services: dict[Endpoint, ClientService] = attrs.field(init=False, factory=dict)
    _attempts: dict[Endpoint, _Attempts] = attrs.field(init=False, factory=dict)
    _discovery: Deferred[list[Endpoint] | None] | None = attrs.field(init=False, default=None)
    _discovered_once: bool = attrs.field(init=False, default=False)
    _failures: int = attrs.field(init=False, default=0)
    _timer: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        MultiService.__init__(self)
        if self.http is None:
            self.http = treq

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        MultiService.startService(self)
        if not isinstance(self.secret, bytes):
            keys = self.secret.current()
            log.info("Proving with the RPC secret {prover}, accepting {fingerprints} (the file is read again for each connection)",
                     prover=keys.fingerprints[0], fingerprints=", ".join(keys.fingerprints))
        self._schedule(0)

    def stopService(self) -> Deferred[Any]:  # noqa: N802
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._discovery is not None:
            self._discovery.cancel()
        stopped: Deferred[Any] = MultiService.stopService(self)  # unannotated in Twisted: the children's DeferredList
        return stopped

    def _schedule(self, delay: float) -> None:
        self._timer = self.reactor.callLater(delay, self._discover_now)

    def _discover_now(self) -> None:
        self._timer = None
        self._discovery = Deferred.fromCoroutine(self.discover())
        self._discovery.addErrback(
            lambda f: None if f.check(CancelledError) else log.failure("Discovery failed", f)
        )
        self._discovery.addBoth(self._discovered)

    def _discovered(self, _: Any) -> None:
        self._discovery = None
        if not self.running:
            return
        if self._discovered_once:
            self._schedule(DISCOVERY_INTERVAL)
        else:
            self._schedule(reconnect_policy(self.rng)(self._failures))

    # -- discovery ---------------------------------------------------------

    async def discover(self) -> list[Endpoint] | None:
        """Find every region process's endpoint and connect to each; None if no source answered."""
        endpoints = await self._fetch_endpoints()
        if endpoints is None:
            self._failures += 1
            return None
        self._failures = 0
        self._discovered_once = True
        self.set_endpoints(endpoints)
        return endpoints

    async def _fetch_endpoints(self) -> list[Endpoint] | None:
        for url in self.region_urls:
            target = url.rstrip("/") + "/api/v1/rpc-endpoints"
            try:
                response = await self.http.get(target, timeout=DISCOVERY_TIMEOUT, reactor=self.reactor)
                if response.code != 200:
                    await response.text()
                    raise ValueError(f"HTTP {response.code}")
                endpoints = parse_endpoints(await response.json())
            except Exception as e:
                log.debug("Discovery from {url} failed: {error}", url=target, error=str(e))
                continue
            if endpoints:
                return endpoints
        for connection in list(self.live):
            try:
                answer = await connection.call(GetRegionEndpoints, timeout=DISCOVERY_TIMEOUT)
            except RPCError:
                continue
            endpoints = parse_endpoints(answer)
            if endpoints:
                return endpoints
        return None

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Keep exactly one connection service per endpoint in `endpoints`."""
        wanted = set(endpoints)
        for endpoint in set(self._services) - wanted:
            log.info("Region {host}:{port} is gone; disconnecting", host=endpoint[0], port=endpoint[1])
            self._services.pop(endpoint).disownServiceParent()
            self._attempts.pop(endpoint, None)
        for endpoint in sorted(wanted - set(self._services)):
            log.info("Connecting to region {host}:{port}", host=endpoint[0], port=endpoint[1])
            service = ClientService(
                self.endpoint_factory(self.reactor, endpoint[0], endpoint[1]),
                RPCFactory(
                    secret=self.secret,
                    role=CLUSTER,
                    clock=self.reactor,
                    ident=self.uuid,
                    locator_factory=self.locator_factory,
                    on_connect=partial(self.connection_made, endpoint=endpoint),
                ),
                retryPolicy=self._attempts.setdefault(endpoint, _Attempts(reconnect_policy(self.rng))),
                clock=self.reactor,
            )
            self._services[endpoint] = service
            service.setServiceParent(self)

    @property
    def endpoints(self) -> list[Endpoint]:
        return sorted(self._services)

    # -- connections -------------------------------------------------------

    def connection_made(self, proto: RPCProtocol, endpoint: Endpoint) -> None:
        d = Deferred.fromCoroutine(self._bring_up(proto, endpoint))
        d.addErrback(lambda f: log.failure("Bringing up {host}:{port} failed", f, host=endpoint[0], port=endpoint[1]))

    async def _bring_up(self, proto: RPCProtocol, endpoint: Endpoint) -> None:
        try:
            await proto.when_authenticated()
            await proto.call(
                RegisterCluster,
                uuid=self.uuid,
                name=self.name,
                version=self.version,
                capabilities=list(self.capabilities),
                timeout=PING_TIMEOUT * 3,
            )
        except RPCError as e:
            attempts = self._unusable(endpoint)
            log.warn("Region {host}:{port} not usable: {error} ({attempts} in a row; backing off)",
                     host=endpoint[0], port=endpoint[1], error=str(e), attempts=attempts)
            if proto.connected and proto.transport is not None:
                proto.transport.loseConnection()
            return
        if not proto.connected:
            self._unusable(endpoint)
            return
        if endpoint in self._attempts:
            self._attempts[endpoint].unusable = 0
        self.live.add(proto)
        pinger = LoopingCall(self._ping, proto)
        pinger.clock = self.reactor
        pinger.start(PING_INTERVAL, now=False)
        log.info("Registered with region {host}:{port}", host=endpoint[0], port=endpoint[1])
        for hook in list(self.on_live):
            try:
                hook()
            except Exception:
                log.failure("A hook on a new region connection failed")

        def lost(_: None) -> None:
            self.live.discard(proto)
            if pinger.running:
                pinger.stop()
            log.info("Lost region {host}:{port}", host=endpoint[0], port=endpoint[1])

        proto.when_closed().addCallback(lost)

    def _unusable(self, endpoint: Endpoint) -> int:
        """Count a connection to `endpoint` that ended before registering; how many in a row."""
        attempts = self._attempts.get(endpoint)
        if attempts is None:
            return 1
        attempts.unusable += 1
        return attempts.unusable

    def _ping(self, proto: RPCProtocol) -> Deferred[Any]:
        def dead(failure: Any) -> None:
            log.warn("Region {peer} failed a ping ({error}); dropping the connection", peer=proto.peer_name, error=failure.getErrorMessage())
            if proto.connected and proto.transport is not None:
                proto.transport.abortConnection()

        return proto.call(Ping, timeout=PING_TIMEOUT).addErrback(dead)

    def getClient(self) -> RegionClient:  # noqa: N802
        """A client for a random live region connection; `NoConnectionsAvailable` if none."""
        if not self.live:
            raise NoConnectionsAvailable("not connected to any region")
        proto = random.choice(list(self.live))
        return RegionClient(proto, ident=proto.peer_name)

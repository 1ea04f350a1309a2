"""
Serving a simulator over HTTP: what every simulator's ``web`` module shares.

A simulator's site is quiet (no tracebacks to clients, no access log: a
simulator running inside a daemon would otherwise write a line per request
into that daemon's log) and wrapped so that stopping it can close the
connections still open.  Each simulator keeps ``(port, factory)`` pairs in
its ``listeners`` list.
"""

from __future__ import annotations

import json
from typing import Any, cast

import attrs
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.protocols.policies import WrappingFactory
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["SimulatorResource", "quiet_site", "serve", "unserve", "origin_of", "named_values", "StopSimulator"]

log = Logger()


class SimulatorResource(Resource):
    """
    A simulator's whole HTTP API: every request is answered by the coroutine
    `_handle`; `reactor` times injected latency.
    """

    isLeaf = True
    #: Names the simulator in the log line of a request it failed to answer.
    label = "Simulator"

    def __init__(self, simulator: Any, reactor: Any) -> None:
        Resource.__init__(self)
        self.sim = simulator
        self.reactor = reactor

    def render(self, request: Request) -> Any:
        d = Deferred.fromCoroutine(self._handle(request))
        d.addErrback(lambda f: log.failure("{label} failed to answer", f, label=self.label))
        return NOT_DONE_YET

    async def _handle(self, request: Request) -> None:
        raise NotImplementedError


def quiet_site(resource: Resource, **site_options: Any) -> WrappingFactory:
    site = Site(resource, **site_options)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    factory = WrappingFactory(site)
    factory.noisy = False
    return factory


async def serve(reactor: Any, endpoint: str, factory: WrappingFactory, listeners: list[Any]) -> IListeningPort:
    """Listen on `endpoint` and remember the listener in `listeners` for `unserve`."""
    server: IStreamServerEndpoint = serverFromString(reactor, endpoint)
    port = await server.listen(factory)
    listeners.append((port, factory))
    return port


async def unserve(port: IListeningPort, listeners: list[Any]) -> None:
    """Stop listening on `port` and close every connection it still has open."""
    for entry in list(listeners):
        listening, factory = entry
        if listening is port:
            listeners.remove(entry)
            for protocol in list(factory.protocols):
                protocol.transport.abortConnection()
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


def origin_of(port: IListeningPort) -> str:
    """``http://HOST:PORT`` for a listener (a wildcard address becomes 127.0.0.1)."""
    address = cast(IPv4Address | IPv6Address, port.getHost())  # simulators listen on TCP
    host = address.host if address.host not in ("0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{address.port}"


# -- as a daemon (twistd plugins) ---------------------------------------------


def named_values(values: list[str], option: str, known: set[str]) -> dict[str, Any]:
    """``NAME=JSON`` option values (e.g. ``--fault error_rate=0.1``), each NAME one of `known`."""
    from twisted.python import usage

    out = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or name not in known:
            raise usage.UsageError(f"--{option} takes NAME=VALUE with NAME one of {', '.join(sorted(known))}, not {item!r}")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            raise usage.UsageError(f"--{option} {name}: {raw!r} is not a JSON value") from None
    return out


@attrs.define(eq=False)
class StopSimulator(Service):
    """Stops the simulator's pending work (jobs, transitions) when the daemon stops."""

    simulator: Any

    def stopService(self) -> None:  # noqa: N802
        Service.stopService(self)
        self.simulator.stop()

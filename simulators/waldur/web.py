"""The Waldur simulator on twisted.web: latency and faults around `WaldurSimulator.handle`."""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from simulators._serve import quiet_site, serve, unserve
from simulators.waldur.state import SimResponse, WaldurSimulator

__all__ = ["WaldurResource", "make_site", "start_waldur_simulator", "stop_waldur_simulator", "simulator_url"]


def origin_of(request: Request) -> str:
    host = request.getHeader(b"host")
    if host:
        return f"http://{host.decode('latin-1')}"
    address = request.getHost()
    return f"http://{address.host}:{address.port}"


def write_answer(request: Request, answer: SimResponse) -> None:
    request.setResponseCode(answer.status)
    for name, value in answer.headers:
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    if request.method != b"HEAD":
        request.write(answer.body)
    request.finish()


class WaldurResource(Resource):
    """Every request goes to the simulator; faults and latency are applied here."""

    isLeaf = True

    def __init__(self, simulator: WaldurSimulator, reactor: Any) -> None:
        Resource.__init__(self)
        self.simulator = simulator
        self.reactor = reactor

    def render(self, request: Request) -> Any:
        return answer_with_faults(request, self.simulator.faults, self.reactor, lambda: self.simulator.handle(
            request.method.decode("ascii", "replace"),
            request.path.decode("utf-8", "replace"),
            request_query(request),
            request_headers(request),
            origin_of(request),
        ))


def request_query(request: Request) -> dict[str, list[str]]:
    return {
        k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
        for k, vs in (request.args or {}).items()
    }


def request_headers(request: Request) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def answer_with_faults(request: Request, faults: Any, reactor: Any, compute: Callable[[], SimResponse]) -> Any:
    """
    Answer `request` with `compute()`, unless a queued fault says otherwise
    ("drop" the connection, "hang", or answer an HTTP status); with latency,
    the answer goes out that much later (unless the client has gone).
    """
    if faults.queue:
        outcome = faults.queue.pop(0)
        if outcome == "drop":
            cast(ITCPTransport, request.transport).abortConnection()  # served over TCP, whose transports can abort
            return NOT_DONE_YET
        if outcome == "hang":
            return NOT_DONE_YET
        answer = SimResponse(int(outcome), (("Content-Type", "application/json"),), b'{"detail": "Simulated failure."}')
    else:
        answer = compute()
    if faults.latency > 0:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        reactor.callLater(faults.latency, lambda: None if finished else write_answer(request, answer))
    else:
        write_answer(request, answer)
    return NOT_DONE_YET


def make_site(simulator: WaldurSimulator, reactor: Any) -> WrappingFactory:
    """A Site for the simulator, wrapped so that its open connections can be closed on stop."""
    return quiet_site(WaldurResource(simulator, reactor))


async def start_waldur_simulator(
    reactor: Any,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    *,
    token: str = "waldur-sim-token",
    resources: int = 100,
    seed: int = 0,
    customers: int | None = None,
    simulator: WaldurSimulator | None = None,
) -> tuple[IListeningPort, WaldurSimulator]:
    """Serve a simulated Waldur on `endpoint` (a new one, or `simulator`); returns the port and the state."""
    if simulator is None:
        simulator = WaldurSimulator.create(token=token, resources=resources, seed=seed, customers=customers)
    return await serve(reactor, endpoint, make_site(simulator, reactor), simulator.listeners), simulator


async def stop_waldur_simulator(port: IListeningPort, simulator: WaldurSimulator) -> None:
    """Stop listening and close every connection still open."""
    await unserve(port, simulator.listeners)


def simulator_url(port: IListeningPort) -> str:
    """The ``waldur_api_url`` of a simulator on `port`: ``http://127.0.0.1:PORT/api/``."""
    address = cast(IPv4Address | IPv6Address, port.getHost())  # the simulator listens on TCP
    return f"http://{address.host}:{address.port}/api/"

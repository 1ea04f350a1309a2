"""The HPC User API simulator on twisted.web."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Request

from simulators._serve import quiet_site, serve, unserve
from simulators.hpcuser.state import TOKEN_PATH, HpcUserSimulator
from simulators.waldur.web import answer_with_faults, request_headers, request_query

__all__ = ["HpcUserResource", "make_site", "start_hpcuser_simulator", "stop_hpcuser_simulator", "simulator_urls"]


class HpcUserResource(Resource):
    isLeaf = True

    def __init__(self, simulator: HpcUserSimulator, reactor: Any) -> None:
        Resource.__init__(self)
        self.simulator = simulator
        self.reactor = reactor

    def render(self, request: Request) -> Any:
        def compute() -> Any:
            body = request.content.read() if request.content is not None else b""
            query = request_query(request) if request.method == b"GET" else {}
            return self.simulator.handle(
                request.method.decode("ascii", "replace"), request.path.decode("utf-8", "replace"), query, request_headers(request), body
            )

        return answer_with_faults(request, self.simulator.faults, self.reactor, compute)


def make_site(simulator: HpcUserSimulator, reactor: Any) -> WrappingFactory:
    return quiet_site(HpcUserResource(simulator, reactor))


async def start_hpcuser_simulator(
    reactor: Any,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    *,
    simulator: HpcUserSimulator | None = None,
    clock: Any = None,
    **settings: Any,
) -> tuple[IListeningPort, HpcUserSimulator]:
    """Serve a simulated HPC User API and token endpoint; returns the port and the state."""
    if simulator is None:
        simulator = HpcUserSimulator(clock if clock is not None else reactor, **settings)
    return await serve(reactor, endpoint, make_site(simulator, reactor), simulator.listeners), simulator


async def stop_hpcuser_simulator(port: IListeningPort, simulator: HpcUserSimulator) -> None:
    await unserve(port, simulator.listeners)


def simulator_urls(port: IListeningPort) -> tuple[str, str]:
    """(``api_url``, ``oidc_token_url``) of a simulator on `port`."""
    address = cast(IPv4Address | IPv6Address, port.getHost())  # the simulator listens on TCP
    origin = f"http://{address.host}:{address.port}"
    return origin, origin + TOKEN_PATH


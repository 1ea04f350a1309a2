"""The HPC User API simulator on twisted.web."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from simulators._serve import quiet_site, serve, unserve
from simulators.hpcuser.state import TOKEN_PATH, HpcUserSimulator
from simulators.waldur.state import SimResponse
from simulators.waldur.web import write_answer

__all__ = ["HpcUserResource", "make_site", "start_hpcuser_simulator", "stop_hpcuser_simulator", "simulator_urls"]


class HpcUserResource(Resource):
    isLeaf = True

    def __init__(self, simulator: HpcUserSimulator, reactor: Any) -> None:
        super().__init__()
        self.simulator = simulator
        self.reactor = reactor

    def render(self, request: Request) -> Any:
        faults = self.simulator.faults
        if faults.queue:
            outcome = faults.queue.pop(0)
            if outcome == "drop":
                request.transport.abortConnection()
                return NOT_DONE_YET
            if outcome == "hang":
                return NOT_DONE_YET
            answer = SimResponse(int(outcome), (("Content-Type", "application/json"),), b'{"detail": "Simulated failure."}')
        else:
            query = {
                k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                for k, vs in (request.args or {}).items()
            } if request.method == b"GET" else {}
            headers = {
                name.decode("latin-1").lower(): values[-1].decode("latin-1")
                for name, values in request.requestHeaders.getAllRawHeaders()
            }
            body = request.content.read() if request.content is not None else b""
            answer = self.simulator.handle(
                request.method.decode("ascii", "replace"), request.path.decode("utf-8", "replace"), query, headers, body
            )
        if faults.latency > 0:
            finished: list[bool] = []
            request.notifyFinish().addBoth(lambda _: finished.append(True))
            self.reactor.callLater(faults.latency, lambda: None if finished else write_answer(request, answer))
        else:
            write_answer(request, answer)
        return NOT_DONE_YET


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
    address = port.getHost()
    origin = f"http://{address.host}:{address.port}"
    return origin, origin + TOKEN_PATH


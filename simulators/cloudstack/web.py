"""
The simulated CloudStack over HTTP (twisted.web), and starting/stopping it.

The API is at ``/client/api`` (GET with a query string, or POST with a form
body, as CloudStack takes both).  Answers are always JSON (the simulator
ignores ``response=xml``).

``/_sim/faults`` is a TEST-ONLY, unauthenticated control interface (never
expose the simulator beyond loopback): GET shows the injected faults, POST
with a JSON object changes them (the fields of `Faults`, e.g.
``{"error_rate": 0.2, "fail_jobs": ["attachVolume"], "stuck_jobs": ["*"]}``).
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.server import Request

from simulators._serve import SimulatorResource, origin_of, quiet_site, serve, unserve
from simulators.cloudstack.auth import verify
from simulators.cloudstack.errors import CS_ERROR_CODES, ApiError
from simulators.cloudstack.faults import Faults
from simulators.cloudstack.model import Limits
from simulators.cloudstack.state import CloudStackSimulator

__all__ = ["CloudStackResource", "make_site", "start_cloudstack_simulator", "stop_cloudstack_simulator", "simulator_url", "API_PATH"]

log = Logger()

API_PATH = "/client/api"
JSON = b"application/json;charset=UTF-8"


class CloudStackResource(SimulatorResource):
    """The whole simulated CloudStack; `reactor` times injected latency."""

    label = "CloudStack simulator"
    sim: CloudStackSimulator

    async def _handle(self, request: Request) -> None:
        gone = [False]
        request.notifyFinish().addBoth(lambda _: gone.__setitem__(0, True))
        fault: str | None = None
        try:
            status, content_type, body, fault = await self._answer(request)
        except Exception:
            log.failure("Unhandled error in the CloudStack simulator", Failure())
            status, content_type, body = 500, b"text/plain; charset=utf-8", b"Internal server error"
        if gone[0]:
            return
        if fault in ("drop", "lose_response"):
            transport = request.channel.transport
            if transport is not None:
                cast(ITCPTransport, transport).abortConnection()  # served over TCP, whose transports can abort
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    async def _answer(self, request: Request) -> tuple[int, bytes, bytes, str | None]:
        path = request.path.decode("utf-8", "replace")
        if path == "/_sim/faults":
            return self._control(request)
        if path.rstrip("/") != API_PATH:
            return 404, b"text/html;charset=utf-8", b"<html><body><h1>404 Not Found</h1></body></html>", None
        params = {
            key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for key, values in (request.args or {}).items()
            if values
        }
        command = params.get("command", "")
        key = f"{command.lower()}response" if command else "errorresponse"
        try:
            verify(params, self.sim.keys, self.sim.now())
        except ApiError as e:
            return self._error(key, e) + (None,)
        self.sim.request_log.append((command, {k: v for k, v in params.items() if k != "signature"}))
        fault = await self._fault()
        if fault == "error":
            status = self.sim.faults.error_status
            if status in CS_ERROR_CODES:
                return self._error(key, ApiError(status, "Internal error (injected fault)")) + (None,)
            return status, b"text/html;charset=utf-8", b"<html><body><h1>Service Unavailable</h1></body></html>", None
        if fault == "drop":
            return 200, JSON, b"", fault
        lowered = {k if k in ("command",) else k.lower(): v for k, v in params.items()}
        try:
            value = self.sim.handle(command, lowered)
        except ApiError as e:
            return self._error(key, e) + (fault,)
        return 200, JSON, json.dumps({key: value}, separators=(",", ":")).encode("utf-8"), fault

    @staticmethod
    def _error(key: str, error: ApiError) -> tuple[int, bytes, bytes]:
        return error.errorcode, JSON, json.dumps({key: error.to_json()}).encode("utf-8")

    async def _fault(self) -> str | None:
        faults = self.sim.faults
        if faults.latency > 0:
            await deferLater(self.reactor, faults.latency, lambda: None)
        if faults.script:
            kind = faults.script.pop(0)
            return None if kind == "ok" else kind
        if faults.error_rate and self.sim.rng.random() < faults.error_rate:
            return "error"
        return None

    def _control(self, request: Request) -> tuple[int, bytes, bytes, None]:
        if request.method == b"POST":
            try:
                assert request.content is not None  # twisted.web has read the body before rendering
                changes = json.loads(request.content.read() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object")
                self.sim.set_faults(**changes)
            except (ValueError, TypeError) as e:
                return 400, b"text/plain; charset=utf-8", str(e).encode("utf-8"), None
        return 200, JSON, json.dumps(self.sim.faults.to_dict()).encode("utf-8"), None


def make_site(simulator: CloudStackSimulator, reactor: Any) -> WrappingFactory:
    """The HTTP factory: a Site wrapped so open connections can be closed; no access log."""
    return quiet_site(CloudStackResource(simulator, reactor))


def simulator_url(port: IListeningPort) -> str:
    """The API URL of a simulator listening on `port` (``http://127.0.0.1:PORT/client/api``)."""
    return origin_of(port) + API_PATH


async def start_cloudstack_simulator(
    reactor: Any,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    *,
    api_key: str,
    secret_key: str,
    job_duration: float = 2.0,
    clock: Any = None,
    faults: Faults | None = None,
    limits: Limits | None = None,
    seed: int = 0,
) -> tuple[IListeningPort, CloudStackSimulator]:
    """
    Serve a new simulated CloudStack on `endpoint`.  Jobs run on `clock`
    (default: `reactor`; tests pass a `task.Clock` to step them); injected
    latency always runs on `reactor`.
    """
    simulator = CloudStackSimulator.create(
        clock if clock is not None else reactor,
        api_key=api_key,
        secret_key=secret_key,
        job_duration=job_duration,
        faults=faults,
        limits=limits,
        seed=seed,
    )
    return await serve(reactor, endpoint, make_site(simulator, reactor), simulator.listeners), simulator


async def stop_cloudstack_simulator(port: IListeningPort, simulator: CloudStackSimulator) -> None:
    """Stop listening, close open connections and cancel pending jobs."""
    await unserve(port, simulator.listeners)
    simulator.stop()

"""
The simulated VIM over HTTP (twisted.web), and starting/stopping it.

The routes and bodies are documented in the package docstring
(`simulators.vim`).  Every answer is JSON; errors are ``{"code", "message"}``
(`errors`).  ``/_sim/faults`` is a TEST-ONLY, unauthenticated control
interface (never expose the simulator beyond loopback): GET shows the
injected faults, POST with a JSON object changes them (the fields of
`Faults`).
"""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import unquote

from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.server import Request

from outpost import jsonstrict
from simulators._serve import SimulatorResource, origin_of, quiet_site, serve, unserve
from simulators.vim.errors import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    SERVICE_UNAVAILABLE,
    ApiError,
)
from simulators.vim.faults import Faults
from simulators.vim.state import VimSimulator
from simulators.vim.template import TEMPLATE_TYPE

__all__ = ["VimResource", "make_site", "start_vim_simulator", "stop_vim_simulator", "simulator_url", "MAX_BODY"]

log = Logger()

JSON = b"application/json"
#: Largest request body taken (a template may be up to `template.MAX_TEMPLATE_CHARS`).
MAX_BODY = 4 * 1024 * 1024

_Answer = tuple[int, Any, dict[bytes, bytes]]


class VimResource(SimulatorResource):
    """The whole simulated VIM; `reactor` times injected latency."""

    label = "VIM simulator"
    sim: VimSimulator

    async def _handle(self, request: Request) -> None:
        gone = [False]
        request.notifyFinish().addBoth(lambda _: gone.__setitem__(0, True))
        try:
            answer = await self._answer(request)
        except ApiError as e:
            allow = {b"Allow": ", ".join(e.allowed).encode("ascii")} if isinstance(e, _MethodNotAllowed) else {}
            answer = (e.status, e.to_json(), allow)
        except Exception:
            log.failure("Unhandled error in the VIM simulator", Failure())
            answer = (500, {"code": INTERNAL_ERROR, "message": "internal error"}, {})
        if gone[0]:
            return
        if answer is None:  # an injected "drop"
            transport = request.channel.transport
            if transport is not None:
                cast(ITCPTransport, transport).abortConnection()  # served over TCP, whose transports can abort
            return
        status, body, headers = answer
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
        for name, value in headers.items():
            request.setHeader(name, value)
        if request.method != b"HEAD":
            request.write(data)
        request.finish()

    async def _answer(self, request: Request) -> _Answer | None:
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        parts = [unquote(part) for part in path.strip("/").split("/")] if path.strip("/") else []
        if parts == ["_sim", "faults"]:
            return self._control(request, method)
        if parts in ([], ["v1"]):
            _allow(method, "GET")
            return 200, {"name": "outpost-vim-simulator", "versions": ["v1"], "template_types": [TEMPLATE_TYPE]}, {}
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in ("infrastructures", "templates"):
            raise ApiError(404, NOT_FOUND, f"no such path: {path[:200]}")
        self.sim.request_log.append((method, path))
        if not await self._no_fault():
            return None
        sim = self.sim
        rest = parts[2:]
        if parts[1] == "templates":
            if rest != ["validate"]:
                raise ApiError(404, NOT_FOUND, f"no such path: {path[:200]}")
            _allow(method, "POST")
            body = _body(request)
            template = sim.validate(body.get("template"), body.get("template_type", TEMPLATE_TYPE))
            return 200, {
                "valid": True,
                "parameters": list(template.parameters),
                "resources": list(template.resources),
                "outputs": list(template.outputs),
            }, {}
        if not rest:
            if method == "POST":
                body = _body(request)
                infrastructure, created = sim.create_infrastructure(
                    body.get("name"), body.get("template"), body.get("template_type", TEMPLATE_TYPE), body.get("properties")
                )
                return 202, {"id": infrastructure.id, "request_id": created.id}, {}
            _allow(method, "GET", "POST")
            name = _arg(request, "name")
            return 200, {"infrastructures": [i.to_json() for i in sim.find(name)]}, {}
        if len(rest) == 1:
            if method == "DELETE":
                infrastructure, deleting = sim.delete_infrastructure(rest[0])
                return 202, {"id": infrastructure.id, "request_id": deleting.id}, {}
            _allow(method, "GET", "DELETE")
            return 200, sim.get_infrastructure(rest[0]).to_json(), {}
        if rest[1] == "requests" and len(rest) == 2:
            _allow(method, "GET")
            infrastructure = sim.get_infrastructure(rest[0])
            return 200, {"requests": [infrastructure.request_json(r) for r in infrastructure.requests.values()]}, {}
        if rest[1] == "requests" and len(rest) == 3:
            _allow(method, "GET")
            infrastructure, found = sim.get_request(rest[0], rest[2])
            return 200, infrastructure.request_json(found), {}
        raise ApiError(404, NOT_FOUND, f"no such path: {path[:200]}")

    async def _no_fault(self) -> bool:
        """Apply injected faults: False to drop the connection; raises the injected error."""
        faults = self.sim.faults
        if faults.latency > 0:
            await deferLater(self.reactor, faults.latency, lambda: None)
        kind: str | None = None
        if faults.script:
            kind = faults.script.pop(0)
        elif faults.error_rate and self.sim.rng.random() < faults.error_rate:
            kind = "error"
        if kind == "drop":
            return False
        if kind == "error":
            raise ApiError(faults.error_status, SERVICE_UNAVAILABLE, "the VIM cannot take requests now (injected fault)")
        return True

    def _control(self, request: Request, method: str) -> _Answer:
        if method == "POST":
            changes = _body(request)
            try:
                self.sim.set_faults(**changes)
            except (ValueError, TypeError) as e:
                raise ApiError(400, BAD_REQUEST, str(e)) from None
        else:
            _allow(method, "GET", "POST")
        return 200, self.sim.faults.to_dict(), {}


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise _MethodNotAllowed(method, allowed)


class _MethodNotAllowed(ApiError):
    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(405, METHOD_NOT_ALLOWED, f"{method[:20]} is not allowed here (allowed: {', '.join(allowed)})")
        self.allowed = allowed


def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object body (400 for anything else)."""
    content = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(content) > MAX_BODY:
        raise ApiError(413, BAD_REQUEST, f"the body is larger than {MAX_BODY} bytes")
    try:
        data = jsonstrict.loads(content)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, BAD_REQUEST, f"the body is not JSON: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, BAD_REQUEST, f"the body must be a JSON object, not {type(data).__name__}")
    return data


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    return values[0].decode("utf-8", "replace") if values else None


def make_site(simulator: VimSimulator, reactor: Any) -> WrappingFactory:
    """The HTTP factory: a Site wrapped so open connections can be closed; no access log."""
    return quiet_site(VimResource(simulator, reactor))


def simulator_url(port: IListeningPort) -> str:
    """The base URL of a simulator listening on `port` (``http://127.0.0.1:PORT``): the driver's ``url``."""
    return origin_of(port)


async def start_vim_simulator(
    reactor: Any,
    listen: str = "tcp:0:interface=127.0.0.1",
    *,
    create_duration: float = 3.0,
    delete_duration: float = 1.0,
    capacity: int | None = None,
    faults: Faults | None = None,
    seed: int | None = None,
    clock: Any = None,
    simulator: VimSimulator | None = None,
) -> tuple[IListeningPort, VimSimulator]:
    """
    Serve a simulated VIM on `listen` (a server endpoint string): a new one,
    or `simulator` (then the other settings are its own).  Requests end on
    `clock` (default: `reactor`; tests pass a `task.Clock` to step them);
    injected latency always runs on `reactor`.
    """
    if simulator is None:
        simulator = VimSimulator.create(
            clock if clock is not None else reactor,
            create_duration=create_duration,
            delete_duration=delete_duration,
            capacity=capacity,
            faults=faults,
            seed=seed,
        )
    return await serve(reactor, listen, make_site(simulator, reactor), simulator.listeners), simulator


async def stop_vim_simulator(port: IListeningPort, simulator: VimSimulator) -> None:
    """Stop listening, close open connections and cancel pending transitions."""
    await unserve(port, simulator.listeners)
    simulator.stop()

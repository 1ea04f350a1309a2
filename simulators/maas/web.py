"""
The simulated MAAS over HTTP (twisted.web), and starting/stopping it.

Paths are MAAS's, under ``/MAAS/api/2.0/`` (see `describe.HANDLERS`), plus
``/MAAS/api/2.0/describe/`` and ``/MAAS/api/version/``.

``/_sim/…`` is a TEST-ONLY, unauthenticated control interface (never expose
the simulator beyond loopback):

* ``GET /_sim/faults`` — the injected faults;
* ``POST /_sim/faults`` with a JSON object — change them (the fields of
  `Faults`, e.g. ``{"error_rate": 0.1, "latency": 0.5, "bmc_failures": ["abc123"],
  "script": ["drop", "lose_response"]}``);
* ``POST /_sim/machines/{system_id}`` with a JSON object — set a machine's
  status, power_state, owner or power_type.
"""

from __future__ import annotations

import json
from typing import Any, Callable, cast

from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.server import Request

from simulators._serve import SimulatorResource, origin_of, quiet_site, serve, unserve
from simulators.maas import errors
from simulators.maas.auth import verify
from simulators.maas.describe import Handler, describe, match
from simulators.maas.faults import Durations, Faults
from simulators.maas.forms import parse_body, parse_query
from simulators.maas.model import API, Status
from simulators.maas.state import MAASSimulator, User

__all__ = ["MAASResource", "make_site", "start_maas_simulator", "stop_maas_simulator", "simulator_url"]

log = Logger()

MAX_BODY = 16 * 1024 * 1024
_SETTABLE = {"status", "power_state", "owner", "power_type", "hostname", "zone", "pool", "tag_names"}


class _Json:
    """An answer already encoded as JSON."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status


class MAASResource(SimulatorResource):
    """The whole simulated MAAS; `reactor` times injected latency."""

    label = "MAAS simulator"
    sim: MAASSimulator

    async def _handle(self, request: Request) -> None:
        gone = [False]
        request.notifyFinish().addBoth(lambda _: gone.__setitem__(0, True))
        fault: str | None = None
        try:
            answer, fault = await self._answer(request)
        except errors.SimError as e:
            status, content_type, body, headers = e.status, e.content_type, e.body(), e.headers
        except Exception:
            log.failure("Unhandled error in the MAAS simulator", Failure())
            status, content_type, body, headers = 500, "text/plain; charset=utf-8", b"Internal server error", {}
        else:
            status, content_type, headers = answer.status, "application/json", {}
            body = answer.body
        if gone[0]:
            return
        if fault in ("drop", "lose_response"):
            transport = request.channel.transport
            if transport is not None:
                cast(ITCPTransport, transport).abortConnection()  # served over TCP, whose transports can abort
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Vary", b"Authorization,Cookie")
        for name, value in headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    async def _answer(self, request: Request) -> tuple[_Json, str | None]:
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace").upper()
        _, _, raw_query = request.uri.partition(b"?")
        query = parse_query(raw_query)
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_BODY:
            raise errors.PlainBadRequest("Request body too large.")
        if path.startswith("/_sim/"):
            return self._control(method, path, body), None
        if path == "/MAAS/api/version/":
            return _Json(b'"2.0"'), None
        if path == API + "describe/":
            if method != "GET":
                raise errors.MethodNotAllowed("Method not allowed.")
            return self._json(describe(self._base_uri(request))), None
        if not path.startswith(API):
            raise errors.NotFound(f"Unknown path {path}.")
        found = match(path[len(API):])
        if found is None:
            raise errors.NotFound(f"Unknown API endpoint: {path}.")
        handler, uri_params = found
        op = query.pop("op", [None])[-1]
        self.sim.request_log.append((method, path, op))
        action = handler.action(method, op)
        if action is None:
            if op is None and not any(a.method == method for a in handler.actions):
                raise errors.MethodNotAllowed(f"Method {method} is not allowed here.")
            raise errors.PlainBadRequest(f"Unrecognised signature: method={method} op={op}")
        user: User | None = None
        if not handler.anonymous:
            user = verify(request.getHeader("authorization"), self.sim.credentials)  # type: ignore[assignment]
        fault = None
        if not handler.anonymous:
            fault = await self._fault()
            if fault == "error":
                retry_after = self.sim.faults.retry_after
                headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
                error = errors.SimError("Service unavailable (injected fault).", headers)
                error.status = self.sim.faults.error_status
                raise error
            if fault == "drop":
                return _Json(b""), fault
        params = parse_body(request.getHeader("content-type"), body) if method in ("POST", "PUT") else {}
        assert user is not None or handler.anonymous
        return self._dispatch(handler, method, op, uri_params, query, params, user), fault

    async def _fault(self) -> str | None:
        """The fault to inject into this request, after any injected latency."""
        faults = self.sim.faults
        if faults.latency > 0:
            await deferLater(self.reactor, faults.latency, lambda: None)
        if faults.script:
            kind = faults.script.pop(0)
            return None if kind == "ok" else kind
        rng = self.sim.rng
        if faults.drop_rate and rng.random() < faults.drop_rate:
            return "drop"
        if faults.error_rate and rng.random() < faults.error_rate:
            return "error"
        if faults.lose_response_rate and rng.random() < faults.lose_response_rate:
            return "lose_response"
        return None

    @staticmethod
    def _base_uri(request: Request) -> str:
        host = request.getHeader("host")
        if not host:
            address = request.getHost()
            host = f"{address.host}:{address.port}"
        return f"{'https' if request.isSecure() else 'http'}://{host}"

    def _json(self, value: Any, status: int = 200) -> _Json:
        return _Json(json.dumps(value, separators=(",", ":")).encode("utf-8"), status)

    def _dispatch(
        self,
        handler: Handler,
        method: str,
        op: str | None,
        uri: dict[str, str],
        query: dict[str, list[str]],
        params: dict[str, list[str]],
        user: User | None,
    ) -> _Json:
        sim, net = self.sim, self.sim.network
        name = handler.name
        if name == "VersionHandler":
            return self._json(sim.version())
        assert user is not None
        if name == "UsersHandler":
            return self._json(sim.whoami(user) if op == "whoami" else sim.list_users())
        if name == "UserHandler":
            found = sim.users.get(uri["username"])
            if found is None:
                raise errors.NotFound.of("User")
            return self._json(found.to_dict())
        if name == "MachinesHandler":
            return _Json(sim.machines_json(sim.filter_machines(query)))
        if name == "MachineHandler":
            system_id = uri["system_id"]
            if method == "GET" and op is None:
                return _Json(sim.machine_json(sim.get(system_id)))
            if op == "query_power_state":
                return self._json({"state": sim.query_power_state(user, system_id)})
            act: Callable[..., Any] = {
                "commission": sim.commission,
                "deploy": sim.deploy,
                "release": sim.release,
                "power_on": sim.power_on,
                "power_off": sim.power_off,
                None: sim.update,
            }[op]
            machine = act(user, system_id, params)
            return _Json(b"null") if machine is None else _Json(sim.machine_json(machine))
        lists: dict[str, tuple[list[dict[str, Any]], str, str]] = {
            "Zones": (net.zones, "name", "Zone"),
            "ResourcePools": (net.pools, "id", "ResourcePool"),
            "Subnets": (net.subnets, "id", "Subnet"),
            "Fabrics": (net.fabrics, "id", "Fabric"),
            "Spaces": (net.spaces, "id", "Space"),
        }
        if name == "VlansHandler":
            return self._json(sim.vlans(uri["fabric_id"]))
        if name == "VlanHandler":
            return self._json(sim.vlan(uri["fabric_id"], uri["vid"]))
        plural = name.removesuffix("Handler")
        if plural in lists:
            return self._json(lists[plural][0])
        for items, key, singular in lists.values():
            if name == f"{singular}Handler":
                return self._json(sim.find_one(items, key, uri[handler.params[0]], singular))
        raise errors.NotFound(f"No simulator answer for {name}.")  # pragma: no cover

    def _control(self, method: str, path: str, body: bytes) -> _Json:
        """The test-only ``/_sim/`` interface."""
        if path == "/_sim/faults":
            if method == "POST":
                changes = self._json_body(body)
                try:
                    self.sim.set_faults(**changes)
                except (ValueError, TypeError) as e:
                    raise errors.PlainBadRequest(str(e)) from None
            return self._json(self.sim.faults.to_dict())
        if path.startswith("/_sim/machines/") and method == "POST":
            system_id = path.removeprefix("/_sim/machines/").strip("/")
            changes = self._json_body(body)
            unknown = set(changes) - _SETTABLE
            if unknown:
                raise errors.PlainBadRequest(f"cannot set {', '.join(sorted(unknown))}")
            if "status" in changes and changes["status"] not in range(Status.FAILED_TESTING + 1):
                raise errors.PlainBadRequest("status must be a MAAS status code (0-22)")
            machine = self.sim.set_machine(system_id, **changes)
            return _Json(self.sim.machine_json(machine))
        raise errors.NotFound(f"Unknown simulator control path {path}.")

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            raise errors.PlainBadRequest("send a JSON object") from None
        if not isinstance(value, dict):
            raise errors.PlainBadRequest("send a JSON object")
        return value


def make_site(simulator: MAASSimulator, reactor: Any) -> WrappingFactory:
    """The HTTP factory: a Site that leaves bodies to us, wrapped so open connections can be closed."""
    return quiet_site(MAASResource(simulator, reactor), parsePOSTFormSubmission=False)


def simulator_url(port: IListeningPort) -> str:
    """The MAAS URL of a simulator listening on `port` (``http://127.0.0.1:PORT/MAAS/``)."""
    return origin_of(port) + "/MAAS/"


async def start_maas_simulator(
    reactor: Any,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    *,
    api_key: str,
    machines: int = 10,
    seed: int = 0,
    durations: Durations | None = None,
    faults: Faults | None = None,
    clock: Any = None,
) -> tuple[IListeningPort, MAASSimulator]:
    """
    Serve a new simulated MAAS on `endpoint`.  Machine changes run on `clock`
    (default: `reactor`; tests pass a `task.Clock` to step them); injected
    latency always runs on `reactor`.
    """
    simulator = MAASSimulator.create(
        clock if clock is not None else reactor,
        machines=machines,
        api_key=api_key,
        seed=seed,
        durations=durations,
        faults=faults,
    )
    return await serve(reactor, endpoint, make_site(simulator, reactor), simulator.listeners), simulator


async def stop_maas_simulator(port: IListeningPort, simulator: MAASSimulator) -> None:
    """Stop listening, close open connections and cancel pending machine changes."""
    await unserve(port, simulator.listeners)
    simulator.stop()

"""
The ``simulated`` infrastructure driver: Ignition's driver contract
(`clusterd.infrastructure.driver`) against the simulated VIM
(`simulators.vim`) over its HTTP API.

It is the driver a new site runs with no VIM at all (``make run``, the
demo, the end-to-end tests), so it is a real HTTP client with the failure
modes of one, not an in-memory fake: the contract suite
(``tests/infracontract.py``) holds it to the same behaviour as a driver for
real hardware.

Configuration (``infrastructure: drivers: simulated:`` in the cluster's
configuration, handed over as `DriverContext.config`)::

    url: http://127.0.0.1:8090     # the simulator's base URL (required)
    timeout: 30                    # seconds for each HTTP call, connecting included

The URL comes from configuration only; a request's ``deploymentLocation``
(whose properties API clients write) is never used to pick a host, or any
API client could aim the cluster at any address.  Bad configuration raises
`SimulatedDriverConfigError` from `make_driver` (a `ConfigError` listing
every problem, and a `ValueError`).

Mapping of the VIM's answers to Ignition's errors:

- connection refused, DNS failure, connection lost, no answer within
  `timeout` → `UnreachableDeploymentLocation` (the monitor requeues);
- 503, and 429/502/504 (a VIM, or a proxy in front of one, asking to come
  back later) → `TemporaryInfrastructureError` (the monitor requeues);
- 400 ``InvalidTemplate`` → `InvalidInfrastructureTemplate`; any other 4xx
  about the body → `InvalidInfrastructureRequest`;
- 404 ``InfrastructureNotFound`` → `InfrastructureNotFound`; 404
  ``RequestNotFound`` → `InfrastructureRequestNotFound`;
- anything else (500, a 404 for the path itself, an answer that is not the
  documented JSON) → `InfrastructureError`.

Every HTTP call is recorded in `DriverContext.metrics` (service ``vim``;
outcome ``unavailable`` for the two requeued errors).  A call is never
retried here: the cluster's task monitor polls again, and create requests
must not be sent twice.

Infrastructure is named after ``systemProperties.resourceName`` (else
``resourceId``), and `find_infrastructure` looks it up by that name after the
VIM validated the template; only infrastructure in CREATE_COMPLETE (created,
and no delete started) is found, with its outputs.  Property values may be plain or Ignition's
``{"type", "value"}`` form.
"""

from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.web import _newclient
from twisted.web.client import Agent, HTTPConnectionPool

from clusterd.infrastructure.driver import (
    COMPLETE,
    FAILED,
    FAILURE_CODES,
    INTERNAL_ERROR,
    STATUSES,
    Accepted,
    DriverContext,
    FailureDetails,
    Found,
    InfrastructureError,
    InfrastructureNotFound,
    InfrastructureRequestNotFound,
    InfrastructureTask,
    InvalidInfrastructureRequest,
    InvalidInfrastructureTemplate,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from outpost.config import ConfigError, Field, http_url, load_section, positive_float
from outpost.metrics import ExternalCallMetrics, observe_external

__all__ = ["make_driver", "SimulatedDriver", "SimulatedDriverConfigError", "CONFIG_PATH", "SERVICE", "flatten_properties"]

#: Where the configuration lives, for messages.
CONFIG_PATH = "infrastructure.drivers.simulated"
#: The metrics' service label.
SERVICE = "vim"
DEFAULT_TIMEOUT = 30.0
MAX_PERSISTENT_PER_HOST = 8
FIELDS = [Field("url", http_url), Field("timeout", positive_float, DEFAULT_TIMEOUT)]

#: Statuses by which the VIM (or a proxy in front of it) asks to be tried again later.
TEMPORARY_STATUSES = frozenset({429, 502, 503, 504})
#: Failures of the connection itself: the location cannot be reached.
_TRANSPORT_ERRORS = (
    ierror.ConnectError,
    ierror.DNSLookupError,
    ierror.ConnectionLost,
    ierror.ConnectionDone,
    ierror.TimeoutError,
    _newclient.ResponseFailed,
    _newclient.RequestNotSent,
    _newclient.RequestTransmissionFailed,
    ConnectionError,
)
_UNAVAILABLE = (UnreachableDeploymentLocation, TemporaryInfrastructureError)
_MESSAGE_LIMIT = 300


class SimulatedDriverConfigError(ConfigError, ValueError):
    """The ``simulated`` driver's configuration is wrong (every problem listed)."""


def make_driver(context: DriverContext) -> "SimulatedDriver":
    """The `DriverFactory` for the ``simulated`` location type; raises `SimulatedDriverConfigError`."""
    problems: list[str] = []
    config = context.config
    values = load_section(dict(config) if isinstance(config, Mapping) else config, CONFIG_PATH, FIELDS, problems)
    if problems:
        raise SimulatedDriverConfigError(problems)
    return SimulatedDriver(context.reactor, values["url"], timeout=values["timeout"], metrics=context.metrics)


def flatten_properties(properties: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    Property values as plain values: Ignition sends ``{"type": T, "value":
    V}`` (and ``{"type": "key", "privateKey", "publicKey"}``) or plain values.
    """
    out: dict[str, Any] = {}
    for name, value in (properties or {}).items():
        if isinstance(value, Mapping) and "type" in value:
            if value["type"] == "key":
                key = value.get("privateKey")
                public = value.get("publicKey")
                value = key if public is None or key is None else f"{key}\n---\n{public}"
            else:
                value = value.get("value")
        out[str(name)] = value
    return out


@attrs.define(eq=False)
class SimulatedDriver:
    """
    The driver.  `url` is the simulator's base URL; `http` is for tests (any
    object with treq's ``request``); by default a treq `HTTPClient` over a
    persistent pool of its own, closed by `close`.
    """

    reactor: Any = attrs.field(repr=False)
    url: str
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, kw_only=True)
    metrics: ExternalCallMetrics | None = attrs.field(default=None, kw_only=True, repr=False)
    http: Any = attrs.field(default=None, kw_only=True, repr=False)
    _pool: HTTPConnectionPool | None = attrs.field(init=False, default=None, repr=False)
    _base: str = attrs.field(init=False, repr=False)
    _origin: str = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        http_url(self.url)
        positive_float(self.timeout)
        parts = urlsplit(self.url)
        # Messages name the host, never any user:password@ in the URL.
        self._origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self._base = self._origin + parts.path.rstrip("/")
        if self.http is None:
            self._pool = HTTPConnectionPool(self.reactor, persistent=True)
            self._pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            self.http = HTTPClient(Agent(self.reactor, connectTimeout=self.timeout, pool=self._pool))

    # -- the driver contract -----------------------------------------------------------

    async def create_infrastructure(
        self,
        template: str,
        template_type: str,
        system_properties: Mapping[str, Any],
        properties: Mapping[str, Any],
        deployment_location: Mapping[str, Any],
    ) -> Accepted:
        system = flatten_properties(system_properties)
        name = system.get("resourceName") or system.get("resourceId")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInfrastructureRequest(
                "systemProperties.resourceName (or resourceId) is required: the simulated VIM names infrastructure after it"
            )
        body = {"name": name, "template": template, "template_type": template_type, "properties": flatten_properties(properties)}
        answer = await self._call("POST infrastructures", "POST", "/v1/infrastructures", body)
        return Accepted(_text(answer, "id"), _text(answer, "request_id"))

    async def get_infrastructure_task(
        self, infrastructure_id: str, request_id: str, deployment_location: Mapping[str, Any]
    ) -> InfrastructureTask:
        answer = await self._call(
            "GET infrastructures/{id}/requests/{request_id}", "GET",
            f"/v1/infrastructures/{_segment(infrastructure_id)}/requests/{_segment(request_id)}",
        )  # fmt: skip
        status = answer.get("status")
        if status not in STATUSES:
            raise InfrastructureError(f"the VIM at {self._origin} answered an unknown request status {status!r:.80}")
        failure = None
        if status == FAILED:
            code = answer.get("failure_code")
            description = str(answer.get("description") or "")
            if code not in FAILURE_CODES:
                description = f"{description} (VIM failure code {code!r:.80})".strip()
                code = INTERNAL_ERROR
            failure = FailureDetails(code, description)
        outputs = answer.get("outputs")
        if outputs is not None and not isinstance(outputs, dict):
            raise InfrastructureError(f"the VIM at {self._origin} answered outputs that are not an object")
        if status == COMPLETE and outputs is None and answer.get("operation") == "create":
            outputs = {}
        return InfrastructureTask(infrastructure_id, request_id, status, failure, outputs)

    async def delete_infrastructure(self, infrastructure_id: str, deployment_location: Mapping[str, Any]) -> Accepted:
        answer = await self._call("DELETE infrastructures/{id}", "DELETE", f"/v1/infrastructures/{_segment(infrastructure_id)}")
        return Accepted(_text(answer, "id"), _text(answer, "request_id"))

    async def find_infrastructure(
        self, template: str, template_type: str, instance_name: str, deployment_location: Mapping[str, Any]
    ) -> Found | None:
        await self._call("POST templates/validate", "POST", "/v1/templates/validate", {"template": template, "template_type": template_type})
        answer = await self._call("GET infrastructures?name", "GET", "/v1/infrastructures?" + urlencode({"name": instance_name}))
        listed = answer.get("infrastructures")
        if not isinstance(listed, list):
            raise InfrastructureError(f"the VIM at {self._origin} answered a list without 'infrastructures'")
        for item in listed:
            if isinstance(item, dict) and item.get("name") == instance_name and item.get("status") == "CREATE_COMPLETE":
                outputs = item.get("outputs")
                return Found(_text(item, "id"), dict(outputs) if isinstance(outputs, dict) else {})
        return None

    async def close(self) -> None:
        """Close the pool's kept connections (when the driver made the pool)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.closeCachedConnections()

    # -- HTTP ---------------------------------------------------------------------------

    async def _call(self, operation: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return await observe_external(self.metrics, self.reactor, SERVICE, operation, _UNAVAILABLE, self._exchange(method, path, body))

    async def _exchange(self, method: str, path: str, body: Any) -> dict[str, Any]:
        d = Deferred.fromCoroutine(self._send(method, self._base + path, body))
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.reactor.callLater(self.timeout, time_out)
        try:
            status, content = await d
        except Exception as e:
            if timed_out:
                raise UnreachableDeploymentLocation(f"the VIM at {self._origin} did not answer within {self.timeout:g}s") from None
            if _cancelled(e):
                raise CancelledError() from None  # our caller gave up
            if isinstance(e, _TRANSPORT_ERRORS):
                raise UnreachableDeploymentLocation(f"cannot reach the VIM at {self._origin}: {_reason(e)}") from None
            raise InfrastructureError(f"calling the VIM at {self._origin} failed: {_reason(e)}") from None
        finally:
            if timer.active():
                timer.cancel()
        return self._answer(status, content)

    async def _send(self, method: str, url: str, body: Any) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {b"Accept": [b"application/json"]}
        if data is not None:
            headers[b"Content-Type"] = [b"application/json"]
        response = await self.http.request(method, url, data=data, headers=headers)
        return response.code, await treq.content(response)

    def _answer(self, status: int, content: bytes) -> dict[str, Any]:
        try:
            data = json.loads(content) if content else None
        except ValueError:
            data = None
        if 200 <= status < 300:
            if not isinstance(data, dict):
                raise InfrastructureError(f"the VIM at {self._origin} answered {status} without a JSON object")
            return data
        code = data.get("code") if isinstance(data, dict) else None
        message = data.get("message") if isinstance(data, dict) else None
        detail = " ".join(str(message).split())[:_MESSAGE_LIMIT] if message else f"HTTP {status}"
        if status in TEMPORARY_STATUSES:
            raise TemporaryInfrastructureError(f"the VIM at {self._origin} cannot take requests now: {detail}")
        if status == 404 and code == "InfrastructureNotFound":
            raise InfrastructureNotFound(detail)
        if status == 404 and code == "RequestNotFound":
            raise InfrastructureRequestNotFound(detail)
        if status == 400 and code == "InvalidTemplate":
            raise InvalidInfrastructureTemplate(detail)
        if status in (400, 413, 422) and code is not None:
            raise InvalidInfrastructureRequest(detail)
        if status == 404:
            raise InfrastructureError(f"the VIM at {self._origin} has no such API path ({detail}): check {CONFIG_PATH}.url")
        raise InfrastructureError(f"the VIM at {self._origin} answered {status}: {detail}")


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _text(answer: Mapping[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value:
        raise InfrastructureError(f"the VIM answered without {key!r}")
    return value


def _cancelled(error: BaseException) -> bool:
    """Whether `error` is what a cancelled request fails with (Agent wraps the CancelledError)."""
    if isinstance(error, (CancelledError, ierror.ConnectingCancelledError)):
        return True
    reasons = getattr(error, "reasons", None) or []
    return any(reason.check(CancelledError) for reason in reasons)


def _reason(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(" ".join(str(r.value).split())[:200] or type(r.value).__name__ for r in reasons)
    return " ".join(str(error).split())[:200] or type(error).__name__

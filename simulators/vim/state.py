"""
The simulated VIM's state and behaviour, without HTTP.

An infrastructure is made from a template (see `template`) and goes through
Heat's stack statuses: CREATE_IN_PROGRESS → CREATE_COMPLETE or
CREATE_FAILED, then DELETE_IN_PROGRESS → DELETE_COMPLETE or DELETE_FAILED.
Each create or delete is a *request* with its own id, IN_PROGRESS until it
ends COMPLETE or FAILED (with a failure code and description): what
Ignition's drivers poll.

Time passes on the injected `clock`: a request ends `create_duration` (or
`delete_duration`) seconds after it was accepted, unless the template's
``simulation`` section says otherwise; a duration of 0 ends it at once.

Checks made when a create is accepted end its request FAILED at once, as a
VIM's scheduler would: another live infrastructure with the same name
(RESOURCE_ALREADY_EXISTS, checked first) and `capacity` live
infrastructures already (INSUFFICIENT_CAPACITY).  Live means being
created, or created and not yet deleted (`Infrastructure.live`).

Deleting infrastructure whose create is still running cancels the create
(its request ends FAILED, INFRASTRUCTURE_ERROR).  Deleting while a delete
runs answers that delete's request again.  Deleted infrastructure can still
be read by id (so its requests can be), is not listed, cannot be deleted
again, and is forgotten once `retain_deleted` newer ones were deleted.
"""

from __future__ import annotations

import collections
import random
import uuid
from typing import Any, Callable, Mapping

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from simulators.vim.errors import (
    BAD_REQUEST,
    INFRASTRUCTURE_NOT_FOUND,
    INVALID_TEMPLATE,
    REQUEST_NOT_FOUND,
    ApiError,
)
from simulators.vim.faults import Faults
from simulators.vim.template import MAX_NAME, Instance, Template, TemplateError, parse_template

__all__ = [
    "VimSimulator",
    "Infrastructure",
    "Request",
    "CREATE_IN_PROGRESS",
    "CREATE_COMPLETE",
    "CREATE_FAILED",
    "DELETE_IN_PROGRESS",
    "DELETE_COMPLETE",
    "DELETE_FAILED",
    "IN_PROGRESS",
    "COMPLETE",
    "FAILED",
]

log = Logger()

CREATE_IN_PROGRESS, CREATE_COMPLETE, CREATE_FAILED = "CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_FAILED"
DELETE_IN_PROGRESS, DELETE_COMPLETE, DELETE_FAILED = "DELETE_IN_PROGRESS", "DELETE_COMPLETE", "DELETE_FAILED"
IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"
CREATE, DELETE = "create", "delete"


@attrs.define(eq=False)
class Request:
    """One create or delete request of an infrastructure."""

    id: str
    operation: str
    status: str = IN_PROGRESS
    failure_code: str | None = None
    description: str | None = None
    call: IDelayedCall | None = attrs.field(default=None, repr=False)

    def cancel_call(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


@attrs.define(eq=False)
class Infrastructure:
    id: str
    name: str
    template_type: str
    template: Template = attrs.field(repr=False)
    instance: Instance = attrs.field(repr=False)
    created_at: float
    status: str = CREATE_IN_PROGRESS
    #: Whether its create request completed.
    created: bool = False
    requests: dict[str, Request] = attrs.field(factory=dict, repr=False)

    @property
    def live(self) -> bool:
        """Whether it holds its name and counts against capacity: being created, created, or created and not yet deleted."""
        if self.status in (CREATE_IN_PROGRESS, CREATE_COMPLETE):
            return True
        return self.status in (DELETE_IN_PROGRESS, DELETE_FAILED) and self.created

    @property
    def outputs(self) -> Mapping[str, Any] | None:
        """The output values once the create completed (and until deleted), else None."""
        return self.instance.outputs if self.created and self.status != DELETE_COMPLETE else None

    def request_json(self, request: Request) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "request_id": request.id, "operation": request.operation, "status": request.status}
        if request.status == FAILED:
            out["failure_code"] = request.failure_code
            out["description"] = request.description or ""
        if request.operation == CREATE and request.status == COMPLETE:
            out["outputs"] = dict(self.instance.outputs)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "template_type": self.template_type,
            "created_at": self.created_at,
            "resources": [
                {key: resource[key] for key in ("name", "type", "id", "ip")} for resource in self.instance.resources.values()
            ],
            "requests": list(self.requests),
        }
        outputs = self.outputs
        if outputs is not None:
            out["outputs"] = dict(outputs)
        return out


@attrs.define(eq=False)
class VimSimulator:
    clock: IReactorTime = attrs.field(repr=False)
    create_duration: float = 3.0
    delete_duration: float = 1.0
    #: Most live infrastructures at once (None: no limit).
    capacity: int | None = None
    faults: Faults = attrs.field(factory=Faults)
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    retain_deleted: int = 10_000
    infrastructures: dict[str, Infrastructure] = attrs.field(factory=dict, repr=False)
    #: The last API requests served, as ``(method, path)``, for tests.
    request_log: collections.deque[tuple[str, str]] = attrs.field(factory=lambda: collections.deque(maxlen=1000), repr=False)
    #: Called as ``f(infrastructure, request)`` when a request ends (COMPLETE or FAILED).
    on_request_end: list[Callable[[Infrastructure, Request], None]] = attrs.field(factory=list, repr=False)
    #: ``(port, factory)`` for each place it is served (see `web.start_vim_simulator`).
    listeners: list[tuple[Any, Any]] = attrs.field(factory=list, repr=False)
    _deleted: collections.deque[str] = attrs.field(factory=collections.deque, repr=False)

    @classmethod
    def create(
        cls,
        clock: IReactorTime,
        *,
        create_duration: float = 3.0,
        delete_duration: float = 1.0,
        capacity: int | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        retain_deleted: int = 10_000,
    ) -> "VimSimulator":
        """
        A simulator with no infrastructure.  Without `seed` ids are random, so
        a restarted simulator never reuses an id a cluster still remembers.
        """
        for name, value in (("create_duration", create_duration), ("delete_duration", delete_duration)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be 0 or more seconds, not {value!r}")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0):
            raise ValueError(f"capacity must be a whole number of 0 or more (or None), not {capacity!r}")
        if retain_deleted < 0:
            raise ValueError(f"retain_deleted must be 0 or more, not {retain_deleted!r}")
        return cls(
            clock, float(create_duration), float(delete_duration), capacity, faults or Faults(), random.Random(seed),
            retain_deleted,
        )

    # -- inspection and control (tests, the tap, /_sim) ---------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def live(self) -> list[Infrastructure]:
        return [i for i in self.infrastructures.values() if i.live]

    def pending(self) -> list[Request]:
        """Requests still IN_PROGRESS."""
        return [r for i in self.infrastructures.values() for r in i.requests.values() if r.status == IN_PROGRESS]

    def set_faults(self, **changes: Any) -> Faults:
        """Change injected faults (the fields of `Faults`), checked as a whole."""
        merged = {**attrs.asdict(self.faults, recurse=False), **changes}
        self.faults = Faults(**merged)
        return self.faults

    def stop(self) -> None:
        """Cancel pending transitions (their requests stay IN_PROGRESS)."""
        for request in self.pending():
            request.cancel_call()

    # -- the API ------------------------------------------------------------------

    def validate(self, template: Any, template_type: Any) -> Template:
        try:
            return parse_template(template, template_type)
        except TemplateError as e:
            raise ApiError(400, INVALID_TEMPLATE, str(e)) from None

    def create_infrastructure(
        self, name: Any, template: Any, template_type: Any, properties: Any = None
    ) -> tuple[Infrastructure, Request]:
        """Accept a create (400 `ApiError` for a bad name, template or parameter values)."""
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ApiError(400, BAD_REQUEST, f"name must be a string of 1 to {MAX_NAME} characters, not {name!r:.80}")
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            raise ApiError(400, BAD_REQUEST, f"properties must be an object, not {type(properties).__name__}")
        parsed = self.validate(template, template_type)
        try:
            instance = parsed.instantiate(properties, self.rng)
        except TemplateError as e:
            raise ApiError(400, INVALID_TEMPLATE, str(e)) from None
        infrastructure = Infrastructure(self.new_id(), name, template_type.strip().lower(), parsed, instance, self.clock.seconds())
        request = Request(self.new_id(), CREATE)
        infrastructure.requests[request.id] = request
        clash = next((i for i in self.live() if i.name == name), None)
        full = self.capacity is not None and len(self.live()) >= self.capacity
        self.infrastructures[infrastructure.id] = infrastructure
        if clash is not None:
            self._fail(infrastructure, request, "RESOURCE_ALREADY_EXISTS", f"infrastructure named {name!r} already exists ({clash.id})")
        elif full:
            self._fail(infrastructure, request, "INSUFFICIENT_CAPACITY", f"the VIM is at capacity ({self.capacity} infrastructures)")
        else:
            duration = parsed.simulation.create_duration
            self._schedule(infrastructure, request, self.create_duration if duration is None else duration)
        return infrastructure, request

    def get_infrastructure(self, infrastructure_id: str) -> Infrastructure:
        found = self.infrastructures.get(infrastructure_id)
        if found is None:
            raise ApiError(404, INFRASTRUCTURE_NOT_FOUND, f"no infrastructure with id {infrastructure_id!r:.80}")
        return found

    def get_request(self, infrastructure_id: str, request_id: str) -> tuple[Infrastructure, Request]:
        infrastructure = self.get_infrastructure(infrastructure_id)
        request = infrastructure.requests.get(request_id)
        if request is None:
            raise ApiError(404, REQUEST_NOT_FOUND, f"infrastructure {infrastructure_id} has no request with id {request_id!r:.80}")
        return infrastructure, request

    def delete_infrastructure(self, infrastructure_id: str) -> tuple[Infrastructure, Request]:
        infrastructure = self.get_infrastructure(infrastructure_id)
        if infrastructure.status == DELETE_COMPLETE:
            raise ApiError(404, INFRASTRUCTURE_NOT_FOUND, f"infrastructure {infrastructure_id} was deleted")
        if infrastructure.status == DELETE_IN_PROGRESS:
            running = next(r for r in infrastructure.requests.values() if r.operation == DELETE and r.status == IN_PROGRESS)
            return infrastructure, running
        for request in infrastructure.requests.values():
            if request.operation == CREATE and request.status == IN_PROGRESS:
                request.cancel_call()
                self._end(infrastructure, request, FAILED, "INFRASTRUCTURE_ERROR", "deleted before its creation completed")
        request = Request(self.new_id(), DELETE)
        infrastructure.requests[request.id] = request
        infrastructure.status = DELETE_IN_PROGRESS
        duration = infrastructure.template.simulation.delete_duration
        self._schedule(infrastructure, request, self.delete_duration if duration is None else duration)
        return infrastructure, request

    def find(self, name: str | None = None) -> list[Infrastructure]:
        """Live infrastructure, oldest first; only that named `name` when given."""
        return [i for i in self.live() if name is None or i.name == name]

    # -- transitions ----------------------------------------------------------------

    def _schedule(self, infrastructure: Infrastructure, request: Request, duration: float) -> None:
        if duration <= 0:
            self._finish(infrastructure, request)
        else:
            request.call = self.clock.callLater(duration, self._finish, infrastructure, request)

    def _finish(self, infrastructure: Infrastructure, request: Request) -> None:
        request.call = None
        simulation = infrastructure.template.simulation
        code = simulation.fail_create if request.operation == CREATE else simulation.fail_delete
        if code is not None:
            self._fail(infrastructure, request, code, simulation.failure_description or f"{request.operation} failed (simulated {code})")
        else:
            self._end(infrastructure, request, COMPLETE)

    def _fail(self, infrastructure: Infrastructure, request: Request, code: str, description: str) -> None:
        self._end(infrastructure, request, FAILED, code, description)

    def _end(
        self, infrastructure: Infrastructure, request: Request, status: str, code: str | None = None, description: str | None = None
    ) -> None:
        request.status, request.failure_code, request.description = status, code, description
        if request.operation == CREATE:
            infrastructure.created = status == COMPLETE
            if infrastructure.status == CREATE_IN_PROGRESS:
                infrastructure.status = CREATE_COMPLETE if status == COMPLETE else CREATE_FAILED
        else:
            infrastructure.status = DELETE_COMPLETE if status == COMPLETE else DELETE_FAILED
            if status == COMPLETE:
                self._forget_old(infrastructure.id)
        for hook in list(self.on_request_end):
            try:
                hook(infrastructure, request)
            except Exception:
                log.failure("A VIM simulator on_request_end hook failed", Failure())

    def _forget_old(self, deleted_id: str) -> None:
        self._deleted.append(deleted_id)
        while len(self._deleted) > self.retain_deleted:
            self.infrastructures.pop(self._deleted.popleft(), None)

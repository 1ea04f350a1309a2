"""
A small JSON router on twisted.web.

Routes are declared once, as data (`Route`), and the same declarations
drive dispatch, authentication and the OpenAPI document, so the document
cannot drift from what is served.  Handlers are coroutines taking an
`ApiRequest` and returning a `Response` (or a JSON-able value for 200).  A
`Response` with a `content_type` carries raw bytes written as they are (e.g.
``/metrics`` in Prometheus's text format).  A `Stream` is a response written
over time (server-sent events): its `run` gets a `StreamWriter` and the
response ends when `run` returns or the client goes away.

Errors are ``{"error": {code, message, details}}`` unless the route names an
`ErrorBody` of its own, as the peer-compatible routes do (their peers'
shapes), for every error on that route, authentication included.
"""

from __future__ import annotations

import json
import os
import re
import socket
from urllib.parse import unquote
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, TypeVar, overload

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from outpost import jsonstrict
from regiond.api import errors
from regiond.errors import DatabaseUnavailable
from regiond.tokens import ADMIN

__all__ = [
    "Route", "Response", "Stream", "StreamWriter", "ErrorBody", "ApiRequest", "ApiResource", "Authenticator", "MAX_BODY",
    "parse_query",
]

log = Logger()

_T = TypeVar("_T")
_D = TypeVar("_D")

MAX_BODY = 1024 * 1024
#: Seconds a client is told to wait (``Retry-After``) when the database is unavailable.
DATABASE_RETRY_AFTER = 5
_HOST = socket.gethostname()

#: Looks a bearer token up: its id, name and role, or None.
Authenticator = Callable[[str], Awaitable[dict[str, Any] | None]]


@attrs.frozen
class Response:
    body: Any
    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: None: `body` is JSON-encoded; otherwise `body` is bytes, sent as they are with this type.
    content_type: str | None = None


class StreamWriter:
    """What a `Stream` writes to: bytes out, and whether the client is still there."""

    def __init__(self, request: Request, gone: Deferred[None]) -> None:
        #: The twisted.web request, for flow control (``registerProducer``) and the transport.
        self.request = request
        #: Fires (with None) when the client disconnects or the response ends.
        self.gone = gone
        self.closed = False
        gone.addCallback(lambda _: setattr(self, "closed", True))

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.request.write(data)


@attrs.frozen
class Stream:
    """A response written over time; `run` returns when it is complete."""

    run: Callable[[StreamWriter], Awaitable[None]]
    content_type: str = "text/event-stream"
    headers: Mapping[str, str] = attrs.field(factory=dict)


#: Renders an error on a route as its peer does: (status, message, details) → JSON body.
ErrorBody = Callable[[int, str, Any], Any]


@attrs.frozen
class ApiRequest:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    raw_body: bytes
    token: dict[str, Any] | None

    def json(self) -> Any:
        """The body as JSON (an empty body is an empty object)."""
        if not self.raw_body.strip():
            return {}
        content_type = self.headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type not in ("application/json", ""):
            raise errors.UnsupportedMediaType(f"send JSON (application/json), not {content_type}")
        try:
            value = jsonstrict.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as e:
            raise errors.BadRequest(f"body is not valid JSON: {e}") from None
        except RecursionError:
            raise errors.BadRequest("body is nested too deeply") from None
        if b"\\u0000" in self.raw_body:
            # PostgreSQL text cannot hold NUL; refuse it at the door.
            raise errors.BadRequest("JSON strings must not contain NUL (\\u0000)")
        return value

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def actor(self) -> str:
        return f"token:{self.token['id']}" if self.token else "anonymous"


Handler = Callable[[ApiRequest], Awaitable[Any]]


@attrs.frozen
class Route:
    """One method on one path template, with what OpenAPI needs to describe it."""

    method: str
    template: str
    handler: Handler
    summary: str
    #: None: open to all; "read": any valid token; "admin": admin tokens only.
    role: str | None = "read"
    responses: Mapping[int, str] = attrs.field(factory=dict)
    query: Sequence[Mapping[str, Any]] = ()
    request_body: Mapping[str, Any] | None = None
    response_schema: Mapping[str, Any] | None = None
    tags: Sequence[str] = ()
    #: Name of the security scheme a route with role None checks itself (e.g. a webhook signature).
    security_scheme: str | None = None
    #: How this route's errors look; None: Outpost's ``{"error": {...}}``.
    error_body: ErrorBody | None = None
    #: The OpenAPI schema of `error_body`'s answers; None: the ``Error`` schema.
    error_schema: Mapping[str, Any] | None = None
    #: Schemas of error statuses the handler answers in a shape of its own
    #: (a peer's), overriding `error_schema` for those statuses.
    error_schemas: Mapping[int, Mapping[str, Any]] = attrs.field(factory=dict)
    pattern: re.Pattern[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    def all_responses(self) -> dict[int, str]:
        out = dict(self.responses)
        out.setdefault(413, f"Request body larger than {MAX_BODY} bytes")
        if self.role is not None:
            out.setdefault(401, "Missing or unknown bearer token")
            # The token is looked up in the database on every request.
            out.setdefault(503, "Unavailable just now (the region database, say); retry after Retry-After seconds")
            if self.role == ADMIN:
                out.setdefault(403, "The token's role may not do this")
        return out


Observer = Callable[[Route | None, str, int], None]


class RequestMetrics(Protocol):
    """What `ApiResource` records each request into (`outpost.metrics.HTTPMetrics`)."""

    clock: IReactorTime

    def observe(self, template: str | None, method: str, status: int, seconds: float) -> None: ...


class ApiResource(Resource):
    """Dispatches every request under it to the matching `Route`."""

    isLeaf = True

    def __init__(
        self,
        routes: Sequence[Route],
        authenticate: Authenticator,
        observer: Observer | None = None,
        metrics: RequestMetrics | None = None,
    ) -> None:
        Resource.__init__(self)
        self.routes = list(routes)
        self._authenticate = authenticate
        self._observer = observer
        self._metrics = metrics

    def render(self, request: Request) -> Any:
        d = Deferred.fromCoroutine(self._handle(request))
        d.addErrback(lambda f: log.failure("Failed to write a response", f))
        return NOT_DONE_YET

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[Route]]:
        allowed = []
        for route in self.routes:
            m = route.pattern.match(path)
            if m:
                if route.method == method:
                    return route, {k: unquote(v) for k, v in m.groupdict().items()}, []
                allowed.append(route)
        return None, {}, allowed

    async def _handle(self, request: Request) -> None:
        started = 0.0 if self._metrics is None else self._metrics.clock.seconds()
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        method = request.method.decode("ascii", "replace").upper()
        path = request.path.decode("utf-8", "replace")
        route: Route | None = None
        shaped: Route | None = None
        try:
            route, params, allowed = self._match(method if method != "HEAD" else "GET", path)
            if route is None:
                if allowed:
                    # Answered in the shape of the path's routes (a peer-compatible path keeps its peer's).
                    shaped = allowed[0]
                    raise errors.MethodNotAllowed(
                        f"{method} is not allowed on {path}", headers={"Allow": ", ".join(sorted({r.method for r in allowed}))}
                    )
                raise errors.NotFound(f"no such resource: {path}")
            token = await self._check_auth(route, request)
            body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
            if len(body) > MAX_BODY:
                raise errors.PayloadTooLarge(f"body larger than {MAX_BODY} bytes")
            query = {
                k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                for k, vs in (request.args or {}).items()
            }
            if any("\x00" in k or any("\x00" in v for v in vs) for k, vs in query.items()):
                raise errors.BadRequest("query parameters must not contain NUL")
            # PostgreSQL text cannot hold NUL, and no name or id we issue has one.
            for name, value in params.items():
                if "\x00" in value:
                    raise errors.BadRequest(f"path parameter {name!r} must not contain NUL", details={name: "must not contain NUL"})
            api_request = ApiRequest(
                method=method,
                path=path,
                params=params,
                query=query,
                headers={
                    name.decode("latin-1").lower(): values[-1].decode("latin-1")
                    for name, values in request.requestHeaders.getAllRawHeaders()
                },
                raw_body=body,
                token=token,
            )
            result = await route.handler(api_request)
            if isinstance(result, Stream):
                await self._stream(request, route, result, started)
                return
            response = result if isinstance(result, Response) else Response(result)
        except DatabaseUnavailable as e:
            # An outage, not a bug: one line in the log, and a 503 the client can retry.
            log.warn("Database unavailable serving {method} {path}: {error}", method=method, path=path, error=str(e))
            response = self._error_response(
                route, errors.ServiceUnavailable("the region database is unavailable; try again shortly",
                                                 headers={"Retry-After": str(DATABASE_RETRY_AFTER)})
            )
        except errors.ApiError as e:
            response = self._error_response(route if route is not None else shaped, e)
        except Exception:
            reference = f"{_HOST}:{os.getpid()}:{id(request):x}"
            log.failure("Unhandled error serving {method} {path}, reference {reference}", Failure(), method=method, path=path, reference=reference)
            message = f"internal error, reference {reference}"
            response = Response(
                {"error": {"code": "internal_error", "message": message, "details": {}}}
                if route is None or route.error_body is None
                else route.error_body(500, message, {}),
                500,
            )
        if self._observer is not None:
            self._observer(route, route.method if route is not None else method, response.status)
        if self._metrics is not None:
            self._metrics.observe(
                route.template if route is not None else None, method, response.status, self._metrics.clock.seconds() - started
            )
        if finished[0]:
            return
        request.setResponseCode(response.status)
        content_type = response.content_type or "application/json"
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in response.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if response.body is not None and method != "HEAD":
            if response.content_type is not None:
                request.write(response.body)
            else:
                request.write(json.dumps(response.body, separators=(",", ":")).encode("utf-8"))
        request.finish()

    @staticmethod
    def _error_response(shape: Route | None, e: errors.ApiError) -> Response:
        """`e` as a response, in `shape`'s error body if it has its own (a peer-compatible route)."""
        body = e.body() if shape is None or shape.error_body is None else shape.error_body(e.status, e.message, e.details)
        return Response(body, e.status, e.headers)

    async def _stream(self, request: Request, route: Route, stream: Stream, started: float) -> None:
        if self._observer is not None:
            self._observer(route, route.method, 200)
        if self._metrics is not None:
            # Time to the start of the stream: a stream's whole life is not a latency.
            self._metrics.observe(route.template, route.method, 200, self._metrics.clock.seconds() - started)
        gone: Deferred[None] = Deferred()

        def finished(_: object) -> None:
            if not gone.called:
                gone.callback(None)

        request.notifyFinish().addBoth(finished)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", stream.content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in stream.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        writer = StreamWriter(request, gone)
        try:
            await stream.run(writer)
        except Exception:
            log.failure("Stream {path} failed", Failure(), path=route.template)
        if not writer.closed:
            gone.callback(None)
            request.finish()

    async def _check_auth(self, route: Route, request: Request) -> dict[str, Any] | None:
        if route.role is None:
            return None
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthorized("send an API token: Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
        found = await self._authenticate(token.strip())
        if found is None:
            raise errors.Unauthorized("unknown or revoked token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if route.role == ADMIN and found["role"] != ADMIN:
            raise errors.Forbidden(f"this needs an admin token; this token's role is {found['role']}")
        return found


@overload
def parse_query(request: ApiRequest, name: str, convert: Callable[[str], _T]) -> _T | None: ...
@overload
def parse_query(request: ApiRequest, name: str, convert: Callable[[str], _T], default: _D) -> _T | _D: ...
def parse_query(request: ApiRequest, name: str, convert: Callable[[str], Any], default: Any = None) -> Any:
    """A converted query parameter, or a 400 naming it."""
    value = request.arg(name)
    if value is None:
        return default
    try:
        return convert(value)
    except ValueError as e:
        raise errors.BadRequest(f"invalid query parameter {name}", details={name: str(e)}) from None

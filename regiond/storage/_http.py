"""
Calling an upstream JSON API over treq: one overall timeout per attempt,
retries with backoff on the injected clock, bounded bodies.

Retried: connection failures, timeouts, 429 and 502/503/504 — the failures
a second try can fix.  Anything else comes back to the caller as it is.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import attrs
import treq
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError, TimeoutError as TxTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.client import HTTPConnectionPool

from outpost import jsonstrict
from outpost.metrics import observe_external
from regiond.storage.errors import UpstreamError, UpstreamTimeout

__all__ = ["HTTPClient", "Upstream", "Answer", "make_http_client", "MAX_BODY", "RETRY_STATUSES"]

log = Logger()

#: The largest upstream body read (a page of 300 Waldur resources is about 0.5 MB).
MAX_BODY = 64 * 1024 * 1024
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_NETWORK_ERRORS = (
    ConnectError,
    DNSLookupError,
    ConnectionClosed,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    TxTimeoutError,
)


class HTTPClient(Protocol):
    """What we need of treq: ``treq`` itself, a ``treq.client.HTTPClient`` or a ``treq.testing.StubTreq``."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


def make_http_client(reactor: Any, persistent_per_host: int = 8) -> tuple[Any, HTTPConnectionPool]:
    """A treq client on `reactor` with its own pool (treq's default keeps only 2 connections a host)."""
    from treq.client import HTTPClient as TreqClient
    from twisted.web.client import Agent

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = persistent_per_host
    pool.retryAutomatically = False  # we retry, on our own clock
    return TreqClient(Agent(reactor, pool=pool)), pool


class _TooLarge(Exception):
    pass


def _timed_out(result: Any, timeout: float) -> Failure:
    return Failure(defer.TimeoutError(f"no answer within {timeout}s"))


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]  #: lower-case names, last value
    body: bytes

    def json(self) -> Any:
        return jsonstrict.loads(self.body)


async def _read(response: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_BODY:
            raise _TooLarge()
        chunks.append(data)

    await treq.collect(response, collect)
    return b"".join(chunks)


@attrs.define
class Upstream:
    """One upstream service: its name in messages, its error types, timeout and retry policy."""

    reactor: IReactorTime
    http: HTTPClient
    name: str
    timeout: float
    retries: int
    error: type[UpstreamError] = UpstreamError
    timeout_error: type[UpstreamTimeout] = UpstreamTimeout
    #: Seconds to wait before retry 1, 2, ... (the last repeats).
    backoff: Sequence[float] = (0.25, 1.0, 2.0)
    #: Counts every call (retries included) as ``service``/operation/outcome; None records nothing.
    metrics: Any = attrs.field(default=None, kw_only=True, repr=False)
    #: This upstream's ``service`` label in `metrics` (e.g. ``waldur``).
    service: str = attrs.field(default="", kw_only=True)

    async def _once(self, method: str, url: str, kwargs: dict[str, Any]) -> Answer:
        response = await self.http.request(method, url, **kwargs)
        body = await _read(response)
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return Answer(response.code, headers, body)

    async def call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Sequence[tuple[str, str]] | None = None,
        data: Mapping[str, str] | None = None,
        operation: str = "",
    ) -> Answer:
        """
        The answer to `method` `url`, retried as the policy says; raises
        `error` (unreachable, or still failing after the retries) or
        `timeout_error`.  An HTTP error status that is not retried is an
        answer, not an exception.  Recorded under `operation` (default: the method).
        """
        return await observe_external(
            self.metrics, self.reactor, self.service or self.name, operation or method, UpstreamError,
            self._call(method, url, headers=headers, params=params, data=data),
        )

    async def _call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Sequence[tuple[str, str]] | None,
        data: Mapping[str, str] | None,
    ) -> Answer:
        kwargs: dict[str, Any] = {"headers": dict(headers)}
        if params:
            kwargs["params"] = list(params)
        if data is not None:
            kwargs["data"] = dict(data)
        attempt = 0
        while True:
            attempt += 1
            try:
                d = Deferred.fromCoroutine(self._once(method, url, kwargs))
                # Cancelling an HTTP request can surface as ResponseNeverReceived, not
                # CancelledError: whatever the timeout's cancel leaves is a timeout.
                d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=_timed_out)
                answer = await d
            except (defer.TimeoutError, CancelledError):
                failure: UpstreamError = self.timeout_error.after(self.name, method, url, self.timeout)
            except _NETWORK_ERRORS as e:
                failure = self.error.unreachable(self.name, method, url, type(e).__name__)
            except _TooLarge:
                raise self.error.bad_body(self.name, method, url, f"body larger than {MAX_BODY} bytes") from None
            else:
                if answer.status not in RETRY_STATUSES:
                    return answer
                failure = self.error.from_status(self.name, method, url, answer.status)
            if attempt > self.retries:
                raise failure
            delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)] if self.backoff else 0.0
            log.info(
                "{name}: {reason}; retry {attempt} of {retries} in {delay}s",
                name=self.name, reason=str(failure), attempt=attempt, retries=self.retries, delay=delay,
            )
            await deferLater(self.reactor, delay, lambda: None)

    async def get_json(
        self, url: str, *, headers: Mapping[str, str], params: Sequence[tuple[str, str]] | None = None, operation: str = ""
    ) -> tuple[Answer, Any]:
        """GET `url`; the answer and its body as JSON when the status is 200 (else None)."""
        answer = await self.call("GET", url, headers=headers, params=params, operation=operation)
        if answer.status != 200:
            return answer, None
        try:
            return answer, answer.json()
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise self.error.bad_body(self.name, "GET", url, f"not JSON ({type(e).__name__})") from None

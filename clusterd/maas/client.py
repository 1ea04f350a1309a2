"""
An asynchronous MAAS REST API 2.0 client on treq.

* OAuth 1.0 PLAINTEXT on every call but `version()` (see `oauth`).
* POST bodies are ``multipart/form-data``; ``op`` is always in the query
  string, as MAAS expects.
* Each try has its own timeout.  Connection failures and 429/502/503/504 are
  retried with jittered exponential backoff (`RetryPolicy`), honouring
  Retry-After.
* GET (and PUT) are retried freely.  A POST whose outcome is unknown (the
  request went out, then a timeout, a lost connection, or a 502/504 from a
  proxy) is never blindly sent again: the machine is re-read, and the call
  succeeds with that machine if it already shows the effect (deploy →
  Deploying/Deployed, …); otherwise the POST is sent once more; otherwise
  the error is raised.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import secrets
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web import _newclient
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from clusterd.maas.errors import MAASError, MAASUnavailable, error_for_status
from clusterd.maas.interfaces import IMAASClient
from clusterd.maas.oauth import Credentials, authorization_header
from outpost.metrics import ExternalCallMetrics, observe_external
from clusterd.maas.retry import RETRY_STATUSES, UNKNOWN_OUTCOME_STATUSES, RetryPolicy, parse_retry_after

__all__ = ["MAASClient", "api_root", "MAX_PERSISTENT_PER_HOST", "encode_multipart"]

log = Logger()

MAX_PERSISTENT_PER_HOST = 10
POWER_STATES = ("on", "off", "unknown", "error")
STOP_MODES = ("hard", "soft")

# MAAS status codes a re-read is checked against when a POST's outcome is unknown.
_DEPLOYING, _DEPLOYED = 9, 6
_COMMISSIONING, _TESTING = 1, 21
_READY, _RELEASING, _DISK_ERASING = 4, 12, 14

#: Failures that prove the request never left: always safe to send again.
_NOT_SENT = (ierror.ConnectError, ierror.DNSLookupError, _newclient.RequestNotSent)


def api_root(url: str) -> str:
    """The API 2.0 root under a MAAS URL (``http://maas:5240/MAAS/`` → ``…/MAAS/api/2.0/``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"MAAS URL must be http:// or https:// with a host, not {url!r}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if not path.rstrip("/").endswith("/api/2.0"):
        path += "api/2.0/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


#: Bodies larger than this are decoded with the cyclic GC paused (see `decode_json`).
LARGE_BODY = 1 << 20


def decode_json(content: bytes) -> Any:
    """
    Decode a JSON answer.  JSON cannot hold cycles, so for big answers (a
    list of 10,000 machines is ~60 MB) the cyclic GC is paused while decoding:
    otherwise it runs repeatedly over the millions of new objects and
    triples the time.
    """
    if len(content) < LARGE_BODY:
        return json.loads(content)
    paused = gc.isenabled()
    gc.disable()
    try:
        return json.loads(content)
    finally:
        if paused:
            gc.enable()


def encode_multipart(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text `fields`, and its Content-Type."""
    boundary = secrets.token_hex(16)
    if not fields:
        # One empty part, as python-libmaas sends: a body with no part at all is
        # not a valid multipart body to every parser (Twisted's refuses it).
        return f"--{boundary}\r\n\r\n\r\n--{boundary}--\r\n".encode("ascii"), f"multipart/form-data; boundary={boundary}"
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode("ascii")
        out += value.encode("utf-8") + b"\r\n"
    out += f"--{boundary}--\r\n".encode("ascii")
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _as_list(name: str, value: str | Iterable[str]) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    for item in values:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{name} filter values must be non-empty strings, not {item!r}")
    return values


def _flag(value: bool) -> str:
    return "true" if value else "false"


class _OutcomeUnknown(Exception):
    """The request may have reached MAAS; `error` is what to raise if that cannot be settled."""

    def __init__(self, error: MAASError) -> None:
        super().__init__(str(error))
        self.error = error


@implementer(IMAASClient)
@attrs.define(eq=False)
class MAASClient:
    """
    A MAAS 2.0 client.  `url` is MAAS's URL (``http://host:5240/MAAS/``);
    `api_key` is ``consumer:token:secret`` and never appears in repr,
    messages or logs.  `http` is for tests (a `treq.testing.StubTreq`);
    by default a treq `HTTPClient` over `pool` (or a persistent pool of our
    own allowing `MAX_PERSISTENT_PER_HOST` connections).
    """

    reactor: Any = attrs.field(repr=False)
    url: str
    api_key: str = attrs.field(repr=False)
    timeout: float = attrs.field(default=30.0, kw_only=True)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, kw_only=True)
    pool: HTTPConnectionPool | None = attrs.field(default=None, kw_only=True, repr=False)
    rng: Callable[[], float] = attrs.field(default=random.random, kw_only=True, repr=False)
    http: Any = attrs.field(default=None, kw_only=True, repr=False)
    #: Counts calls (retries included in one) by operation and outcome; None counts nothing.
    metrics: ExternalCallMetrics | None = attrs.field(default=None, kw_only=True, repr=False)
    _root: str = attrs.field(init=False, repr=False)
    _credentials: Credentials = attrs.field(init=False, repr=False)
    _own_pool: HTTPConnectionPool | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be above 0, not {self.timeout!r}")
        self._root = api_root(self.url)
        self._credentials = Credentials.parse(self.api_key)
        if self.http is None:
            if self.pool is None:
                self.pool = self._own_pool = HTTPConnectionPool(self.reactor, persistent=True)
                self.pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            self.http = HTTPClient(Agent(self.reactor, connectTimeout=self.timeout, pool=self.pool))

    # -- public API ----------------------------------------------------------

    async def version(self) -> dict[str, Any]:
        return await self._object("GET", "version/", anonymous=True)

    async def whoami(self) -> dict[str, Any]:
        return await self._object("GET", "users/", op="whoami")

    async def list_machines(
        self,
        *,
        hostname: str | Iterable[str] = (),
        status: str | Iterable[str] = (),
        zone: str | Iterable[str] = (),
        pool: str | Iterable[str] = (),
        tags: str | Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        query: list[tuple[str, str]] = []
        for name, value in (("hostname", hostname), ("status", status), ("zone", zone), ("pool", pool), ("tags", tags)):
            query.extend((name, item) for item in _as_list(name, value))
        return await self._objects("GET", "machines/", query=query)

    async def get_machine(self, system_id: str) -> dict[str, Any]:
        return await self._object("GET", self._machine(system_id))

    async def commission(
        self,
        system_id: str,
        *,
        enable_ssh: bool = False,
        skip_networking: bool = False,
        skip_storage: bool = False,
        testing_scripts: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        fields = [
            ("enable_ssh", "1" if enable_ssh else "0"),
            ("skip_networking", "1" if skip_networking else "0"),
            ("skip_storage", "1" if skip_storage else "0"),
        ]
        if testing_scripts is not None:
            names = [testing_scripts] if isinstance(testing_scripts, str) else list(testing_scripts)
            fields.append(("testing_scripts", ",".join(names) if names else "none"))
        return await self._post(system_id, "commission", fields, lambda m: m.get("status") in (_COMMISSIONING, _TESTING))

    async def deploy(
        self,
        system_id: str,
        *,
        distro_series: str | None = None,
        hwe_kernel: str | None = None,
        user_data: bytes | None = None,
        hostname: str | None = None,
    ) -> dict[str, Any]:
        """
        Deploy (MAAS allocates a Ready machine to us first).  MAAS's deploy
        has no hostname parameter, so a `hostname` is set beforehand with an
        update (``PUT machines/{id}/``).
        """
        if user_data is not None and not isinstance(user_data, (bytes, bytearray)):
            raise TypeError("user_data must be bytes (it is sent base64-encoded)")
        if hostname is not None:
            await self._call("PUT", self._machine(system_id), fields=[("hostname", hostname)])
        fields = []
        if distro_series is not None:
            fields.append(("distro_series", distro_series))
        if hwe_kernel is not None:
            fields.append(("hwe_kernel", hwe_kernel))
        if user_data is not None:
            fields.append(("user_data", base64.b64encode(bytes(user_data)).decode("ascii")))
        return await self._post(system_id, "deploy", fields, lambda m: m.get("status") in (_DEPLOYING, _DEPLOYED))

    async def release(
        self, system_id: str, *, erase: bool = False, secure_erase: bool = False, quick_erase: bool = False
    ) -> dict[str, Any]:
        fields = [("erase", _flag(erase)), ("secure_erase", _flag(secure_erase)), ("quick_erase", _flag(quick_erase))]
        return await self._post(
            system_id, "release", fields, lambda m: m.get("status") in (_RELEASING, _DISK_ERASING, _READY)
        )

    async def power_on(self, system_id: str) -> dict[str, Any]:
        return await self._post(system_id, "power_on", [], lambda m: m.get("power_state") == "on")

    async def power_off(self, system_id: str, *, stop_mode: str = "hard") -> dict[str, Any]:
        if stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be 'hard' or 'soft', not {stop_mode!r}")
        return await self._post(system_id, "power_off", [("stop_mode", stop_mode)], lambda m: m.get("power_state") == "off")

    async def query_power_state(self, system_id: str) -> str:
        answer = await self._call("GET", self._machine(system_id), op="query_power_state")
        state = answer.get("state") if isinstance(answer, dict) else None
        if not isinstance(state, str) or state not in POWER_STATES:
            raise MAASError(f"GET machines/{system_id}/?op=query_power_state: unexpected answer {answer!r:.80}")
        return state

    async def subnets(self) -> list[dict[str, Any]]:
        return await self._objects("GET", "subnets/")

    async def fabrics(self) -> list[dict[str, Any]]:
        return await self._objects("GET", "fabrics/")

    async def vlans(self, fabric_id: int | str) -> list[dict[str, Any]]:
        return await self._objects("GET", f"fabrics/{quote(str(fabric_id), safe='')}/vlans/")

    async def spaces(self) -> list[dict[str, Any]]:
        return await self._objects("GET", "spaces/")

    async def zones(self) -> list[dict[str, Any]]:
        return await self._objects("GET", "zones/")

    async def resource_pools(self) -> list[dict[str, Any]]:
        return await self._objects("GET", "resourcepools/")

    async def close(self) -> None:
        if self._own_pool is not None:
            pool, self._own_pool = self._own_pool, None
            await pool.closeCachedConnections()

    # -- machinery -----------------------------------------------------------

    @staticmethod
    def _machine(system_id: str) -> str:
        if not isinstance(system_id, str) or not system_id:
            raise ValueError(f"system_id must be a non-empty string, not {system_id!r}")
        return f"machines/{quote(system_id, safe='')}/"

    async def _post(
        self, system_id: str, op: str, fields: list[tuple[str, str]], done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        path = self._machine(system_id)
        answer = await self._call("POST", path, op=op, fields=fields, settle=(system_id, done))
        if answer is None:
            # MAAS answers null when it sent no power command (a manual power type).
            return await self.get_machine(system_id)
        if not isinstance(answer, dict):
            raise MAASError(f"POST {path}?op={op}: MAAS answered {type(answer).__name__}, not a machine")
        return answer

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = await self._call(method, path, **kwargs)
        if not isinstance(answer, dict):
            raise MAASError(f"{method} {path}: MAAS answered {type(answer).__name__}, not an object")
        return answer

    async def _objects(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        answer = await self._call(method, path, **kwargs)
        if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
            raise MAASError(f"{method} {path}: MAAS answered {type(answer).__name__}, not a list of objects")
        return answer

    def _headers(self, anonymous: bool) -> dict[bytes, list[bytes]]:
        headers = {b"Accept": [b"application/json"], b"User-Agent": [b"outpost-clusterd"]}
        if not anonymous:
            value = authorization_header(
                self._credentials, nonce=secrets.token_hex(12), timestamp=int(self.reactor.seconds())
            )
            headers[b"Authorization"] = [value.encode("ascii")]
        return headers

    async def _call(self, method: str, path: str, *, op: str | None = None, **kwargs: Any) -> Any:
        if self.metrics is None:
            return await self._call_retrying(method, path, op=op, **kwargs)
        return await observe_external(
            self.metrics, self.reactor, "maas", _operation(method, path, op), MAASUnavailable,
            self._call_retrying(method, path, op=op, **kwargs),
        )

    async def _call_retrying(
        self,
        method: str,
        path: str,
        *,
        op: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        fields: list[tuple[str, str]] | None = None,
        anonymous: bool = False,
        settle: tuple[str, Callable[[dict[str, Any]], bool]] | None = None,
    ) -> Any:
        params = ([("op", op)] if op else []) + list(query)
        url = self._root + path + ("?" + urlencode(params) if params else "")
        call = f"{method} {path}" + (f"?op={op}" if op else "")
        failures = 0
        resent = False
        while True:
            try:
                return await self._try(method, url, call, fields, anonymous)
            except _Retry as retry:
                failures += 1
                if failures >= self.retry.attempts:
                    raise retry.error from None
                delay = self.retry.delay(failures, self.rng, retry.retry_after)
                log.debug("{call} failed ({error}); retrying in {delay:.2f}s", call=call, error=retry.error.message, delay=delay)
                await deferLater(self.reactor, delay, lambda: None)
            except _OutcomeUnknown as unknown:
                if method in ("GET", "PUT"):
                    failures += 1
                    if failures >= self.retry.attempts:
                        raise unknown.error from None
                    await deferLater(self.reactor, self.retry.delay(failures, self.rng), lambda: None)
                    continue
                if settle is None:
                    raise unknown.error from None
                machine = await self._settle(call, settle, unknown.error)
                if machine is not None:
                    return machine
                if resent:
                    raise unknown.error from None
                resent = True
                log.info("{call}: outcome unknown and not visible on the machine; sending it once more", call=call)

    async def _settle(
        self, call: str, settle: tuple[str, Callable[[dict[str, Any]], bool]], error: MAASError
    ) -> dict[str, Any] | None:
        """The machine if it already shows `call`'s effect; None if not; raises `error` if it cannot be read."""
        system_id, done = settle
        try:
            machine = await self.get_machine(system_id)
        except MAASError:
            raise error from None
        if done(machine):
            log.info("{call}: outcome was unknown; the machine shows it took effect", call=call)
            return machine
        return None

    async def _try(
        self, method: str, url: str, call: str, fields: list[tuple[str, str]] | None, anonymous: bool
    ) -> Any:
        headers = self._headers(anonymous)
        body: bytes | None = None
        if method in ("POST", "PUT"):
            body, content_type = encode_multipart(fields or [])
            headers[b"Content-Type"] = [content_type.encode("ascii")]
        d = Deferred.fromCoroutine(self._exchange(method, url, headers, body))
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.reactor.callLater(self.timeout, time_out)
        try:
            status, response_headers, content = await d
        except Exception as e:
            if not timed_out and _cancelled(e):
                raise CancelledError() from None  # our caller gave up; not a failure of MAAS
            if isinstance(e, _NOT_SENT) or isinstance(e, ierror.ConnectingCancelledError):
                raise _Retry(MAASUnavailable.timed_out(call, self.timeout) if timed_out else MAASUnavailable.from_failure(call, e)) from None
            if timed_out:
                raise _OutcomeUnknown(MAASUnavailable.timed_out(call, self.timeout)) from None
            raise _OutcomeUnknown(MAASUnavailable.from_failure(call, e)) from None
        finally:
            if timer.active():
                timer.cancel()
        if 200 <= status < 300:
            try:
                return decode_json(content) if content.strip() else None
            except ValueError:
                raise MAASError(f"{call}: MAAS answered {status} with a body that is not JSON", status=status) from None
        error = error_for_status(status, call, content)
        if status in RETRY_STATUSES:
            if method == "POST" and status in UNKNOWN_OUTCOME_STATUSES:
                raise _OutcomeUnknown(error)
            raise _Retry(error, parse_retry_after(response_headers.getRawHeaders(b"retry-after", [None])[0]))
        raise error

    async def _exchange(
        self, method: str, url: str, headers: dict[bytes, list[bytes]], body: bytes | None
    ) -> tuple[int, Any, bytes]:
        response = await self.http.request(method, url, headers=headers, data=body)
        content = await treq.content(response)
        return response.code, response.headers, content


def _operation(method: str, path: str, op: str | None) -> str:
    """A metrics label for a call: ids in the path become ``{id}`` (``POST machines/{id}/?op=deploy``)."""
    parts = path.strip("/").split("/")
    template = "/".join(part if i % 2 == 0 else "{id}" for i, part in enumerate(parts))
    return f"{method} {template}/" + (f"?op={op}" if op else "")


def _cancelled(error: BaseException) -> bool:
    """Whether `error` is what a cancelled request fails with (Agent wraps the CancelledError)."""
    if isinstance(error, (CancelledError, ierror.ConnectingCancelledError)):
        return True
    reasons = getattr(error, "reasons", None) or []
    return any(reason.check(CancelledError) for reason in reasons)


class _Retry(Exception):
    """The call may be sent again; `error` is raised when the tries run out."""

    def __init__(self, error: MAASError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after

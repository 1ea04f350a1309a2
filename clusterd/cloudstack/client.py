"""
An asynchronous CloudStack API client on treq.

* Every call is signed (signature version 3 with an ``expires``
  `expiration` seconds ahead of the wall clock; see `signing`).  Reads go as
  GET with a query string; commands that change something go as POST with a
  form body, which CloudStack accepts too.  That is not style: Twisted's
  connection pool silently re-sends a GET (an idempotent method) once when a
  reused connection dies before the answer, which would create a volume twice.
* The answer's single top-level key (``listvolumesresponse``, …) is
  unwrapped; list answers (``{"count": N, "volume": […]}`` or ``{}``) become
  lists, fetched page by page (`page_size` a page) until a short page.
* Errors become typed exceptions (`errors.error_for_answer`).
* Each try has its own timeout.  Idempotent commands (``list*``,
  ``queryAsyncJobResult``) are retried on connection failures, timeouts and
  429/502/503/504 with jittered backoff (`RetryPolicy`).  Commands that change
  something (create/attach/detach/delete/tags) are sent again only when the
  request provably never left (the connection could not be made); any other
  failure is raised, because CloudStack may have acted.
* ``createVolume``, ``attachVolume``, ``detachVolume``, ``createTags`` and
  ``deleteTags`` start async jobs; their methods poll ``queryAsyncJobResult``
  (`PollPolicy` backoff) until the job ends or `job_timeout` passes.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, urlencode, urlsplit

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web import _newclient
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from clusterd.cloudstack.errors import (
    CloudStackError,
    CloudStackJobFailed,
    CloudStackJobTimeout,
    CloudStackNotFound,
    CloudStackUnavailable,
    error_for_answer,
)
from clusterd.cloudstack.interfaces import ICloudStackClient
from clusterd.cloudstack.retry import RETRY_STATUSES, PollPolicy, RetryPolicy
from clusterd.cloudstack.signing import flatten, format_expires, sign
from outpost.metrics import ExternalCallMetrics, observe_external

__all__ = ["CloudStackClient", "MAX_PERSISTENT_PER_HOST", "PAGE_SIZE", "is_idempotent", "unwrap"]

log = Logger()

#: Requests in flight at once from one client.  A job's disks are all
#: handled at once, and without a cap a burst opened a new connection per
#: request (overflowing the server's listen queue: each dropped SYN stalls a
#: request ~1 s); with it, bursts queue here and reuse kept connections.
MAX_IN_FLIGHT = 16
MAX_PERSISTENT_PER_HOST = MAX_IN_FLIGHT
PAGE_SIZE = 500
GIB = 1024**3

#: Failures that prove the request never left: always safe to send again.
_NOT_SENT = (ierror.ConnectError, ierror.DNSLookupError, _newclient.RequestNotSent)
#: jobstatus values of queryAsyncJobResult.
PENDING, SUCCEEDED, FAILED = 0, 1, 2


def is_idempotent(command: str) -> bool:
    """Whether `command` only reads, so that sending it twice is harmless."""
    return command.startswith(("list", "queryAsyncJobResult", "get"))


def unwrap(call: str, data: Any) -> Any:
    """The value under a CloudStack answer's single top-level key."""
    if not isinstance(data, dict) or len(data) != 1:
        raise CloudStackError(f"{call}: CloudStack's answer does not have a single top-level key")
    return next(iter(data.values()))


def _check_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def _tag_list(tags: Mapping[str, str | None]) -> list[dict[str, str]]:
    out = []
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"tag keys must be non-empty strings, not {key!r}")
        out.append({"key": key} if value is None else {"key": key, "value": str(value)})
    return out


@implementer(ICloudStackClient)
@attrs.define(eq=False)
class CloudStackClient:
    """
    A CloudStack client.  `url` is the API URL (``http://host:8080/client/api``);
    `api_key` and `secret_key` never appear in repr, messages or logs.
    `http` is for tests (e.g. a `treq.testing.StubTreq`); by default a treq
    `HTTPClient` over `pool` (or a persistent pool of our own allowing
    `MAX_PERSISTENT_PER_HOST` connections).  `wall_clock` dates ``expires``:
    it is compared with CloudStack's wall clock, not timed on `reactor`.
    """

    reactor: Any = attrs.field(repr=False)
    url: str
    api_key: str = attrs.field(repr=False)
    secret_key: str = attrs.field(repr=False)
    timeout: float = attrs.field(default=30.0, kw_only=True)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, kw_only=True)
    job_timeout: float = attrs.field(default=600.0, kw_only=True)
    poll: PollPolicy = attrs.field(factory=PollPolicy, kw_only=True)
    pool: HTTPConnectionPool | None = attrs.field(default=None, kw_only=True, repr=False)
    http: Any = attrs.field(default=None, kw_only=True, repr=False)
    page_size: int = attrs.field(default=PAGE_SIZE, kw_only=True)
    expiration: float = attrs.field(default=600.0, kw_only=True)
    rng: Callable[[], float] = attrs.field(default=random.random, kw_only=True, repr=False)
    wall_clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)
    #: Counts calls (retries included in one) by command and outcome; None counts nothing.
    metrics: ExternalCallMetrics | None = attrs.field(default=None, kw_only=True, repr=False)
    _own_pool: HTTPConnectionPool | None = attrs.field(init=False, default=None, repr=False)
    _in_flight: DeferredSemaphore = attrs.field(init=False, factory=lambda: DeferredSemaphore(MAX_IN_FLIGHT), repr=False)

    def __attrs_post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"CloudStack URL must be http:// or https:// with a host, not {self.url!r}")
        for name in ("timeout", "job_timeout", "expiration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, not {getattr(self, name)!r}")
        if not self.api_key or not self.secret_key:
            raise ValueError("api_key and secret_key must not be empty")
        if self.page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {self.page_size!r}")
        if self.http is None:
            if self.pool is None:
                self.pool = self._own_pool = HTTPConnectionPool(self.reactor, persistent=True)
                self.pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            self.http = HTTPClient(Agent(self.reactor, connectTimeout=self.timeout, pool=self.pool))

    # -- public API ----------------------------------------------------------

    async def list_capabilities(self) -> dict[str, Any]:
        """CloudStack's capabilities: a cheap signed call for connection tests."""
        answer = await self.call("listCapabilities")
        return answer.get("capability", answer) if isinstance(answer, dict) else {}

    async def list_zones(self) -> list[dict[str, Any]]:
        return await self.list_all("listZones", "zone")

    async def get_zone(self, zone_id: str) -> dict[str, Any]:
        return await self._one("listZones", "zone", _check_id("zone_id", zone_id))

    async def list_virtual_machines(self, id: str | None = None) -> list[dict[str, Any]]:  # noqa: A002
        return await self.list_all("listVirtualMachines", "virtualmachine", id=id, listall=True)

    async def list_disk_offerings(self) -> list[dict[str, Any]]:
        return await self.list_all("listDiskOfferings", "diskoffering")

    async def list_volumes(self, *, tags: Mapping[str, str] | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Volumes; `filters` are CloudStack's listVolumes parameters (id, name, zoneid, virtualmachineid, type, keyword…)."""
        return await self.list_all(
            "listVolumes", "volume", listall=True, tags=_tag_list(tags) if tags else None, **filters
        )

    async def get_volume(self, volume_id: str) -> dict[str, Any]:
        return await self._one("listVolumes", "volume", _check_id("volume_id", volume_id), listall=True)

    async def create_volume(
        self,
        name: str,
        zone_id: str,
        disk_offering_id: str | None = None,
        size_gb: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """
        Create a volume and wait for it.  createVolume takes no resource tags,
        so `tags` are added with createTags afterwards; if that fails the new
        volume is deleted again (best effort) and the tagging error raised.
        """
        _check_id("name", name)
        _check_id("zone_id", zone_id)
        if size_gb is not None and (isinstance(size_gb, bool) or not isinstance(size_gb, int) or size_gb < 1):
            raise ValueError(f"size_gb must be a whole number of at least 1, not {size_gb!r}")
        volume: dict[str, Any] = await self._job("createVolume", name=name, zoneid=zone_id, diskofferingid=disk_offering_id, size=size_gb)
        if not tags:
            return volume
        try:
            await self.create_tags([volume["id"]], "Volume", tags)
        except CloudStackError:
            try:
                await self.delete_volume(volume["id"])
            except CloudStackError as e:
                log.warn("Could not delete untagged volume {id} after tagging failed: {error}", id=volume["id"], error=e.message)
            raise
        return await self.get_volume(volume["id"])

    async def attach_volume(self, volume_id: str, vm_id: str, device_id: int | None = None) -> dict[str, Any]:
        """Attach and wait; without `device_id` CloudStack picks the next free device."""
        attached: dict[str, Any] = await self._job(
            "attachVolume", id=_check_id("volume_id", volume_id), virtualmachineid=_check_id("vm_id", vm_id), deviceid=device_id
        )
        return attached

    async def detach_volume(self, volume_id: str) -> dict[str, Any]:
        detached: dict[str, Any] = await self._job("detachVolume", id=_check_id("volume_id", volume_id))
        return detached

    async def delete_volume(self, volume_id: str) -> None:
        answer = await self.call("deleteVolume", id=_check_id("volume_id", volume_id))
        if not isinstance(answer, dict) or str(answer.get("success")).lower() != "true":
            raise CloudStackError(f"deleteVolume {volume_id}: CloudStack did not report success: {answer!r:.120}")

    async def create_tags(self, resource_ids: Iterable[str], resource_type: str, tags: Mapping[str, str]) -> None:
        if not tags:
            raise ValueError("give at least one tag")
        await self._job("createTags", resourceids=list(resource_ids), resourcetype=resource_type, tags=_tag_list(tags))

    async def delete_tags(
        self, resource_ids: Iterable[str], resource_type: str, tags: Mapping[str, str | None] | None = None
    ) -> None:
        await self._job(
            "deleteTags", resourceids=list(resource_ids), resourcetype=resource_type, tags=_tag_list(tags) if tags else None
        )

    async def list_tags(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.list_all("listTags", "tag", listall=True, **filters)

    async def close(self) -> None:
        if self._own_pool is not None:
            pool, self._own_pool = self._own_pool, None
            await pool.closeCachedConnections()

    # -- generic calls ---------------------------------------------------------

    async def call(self, command: str, **params: Any) -> Any:
        """Send `command` (signed) and return the unwrapped answer."""
        return await self._call(command, flatten(params))

    async def list_all(self, command: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """All items under `key` of a list command, page by page."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = await self.call(command, page=page, pagesize=self.page_size, **params)
            if not isinstance(answer, dict):
                raise CloudStackError(f"{command}: expected an object, CloudStack answered {type(answer).__name__}")
            found = answer.get(key, [])
            if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
                raise CloudStackError(f"{command}: {key!r} is not a list of objects")
            items.extend(found)
            if len(found) < self.page_size:
                return items
            page += 1

    async def wait_job(self, command: str, jobid: str) -> Any:
        """The result of async job `jobid` (started by `command`) once it has ended."""
        deadline = self.reactor.seconds() + self.job_timeout
        for delay in self.poll.delays():
            remaining = deadline - self.reactor.seconds()
            if remaining <= 0:
                raise CloudStackJobTimeout.after(command, jobid, self.job_timeout)
            await deferLater(self.reactor, min(delay, remaining), lambda: None)
            try:
                job = await self.call("queryAsyncJobResult", jobid=jobid)
            except CloudStackUnavailable as e:
                log.info("{command}: polling job {jobid} failed, still waiting: {error}", command=command, jobid=jobid, error=e.message)
                continue
            status = job.get("jobstatus") if isinstance(job, dict) else None
            if status == PENDING:
                continue
            if status == SUCCEEDED:
                return job.get("jobresult")
            if status == FAILED:
                raise CloudStackJobFailed.from_job(command, job)
            raise CloudStackError(f"{command}: job {jobid} has an unknown jobstatus {status!r}")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- machinery -----------------------------------------------------------

    async def _one(self, command: str, key: str, id: str, **params: Any) -> dict[str, Any]:  # noqa: A002
        found = await self.list_all(command, key, id=id, **params)
        if not found:
            raise CloudStackNotFound(f"{command}: no {key} with id {id}", status=None)
        return found[0]

    async def _job(self, command: str, **params: Any) -> Any:
        answer = await self.call(command, **params)
        jobid = answer.get("jobid") if isinstance(answer, dict) else None
        if not isinstance(jobid, str):
            raise CloudStackError(f"{command}: CloudStack answered without a jobid")
        result = await self.wait_job(command, jobid)
        if isinstance(result, dict) and len(result) == 1:
            (value,) = result.values()
            if isinstance(value, dict):
                return value  # {"volume": {...}} → the volume
        return result

    def _signed_query(self, command: str, params: Mapping[str, str]) -> str:
        signed = dict(params)
        signed.update(
            command=command,
            apiKey=self.api_key,
            response="json",
            signatureVersion="3",
            expires=format_expires(self.wall_clock() + self.expiration),
        )
        signed["signature"] = sign(signed, self.secret_key)
        return urlencode(signed, quote_via=quote, safe="")

    async def _call(self, command: str, params: Mapping[str, str]) -> Any:
        if self.metrics is None:
            return await self._call_retrying(command, params)
        return await observe_external(
            self.metrics, self.reactor, "cloudstack", command, CloudStackUnavailable, self._call_retrying(command, params)
        )

    async def _call_retrying(self, command: str, params: Mapping[str, str]) -> Any:
        idempotent = is_idempotent(command)
        failures = 0
        while True:
            try:
                return await self._try(command, params, idempotent)
            except _Retry as retry:
                failures += 1
                if failures >= self.retry.attempts:
                    raise retry.error from None
                delay = self.retry.delay(failures, self.rng)
                log.info("{command}: {error}; trying again in {delay:.2f}s", command=command, error=retry.error.message, delay=delay)
                await deferLater(self.reactor, delay, lambda: None)

    async def _try(self, command: str, params: Mapping[str, str], idempotent: bool) -> Any:
        query = self._signed_query(command, params)
        if idempotent:
            d = Deferred.fromCoroutine(self._exchange("GET", f"{self.url}?{query}", None))
        else:
            d = Deferred.fromCoroutine(self._exchange("POST", self.url, query.encode("ascii")))
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.reactor.callLater(self.timeout, time_out)
        try:
            status, content = await d
        except Exception as e:
            if not timed_out and _cancelled(e):
                raise CancelledError() from None  # our caller gave up; not a failure of CloudStack
            error: CloudStackError = CloudStackUnavailable.timed_out(command, self.timeout) if timed_out else CloudStackUnavailable.from_failure(command, e)
            if idempotent or isinstance(e, (_NOT_SENT, ierror.ConnectingCancelledError)):
                raise _Retry(error) from None
            raise error from None
        finally:
            if timer.active():
                timer.cancel()
        if status == 200:
            try:
                data = json.loads(content)
            except ValueError:
                raise CloudStackError(f"{command}: CloudStack answered 200 with a body that is not JSON", status=status) from None
            return unwrap(command, data)
        error = error_for_answer(status, command, content)
        if idempotent and status in RETRY_STATUSES and isinstance(error, CloudStackUnavailable):
            raise _Retry(error)
        raise error

    async def _exchange(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {b"Content-Type": [b"application/x-www-form-urlencoded"]} if body is not None else None
        await self._in_flight.acquire()
        try:
            response = await self.http.request(method, url, data=body, headers=headers)
            content = await treq.content(response)
        finally:
            self._in_flight.release()
        return response.code, content


def _cancelled(error: BaseException) -> bool:
    """Whether `error` is what a cancelled request fails with (Agent wraps the CancelledError)."""
    if isinstance(error, (CancelledError, ierror.ConnectingCancelledError)):
        return True
    reasons = getattr(error, "reasons", None) or []
    return any(reason.check(CancelledError) for reason in reasons)


class _Retry(Exception):
    """The call may be sent again; `error` is raised when the tries run out."""

    def __init__(self, error: CloudStackError) -> None:
        super().__init__(str(error))
        self.error = error

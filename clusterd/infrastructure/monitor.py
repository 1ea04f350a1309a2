"""
Watching accepted infrastructure requests until they end, and telling the
region how they ended (Ignition's InfrastructureTaskMonitoringService and
its messaging service, on Twisted).

Each accepted create or delete is polled with the driver's
``get_infrastructure_task``, first after `interval` seconds and then at
doubling intervals up to `max_interval`:

- IN_PROGRESS: poll again;
- `TemporaryInfrastructureError`, `UnreachableDeploymentLocation`: the
  location may come back, poll again;
- any other error (infrastructure or request not found, a general
  `InfrastructureError`, an unknown location type, a bug in the driver):
  the task ends FAILED with ``INTERNAL_ERROR`` and the error's message.
  Ignition forgets such a task; reporting it instead means nothing waits
  forever for an answer that will not come;
- COMPLETE or FAILED: the task ended.

An ended task becomes a `Completion` in the journal (one atomic write that
also drops the task) and is sent to a region process with
`rpc.region.ReportInfrastructureTask`.  Until a region answers (no
connection, a timeout, an error) it is sent again on the same backoff; once
one does, it is removed from the journal.  Delivery is at-least-once: the
region de-duplicates by request id.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Coroutine

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from clusterd.infrastructure.driver import (
    INTERNAL_ERROR,
    FAILED,
    FailureDetails,
    InfrastructureDriver,
    InfrastructureTask,
    TemporaryInfrastructureError,
    UnreachableDeploymentLocation,
)
from clusterd.infrastructure.journal import Completion, Journal, JournalError, Watched
from rpc.errors import InfrastructureError
from rpc.region import ReportInfrastructureTask

__all__ = ["TaskMonitor", "backoff"]

log = Logger()

#: Failed delivery attempts are logged at the first and then every this many.
_LOG_EVERY = 10


def backoff(interval: float, max_interval: float) -> Callable[[float], float]:
    """The next delay after `delay`: doubled, capped at `max_interval` (`interval` is the first)."""

    def following(delay: float) -> float:
        return min(max(delay, interval) * 2, max_interval)

    return following


def _written_later(failure: Failure) -> None:
    """A journal write failed: the journal logged it, and the change is in memory, written with the next one."""
    failure.trap(JournalError)


def _message(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, InfrastructureError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.define(eq=False)
class TaskMonitor:
    reactor: IReactorTime = attrs.field(repr=False)
    journal: Journal
    #: The driver for a location type (`DriverRegistry.driver`).
    driver_for: Callable[[str], InfrastructureDriver] = attrs.field(repr=False)
    #: A client for some live region connection; raises when there is none.
    region: Callable[[], Any] = attrs.field(repr=False)
    interval: float = 1.0
    max_interval: float = 30.0
    report_timeout: float = 30.0
    _polling: dict[str, Deferred[None]] = attrs.field(init=False, factory=dict, repr=False)
    _delivering: dict[str, Deferred[None]] = attrs.field(init=False, factory=dict, repr=False)
    _running: bool = attrs.field(init=False, default=False)
    _naps: set[Deferred[None]] = attrs.field(init=False, factory=set, repr=False)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Poll every task in the journal and send every completion it holds."""
        self._running = True
        for task in self.journal.watched:
            self.watch(task)
        for completion in self.journal.undelivered:
            self.deliver(completion)

    def stop(self) -> None:
        """Stop polling and sending; what is unfinished stays in the journal for the next start."""
        self._running = False
        for table in (self._polling, self._delivering):
            for loop in list(table.values()):
                loop.cancel()
            table.clear()

    @property
    def polling(self) -> frozenset[str]:
        """Request ids being polled now."""
        return frozenset(self._polling)

    @property
    def delivering(self) -> frozenset[str]:
        """Request ids whose completion is being sent now."""
        return frozenset(self._delivering)

    # -- polling -------------------------------------------------------------

    def watch(self, task: Watched) -> None:
        """Poll `task` (already in the journal) until it ends; nothing if it is polled already or we are stopped."""
        if self._running and task.request_id not in self._polling:
            self._spawn(self._polling, task.request_id, self._poll(task), "Monitoring")

    async def _poll(self, task: Watched) -> None:
        following = backoff(self.interval, self.max_interval)
        delay = self.interval
        while True:
            await deferLater(self.reactor, delay, lambda: None)
            ended = await self.check(task)
            if not self._running:
                # Stopped while the driver answered (a driver may turn the cancellation into an error of its own).
                raise CancelledError()
            if ended is not None:
                self._ended(task, ended)
                return
            delay = following(delay)

    def _ended(self, task: Watched, ended: InfrastructureTask) -> None:
        completion = Completion(task.request_id, task.infrastructure_id, task.operation, task.deployment_location, ended.to_event())
        log.info("Infrastructure {operation} {request} of {infrastructure} ended {status}", operation=task.operation,
                 request=task.request_id, infrastructure=task.infrastructure_id, status=ended.status)
        # Sent without waiting for the write: a crash before it lands leaves the
        # task watched in the file, so it is polled and reported again.
        self.journal.complete(completion).addErrback(_written_later)
        self.deliver(completion)

    async def check(self, task: Watched) -> InfrastructureTask | None:
        """Ask the driver once: the ended task, or None to poll again."""
        location = task.deployment_location
        try:
            driver = self.driver_for(location.get("type"))  # type: ignore[arg-type]
            got = await driver.get_infrastructure_task(task.infrastructure_id, task.request_id, location)
        except CancelledError:
            raise
        except (TemporaryInfrastructureError, UnreachableDeploymentLocation) as e:
            log.warn("Infrastructure request {request} of {infrastructure}: {error}; will ask again", request=task.request_id,
                     infrastructure=task.infrastructure_id, error=_message(e))
            return None
        except InfrastructureError as e:
            log.warn("Infrastructure request {request} of {infrastructure} failed: {error}", request=task.request_id,
                     infrastructure=task.infrastructure_id, error=_message(e))
            return self._failed(task, _message(e))
        except Exception as e:
            log.failure("Infrastructure request {request} of {infrastructure}: the driver failed", request=task.request_id,
                        infrastructure=task.infrastructure_id)
            return self._failed(task, _message(e))
        if not isinstance(got, InfrastructureTask):
            return self._failed(task, f"the driver answered {type(got).__name__}, not an InfrastructureTask")
        if not got.done:
            return None
        try:
            json.dumps(dict(got.outputs or {}), allow_nan=False)
        except (TypeError, ValueError) as e:
            return self._failed(task, f"the driver answered outputs that are not JSON: {e}")
        # The region matches reports by the ids it was given; keep those.
        return attrs.evolve(got, infrastructure_id=task.infrastructure_id, request_id=task.request_id)

    @staticmethod
    def _failed(task: Watched, description: str) -> InfrastructureTask:
        return InfrastructureTask(task.infrastructure_id, task.request_id, FAILED, FailureDetails(INTERNAL_ERROR, description))

    # -- delivery ------------------------------------------------------------

    def deliver(self, completion: Completion) -> None:
        """Send `completion` (already in the journal) until a region acknowledges it."""
        if self._running and completion.request_id not in self._delivering:
            self._spawn(self._delivering, completion.request_id, self._deliver(completion), "Reporting")

    async def _deliver(self, completion: Completion) -> None:
        following = backoff(self.interval, self.max_interval)
        delay = self.interval
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.send(completion)
            except CancelledError:
                raise
            except Exception as e:
                if attempt % _LOG_EVERY == 1:
                    log.warn("Could not report the end of infrastructure request {request} to the region (attempt {n}): "
                             "{error}; will try again", request=completion.request_id, n=attempt, error=_message(e))
            else:
                break
            await self._nap(delay)
            delay = following(delay)
        self.journal.acknowledge(completion.request_id).addErrback(_written_later)
        log.info("Region acknowledged the end of infrastructure request {request}", request=completion.request_id)

    def retry_now(self) -> None:
        """Try every waiting report again now (a region connection has just come up)."""
        for nap in list(self._naps):
            if not nap.called:
                nap.callback(None)

    async def _nap(self, delay: float) -> None:
        """Wait `delay` seconds, or less if `retry_now` is called."""
        nap: Deferred[None] = Deferred()

        def wake() -> None:
            if not nap.called:
                nap.callback(None)

        call = self.reactor.callLater(delay, wake)
        self._naps.add(nap)
        try:
            await nap
        finally:
            self._naps.discard(nap)
            if call.active():
                call.cancel()

    async def send(self, completion: Completion) -> None:
        """One attempt: the region's answer is the acknowledgement."""
        call = self.region()(
            ReportInfrastructureTask, timeout=self.report_timeout, task=completion.task, operation=completion.operation,
            deployment_location=completion.deployment_location,
        )
        # The RPC layer times calls out itself; this also bounds any other client.
        await call.addTimeout(self.report_timeout, self.reactor)

    # -- helpers -------------------------------------------------------------

    def _spawn(self, table: dict[str, Deferred[None]], key: str, work: Coroutine[Any, Any, None], what: str) -> None:
        loop = Deferred.fromCoroutine(work)
        if loop.called:  # finished (or failed) at once
            loop.addErrback(self._log_failure, what, key)
            return
        table[key] = loop

        def finished(result: Any) -> Any:
            if table.get(key) is loop:
                del table[key]
            return result

        loop.addBoth(finished).addErrback(self._log_failure, what, key)

    @staticmethod
    def _log_failure(failure: Failure, what: str, key: str) -> None:
        if not failure.check(CancelledError):
            log.failure("{what} infrastructure request {request} stopped unexpectedly", failure, what=what, request=key)

"""
Power actions on MAAS machines, one at a time per machine, verified.

MAAS's own rules, kept: one power action per machine at a time (the same
action again joins the running one; a different one is refused with
`PowerActionAlreadyInProgress`); after asking MAAS, the state is re-queried
on the wait schedule 1, 2, 2, 4, 6, 8, 12 s (then every 12 s) until it
matches; a backstop (300 s by default) bounds the whole action and fails it
with `PowerActionFailed`.  ``cycle`` is off, verify off, on, verify on,
because MAAS has no power-cycle operation.  The outcome is reported once
through `report`; a failing report is logged and does not fail the action.
"""

from __future__ import annotations

from itertools import chain, repeat
from typing import Any, Awaitable, Callable, Iterator

import attrs
from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from clusterd.maas.errors import MAASError, PowerActionAlreadyInProgress, PowerActionFailed
from clusterd.maas.interfaces import IMAASClient

__all__ = ["PowerOrchestrator", "PowerReport", "WAIT_SCHEDULE", "DEFAULT_BACKSTOP", "ACTIONS"]

log = Logger()

#: MAAS's wait schedule after a power action, in seconds; the last is repeated.
WAIT_SCHEDULE = (1.0, 2.0, 2.0, 4.0, 6.0, 8.0, 12.0)
DEFAULT_BACKSTOP = 300.0
ACTIONS = ("on", "off", "cycle")

#: ``report(system_id, action, outcome, state, error)``; outcome is "ok" or "failed".
PowerReport = Callable[[str, str, str, "str | None", "str | None"], Awaitable[Any]]


def wait_schedule() -> Iterator[float]:
    return chain(WAIT_SCHEDULE, repeat(WAIT_SCHEDULE[-1]))


@attrs.define(eq=False)
class _Running:
    action: str
    waiters: list[Deferred[str]] = attrs.field(factory=list)


@attrs.define(eq=False)
class PowerOrchestrator:
    clock: IReactorTime = attrs.field(repr=False)
    client: IMAASClient = attrs.field(repr=False)
    report: PowerReport | None = attrs.field(default=None, repr=False)
    _running: dict[str, _Running] = attrs.field(init=False, factory=dict, repr=False)
    #: The last state seen for each machine with an action running (for messages).
    _last_state: dict[str, str] = attrs.field(init=False, factory=dict, repr=False)

    def in_progress(self) -> dict[str, str]:
        """``{system_id: action}`` for every action still running."""
        return {system_id: running.action for system_id, running in self._running.items()}

    async def power(
        self, system_id: str, action: str, *, stop_mode: str = "hard", backstop: float = DEFAULT_BACKSTOP
    ) -> str:
        """Run (or join) `action` on the machine; its final power state."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if stop_mode not in ("hard", "soft"):
            raise ValueError(f"stop_mode must be 'hard' or 'soft', not {stop_mode!r}")
        if not backstop > 0:
            raise ValueError(f"backstop must be above 0, not {backstop!r}")
        running = self._running.get(system_id)
        if running is not None:
            if running.action != action:
                raise PowerActionAlreadyInProgress.from_actions(system_id, running.action, action)
            return await self._join(running)
        running = self._running[system_id] = _Running(action)
        waiter = self._join(running)
        d = Deferred.fromCoroutine(self._run(system_id, action, stop_mode, backstop))
        d.addBoth(self._finished, system_id, running)
        return await waiter

    @staticmethod
    def _join(running: _Running) -> Deferred[str]:
        """A Deferred of its own for each caller, so one giving up stops nobody else."""
        waiter: Deferred[str] = Deferred(lambda d: running.waiters.remove(d) if d in running.waiters else None)
        running.waiters.append(waiter)
        return waiter

    def _finished(self, result: str | Failure, system_id: str, running: _Running) -> None:
        del self._running[system_id]
        self._last_state.pop(system_id, None)
        waiters, running.waiters = running.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        if isinstance(result, Failure):
            result.trap(Exception)  # handled: each waiter got it

    async def _run(self, system_id: str, action: str, stop_mode: str, backstop: float) -> str:
        steps = Deferred.fromCoroutine(self._steps(system_id, action, stop_mode))
        steps.addTimeout(backstop, self.clock)
        try:
            state = await steps
        except DeferredTimeoutError:
            error: Exception = PowerActionFailed.backstop(system_id, action, backstop, self._last_state.get(system_id))
            self._report(system_id, action, "failed", self._last_state.get(system_id), error)
            raise error from None
        except CancelledError:
            raise
        except Exception as e:
            self._report(system_id, action, "failed", self._last_state.get(system_id), e)
            raise
        self._report(system_id, action, "ok", state, None)
        return state

    async def _steps(self, system_id: str, action: str, stop_mode: str) -> str:
        if action == "cycle":
            await self._change(system_id, "off", stop_mode)
            return await self._change(system_id, "on", stop_mode)
        return await self._change(system_id, action, stop_mode)

    async def _change(self, system_id: str, target: str, stop_mode: str) -> str:
        """Ask MAAS for `target`, then poll on the wait schedule until the BMC says so."""
        if target == "on":
            await self.client.power_on(system_id)
        else:
            await self.client.power_off(system_id, stop_mode=stop_mode)
        for delay in wait_schedule():
            await deferLater(self.clock, delay, lambda: None)
            try:
                state: str = await self.client.query_power_state(system_id)
            except CancelledError:
                raise
            except MAASError as e:
                # A query that fails is not an answer; keep asking until the backstop.
                log.debug("Power query for {system_id} failed: {error}", system_id=system_id, error=e.message)
                continue
            self._last_state[system_id] = state
            if state == target:
                return state
        raise AssertionError("the wait schedule never ends")  # pragma: no cover

    def _report(self, system_id: str, action: str, outcome: str, state: str | None, error: Exception | None) -> None:
        if self.report is None:
            return
        message = None if error is None else (getattr(error, "message", None) or str(error) or type(error).__name__)

        async def send() -> None:
            assert self.report is not None
            await self.report(system_id, action, outcome, state, message)

        d = Deferred.fromCoroutine(send())
        d.addErrback(
            lambda f: log.failure("Reporting power {action} of {system_id} failed", f, action=action, system_id=system_id)
        )

"""
What the benchmarks share: child processes that cannot outlive the bench,
port files, waiting on a child, reading a process's CPU time, and running
the parent's measurement on the reactor with the house exit codes (0 ran,
1 failed, 2 interrupted).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

__all__ = ["ParentWatch", "Children", "write_port_file", "wait_for", "cpu_seconds", "run_parent"]


class ParentWatch(Protocol):
    """In a child: stops the reactor when the parent closes our stdin (or dies)."""

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        if reactor.running:
            reactor.stop()


def write_port_file(path: str, port: int) -> None:
    """Tell the parent our port, atomically (it polls for the file)."""
    with open(path + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(path + ".tmp", path)


class Children:
    """
    The parent's children.  Ours exit when their stdin closes (see
    `ParentWatch`); `foreign` ones (other programs) are terminated at once.
    Whatever is left is terminated, then killed.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.foreign: set[int] = set()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def spawn(self, argv: list[str], env: dict[str, str] | None = None, foreign: bool = False) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, env=env or self.env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=self.root)
        self.procs.append(child)
        if foreign:
            self.foreign.add(child.pid)
        return child

    def kill_all(self, grace: float = 2.0) -> None:
        for child in self.procs:
            if child.pid in self.foreign and child.poll() is None:
                child.terminate()
            if child.stdin is not None and not child.stdin.closed:
                try:
                    child.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        for child in self.procs:
            try:
                child.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.terminate()
        for child in self.procs:
            try:
                child.wait(3.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.procs.clear()
        self.foreign.clear()


async def wait_for(
    predicate: Callable[[], Any], what: str, child: subprocess.Popen[bytes], timeout: float = 60.0, interval: float = 0.05
) -> None:
    """Poll `predicate` (plain or async) until true; fail if `child` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if child.poll() is not None:
            raise RuntimeError(f"{what} exited with status {child.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await deferLater(reactor, interval, lambda: None)


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_parent(name: str, work: Callable[[], Awaitable[Any]], report: Callable[[Any], None], cleanup: Callable[[], None]) -> int:
    """Run `work` on the reactor, then `cleanup`; report and return 0, or 1 on failure, 2 if interrupted."""
    outcome: list[Any] = []
    interrupted: list[bool] = []

    def shutting_down() -> None:
        if not outcome:  # a signal, not us: whatever fails from here on is not the benchmark's fault
            interrupted.append(True)

    def started() -> None:
        d = Deferred.fromCoroutine(work())  # type: ignore[arg-type]
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    try:
        reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
        reactor.callWhenRunning(started)
        reactor.run()
    finally:
        cleanup()
    if interrupted or not outcome:
        print(f"bench/{name}: interrupted", file=sys.stderr)
        return 2
    if isinstance(outcome[0], Failure):
        print(f"bench/{name}: failed", file=sys.stderr)
        outcome[0].printTraceback(file=sys.stderr)
        return 1
    report(outcome[0])
    return 0

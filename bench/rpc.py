"""
RPC benchmark: Outpost's authenticated AMP against bare Twisted AMP, in one run.

Usage::

    python bench/rpc.py [--quick] [--gc-freeze] [--pin]

Client and server run in separate processes over loopback TCP: this script
spawns its own server side as children (``--serve`` and ``--clusters``, not
meant to be used by hand) and kills every child when it ends.

What is measured, for "ours" (``rpc.protocol.RPCProtocol.call`` after mutual
authentication, ``rpc.gather.gather``) and "bare" (``twisted.protocols.amp.AMP``
``callRemote``, ``defer.gatherResults``):

1. sequential: round trips per second of a no-argument command with an empty
   answer (``rpc.common.Ping``), one call at a time;
2. pipelined: calls per second with 100 calls in flight on one connection;
3. gather100: wall time of one fan-out of a command that sleeps 100 ms to 100
   cluster connections (all made by one child process), median of 5.

Ours and bare take turns (several short rounds each) so that background load
on the machine hits both alike.  The client and server CPU time per call is
reported too: it is the figure other load moves least.  The table goes to
stdout; its last line is one JSON object with every figure.  The exit status
is 0 whether or not a target is met (it is a measurement), 1 on errors and 2
when interrupted.
"""

from __future__ import annotations

import os
import sys

# This file is called rpc.py: make sure ``import rpc`` finds the package at
# the repository root, not this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any, Awaitable, Callable  # noqa: E402

import twisted  # noqa: E402
from bench._harness import Children, ParentWatch, cpu_seconds, run_parent, wait_for, write_port_file  # noqa: E402
from twisted.internet import defer, reactor, stdio  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols import amp  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from rpc.client import ClusterClient  # noqa: E402
from rpc.common import Ping, RPCCommand  # noqa: E402
from rpc.gather import gather  # noqa: E402
from rpc.protocol import CLUSTER, REGION, RPCFactory, RPCProtocol  # noqa: E402

OURS, BARE = "ours", "bare"
FLAVOURS = (OURS, BARE)

IN_FLIGHT = 100
CLUSTERS = 100
SLEEP = 0.1
GATHER_REPEATS = 5
ROUNDS = 6  # each throughput figure is the median of this many alternating rounds (2 with --quick)

SEQUENTIAL_TARGET = 0.8  # ours/bare calls per second, at least
PIPELINED_TARGET = 0.8
GATHER_TARGET = 1.3  # ours/bare wall time, at most

_SECRET_ENV = "OUTPOST_BENCH_SECRET"
SECRET = os.urandom(32)  # the parent's; children get it through _SECRET_ENV


# -- commands -----------------------------------------------------------------


class Sleep(RPCCommand):
    """Answer (with nothing) after `seconds`: a stand-in for a slow cluster operation."""

    arguments = [(b"seconds", amp.Float())]
    response: list = []


class BarePing(amp.Command):
    """`rpc.common.Ping` for bare AMP: same name, same (empty) boxes."""

    commandName = b"Ping"
    arguments: list = []
    response: list = []


class BareSleep(amp.Command):
    """`Sleep` for bare AMP."""

    commandName = b"Sleep"
    arguments = [(b"seconds", amp.Float())]
    response: list = []


# -- child processes ------------------------------------------------------------


class SleepResponders(amp.CommandLocator):
    """A cluster's responders (ours): Ping is answered by `RPCProtocol` itself."""

    @Sleep.responder
    def sleep(self, seconds: float) -> Deferred:
        return deferLater(reactor, seconds, dict)


class BareServer(amp.AMP):
    @BarePing.responder
    def ping(self) -> dict:
        return {}


class BareCluster(amp.AMP):
    @BareSleep.responder
    def sleep(self, seconds: float) -> Deferred:
        return deferLater(reactor, seconds, dict)


def _secret() -> bytes:
    return bytes.fromhex(os.environ[_SECRET_ENV])


async def _serve(flavour: str, port_file: str) -> None:
    """Child: listen on loopback and answer Ping until the parent goes."""
    if flavour == OURS:
        factory: Factory = RPCFactory(
            secret=_secret(), role=REGION, clock=reactor, ident="bench-region",
            locator_factory=lambda proto: amp.CommandLocator(),
        )
    else:
        factory = Factory.forProtocol(BareServer)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    write_port_file(port_file, port.getHost().port)


async def _clusters(flavour: str, port: int, count: int) -> None:
    """Child: open `count` cluster connections to the region at `port`, answering Sleep."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if flavour == OURS:
        factory: Factory = RPCFactory(
            secret=_secret(), role=CLUSTER, clock=reactor, ident="bench-cluster",
            locator_factory=lambda proto: SleepResponders(),
        )
    else:
        factory = Factory.forProtocol(BareCluster)
    await defer.gatherResults([endpoint.connect(factory) for _ in range(count)], consumeErrors=True)


def child_main(args: argparse.Namespace) -> int:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    stdio.StandardIO(ParentWatch())
    if args.serve:
        work = _serve(args.serve, args.port_file)
    else:
        work = _clusters(args.clusters, args.port, args.count)
    failed: list[Failure] = []

    def started() -> None:
        d = Deferred.fromCoroutine(work)
        if args.gc_freeze:
            d.addCallback(lambda _: _freeze())

        def bail(f: Failure) -> None:
            failed.append(f)
            reactor.stop()

        d.addErrback(bail)

    reactor.callWhenRunning(started)
    reactor.run()
    if failed:
        failed[0].printTraceback(file=sys.stderr)
        return 1
    return 0


# -- the parent: children -------------------------------------------------------

_children = Children(ROOT)
_GC_FREEZE = False
_SERVER_CPU: int | None = None  # set when pinning: the CPU the children run on


def _pin_cpus() -> int | None:
    """
    Pin this process to one CPU and keep another for the children.

    Ours and bare then get the same placement for certain, at the price of
    not escaping to an idle CPU when other work runs.  Returns the children's
    CPU, or None when there are not two CPUs to use.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    os.sched_setaffinity(0, {allowed[0]})
    return allowed[1]


def _freeze() -> None:
    """Move everything alive now out of the collector's way (what a daemon could do after start-up)."""
    gc.collect()
    gc.freeze()


def _spawn(*args: str) -> subprocess.Popen:
    if _GC_FREEZE:
        args = (*args, "--gc-freeze")
    if _SERVER_CPU is not None:
        args = (*args, "--cpu", str(_SERVER_CPU))
    return _children.spawn([sys.executable, os.path.abspath(__file__), *args])


async def start_server(flavour: str, workdir: str) -> tuple[int, int]:
    """Spawn a Ping server child; return its port and process id."""
    port_file = os.path.join(workdir, f"{flavour}.port")
    child = _spawn("--serve", flavour, "--port-file", port_file)
    await wait_for(lambda: os.path.exists(port_file), f"{flavour} server", child, timeout=20.0, interval=0.02)
    with open(port_file) as f:
        return int(f.read()), child.pid


# -- the parent: measuring -------------------------------------------------------

Call = Callable[[], Deferred]


def sequential(call: Call, duration: float) -> "Deferred[tuple[int, float]]":
    """Call one at a time for `duration` seconds; fires with (calls, seconds)."""
    done: Deferred[tuple[int, float]] = Deferred()
    count = 0
    start = time.perf_counter()
    end = start + duration

    def landed(_: Any) -> None:
        nonlocal count
        count += 1
        now = time.perf_counter()
        if now >= end:
            done.callback((count, now - start))
        else:
            call().addCallbacks(landed, done.errback)

    call().addCallbacks(landed, done.errback)
    return done


def pipelined(call: Call, depth: int, duration: float) -> "Deferred[tuple[int, float]]":
    """
    Keep `depth` calls in flight for `duration` seconds, refilling as each lands.

    Fires with (calls completed, seconds) once the stragglers have landed too
    (they are not counted).
    """
    done: Deferred[tuple[int, float]] = Deferred()
    count = 0
    outstanding = 0
    stopped_at: float | None = None
    start = time.perf_counter()
    end = start + duration

    def issue() -> None:
        nonlocal outstanding
        outstanding += 1
        call().addCallbacks(landed, failed)

    def landed(_: Any) -> None:
        nonlocal count, outstanding, stopped_at
        outstanding -= 1
        if stopped_at is None:
            count += 1
            now = time.perf_counter()
            if now >= end:
                stopped_at = now
            else:
                issue()
        if stopped_at is not None and outstanding == 0 and not done.called:
            done.callback((count, stopped_at - start))

    def failed(f: Failure) -> None:
        if not done.called:
            done.errback(f)

    for _ in range(depth):
        issue()
    return done


async def alternate(
    measure: Callable[[str], Awaitable[tuple[int, float]]], rounds: int, servers: dict[str, int]
) -> tuple[dict[str, float], dict[str, float | None]]:
    """
    Run `measure(flavour)` for ours and bare in turn, `rounds` times each.

    Returns the median calls per second of each flavour's rounds (a burst of
    other load that hits a round or two moves the median little) and the CPU
    time per call, in microseconds, of client plus server over all rounds
    (which other load hardly moves at all; None if it cannot be read).
    """
    rates: dict[str, list[float]] = {f: [] for f in FLAVOURS}
    cpu = {f: [0, 0.0] for f in FLAVOURS}
    cpu_known = True
    for i in range(rounds):
        for flavour in FLAVOURS if i % 2 == 0 else tuple(reversed(FLAVOURS)):
            server_before = cpu_seconds(servers[flavour])
            client_before = time.process_time()
            calls, seconds = await measure(flavour)
            client = time.process_time() - client_before
            server_after = cpu_seconds(servers[flavour])
            rates[flavour].append(calls / seconds)
            if server_before is None or server_after is None:
                cpu_known = False
            else:
                cpu[flavour][0] += calls
                cpu[flavour][1] += client + server_after - server_before
    per_call = {f: (used / calls * 1e6 if cpu_known else None) for f, (calls, used) in cpu.items()}
    return {f: statistics.median(r) for f, r in rates.items()}, per_call


async def connect_client(flavour: str, port: int) -> Call:
    """Connect to a Ping server; return a zero-argument call of Ping."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if flavour == OURS:
        factory = RPCFactory(secret=SECRET, role=CLUSTER, clock=reactor, ident="bench-client")
        proto = await endpoint.connect(factory)
        await proto.when_authenticated()
        return partial(proto.call, Ping)
    bare = await endpoint.connect(Factory.forProtocol(amp.AMP))
    return partial(bare.callRemote, BarePing)


class _Region:
    """The listening side of the fan-out benchmark: collects cluster connections."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.connections: list[amp.AMP] = []
        if flavour == OURS:
            self.factory: Factory = RPCFactory(
                secret=SECRET, role=REGION, clock=reactor, ident="bench-region",
                locator_factory=self._ours_connected,
            )
        else:
            self.factory = Factory.forProtocol(self._bare_protocol)

    def _ours_connected(self, proto: RPCProtocol) -> amp.CommandLocator:
        proto.when_authenticated().addCallback(self.connections.append)
        return amp.CommandLocator()

    def _bare_protocol(self) -> amp.AMP:
        proto = amp.AMP()
        self.connections.append(proto)
        return proto

    def fan_out(self) -> Deferred:
        if self.flavour == OURS:
            clients = {f"cluster-{i}": ClusterClient(c, ident=f"cluster-{i}") for i, c in enumerate(self.connections)}
            return gather({k: partial(c, Sleep, seconds=SLEEP) for k, c in clients.items()}, 30.0, reactor)
        return defer.gatherResults(
            [c.callRemote(BareSleep, seconds=SLEEP) for c in self.connections], consumeErrors=True
        )


async def gather_benchmark(repeats: int) -> dict[str, float]:
    """Median wall time (ms) of one fan-out to CLUSTERS clusters, ours and bare."""
    regions: dict[str, _Region] = {}
    for flavour in FLAVOURS:
        region = regions[flavour] = _Region(flavour)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(region.factory)
        child = _spawn("--clusters", flavour, "--port", str(port.getHost().port), "--count", str(CLUSTERS))
        await wait_for(lambda: len(region.connections) == CLUSTERS, f"{CLUSTERS} {flavour} clusters", child, timeout=20.0, interval=0.02)
    times: dict[str, list[float]] = {f: [] for f in FLAVOURS}
    for i in range(repeats + 1):  # the first round warms up and is not counted
        for flavour in FLAVOURS if i % 2 == 0 else tuple(reversed(FLAVOURS)):
            start = time.perf_counter()
            result = await regions[flavour].fan_out()
            elapsed = time.perf_counter() - start
            if flavour == OURS:
                bad = [o for o in result if not o.ok]
                if bad or len(result) != CLUSTERS:
                    raise RuntimeError(f"gather: {len(bad)} of {len(result)} calls failed, e.g. {bad[:1]}")
            elif len(result) != CLUSTERS:
                raise RuntimeError(f"gatherResults: {len(result)} answers for {CLUSTERS} calls")
            if i:
                times[flavour].append(elapsed * 1000.0)
    return {f: statistics.median(t) for f, t in times.items()}


async def run(quick: bool) -> dict[str, Any]:
    duration = 0.5 if quick else 3.0
    warmup = 0.1 if quick else 0.3
    rounds = 2 if quick else ROUNDS
    results: dict[str, Any] = {
        "benchmark": "rpc", "quick": quick, "gc_freeze": _GC_FREEZE, "pinned": _SERVER_CPU is not None,
    }
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as workdir:
        calls: dict[str, Call] = {}
        servers: dict[str, int] = {}
        for flavour in FLAVOURS:
            port, servers[flavour] = await start_server(flavour, workdir)
            calls[flavour] = await connect_client(flavour, port)
        for flavour in FLAVOURS:
            await sequential(calls[flavour], warmup)
            await pipelined(calls[flavour], IN_FLIGHT, warmup)
        if _GC_FREEZE:
            _freeze()

        _progress(f"sequential: {duration:g}s each, in {rounds} alternating rounds")
        seq, seq_cpu = await alternate(lambda f: sequential(calls[f], duration / rounds), rounds, servers)
        _progress(f"pipelined ({IN_FLIGHT} in flight): {duration:g}s each, in {rounds} alternating rounds")
        pipe, pipe_cpu = await alternate(
            lambda f: pipelined(calls[f], IN_FLIGHT, duration / rounds), rounds, servers
        )
        _progress(f"gather: {CLUSTERS} clusters sleeping {SLEEP * 1000:g} ms, median of {GATHER_REPEATS}")
        fan = await gather_benchmark(GATHER_REPEATS)

    for name, figures, cpu in (("sequential", seq, seq_cpu), ("pipelined", pipe, pipe_cpu)):
        results[f"{name}_ours"] = round(figures[OURS], 1)
        results[f"{name}_bare"] = round(figures[BARE], 1)
        results[f"{name}_ratio"] = round(figures[OURS] / figures[BARE], 3)
        ours_cpu, bare_cpu = cpu[OURS], cpu[BARE]
        results[f"{name}_cpu_us_per_call_ours"] = None if ours_cpu is None else round(ours_cpu, 1)
        results[f"{name}_cpu_us_per_call_bare"] = None if bare_cpu is None else round(bare_cpu, 1)
        results[f"{name}_cpu_ratio"] = None if ours_cpu is None or not bare_cpu else round(ours_cpu / bare_cpu, 3)
    results["gather100_ours_ms"] = round(fan[OURS], 2)
    results["gather100_bare_ms"] = round(fan[BARE], 2)
    results["gather100_ratio"] = round(fan[OURS] / fan[BARE], 3)
    results["sequential_target_met"] = seq[OURS] / seq[BARE] >= SEQUENTIAL_TARGET
    results["pipelined_target_met"] = pipe[OURS] / pipe[BARE] >= PIPELINED_TARGET
    results["gather100_target_met"] = fan[OURS] / fan[BARE] <= GATHER_TARGET
    results["targets_met"] = all(
        results[k] for k in ("sequential_target_met", "pipelined_target_met", "gather100_target_met")
    )
    # Other work on the machine moves these figures; say how busy it was.
    results["loadavg_1min_before"] = round(load_before, 2)
    results["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count()
    results["python"] = sys.version.split()[0]
    results["twisted"] = twisted.__version__
    return results


def _progress(message: str) -> None:
    print(f"bench/rpc: {message}", file=sys.stderr, flush=True)


def report(r: dict[str, Any]) -> None:
    def met(key: str) -> str:
        return "yes" if r[key] else "NO"

    rows = [
        ("metric", "ours", "bare", "ratio", "target", "met"),
        ("sequential calls/s", f"{r['sequential_ours']:,.0f}", f"{r['sequential_bare']:,.0f}",
         f"{r['sequential_ratio']:.3f}", f">= {SEQUENTIAL_TARGET}", met("sequential_target_met")),
        (f"pipelined calls/s ({IN_FLIGHT} in flight)", f"{r['pipelined_ours']:,.0f}", f"{r['pipelined_bare']:,.0f}",
         f"{r['pipelined_ratio']:.3f}", f">= {PIPELINED_TARGET}", met("pipelined_target_met")),
        (f"gather x{CLUSTERS}, {SLEEP * 1000:g} ms sleep (ms)", f"{r['gather100_ours_ms']:.1f}",
         f"{r['gather100_bare_ms']:.1f}", f"{r['gather100_ratio']:.3f}", f"<= {GATHER_TARGET}",
         met("gather100_target_met")),
    ]
    for name in ("sequential", "pipelined"):
        if r[f"{name}_cpu_ratio"] is not None:
            rows.append((f"{name} CPU us/call (client+server)", f"{r[f'{name}_cpu_us_per_call_ours']:.1f}",
                         f"{r[f'{name}_cpu_us_per_call_bare']:.1f}", f"{r[f'{name}_cpu_ratio']:.3f}", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    mode = "".join(f" ({flag})" for flag, on in (("--quick", r["quick"]), ("--gc-freeze", r["gc_freeze"])) if on)
    print(f"RPC benchmark{mode}: Outpost RPCProtocol vs bare Twisted AMP, loopback TCP, separate processes")
    print("\n".join(lines))
    print("ratio: ours/bare calls per second for throughput (higher is better);")
    print("       ours/bare wall time for gather and CPU per call (lower is better).")
    print("calls/s are medians over alternating rounds; CPU per call is informational (little moved by")
    print("other load on the machine).")
    print(f"target: sequential ours >= {SEQUENTIAL_TARGET}x bare: {met('sequential_target_met')}")
    print(f"target: pipelined ours >= {PIPELINED_TARGET}x bare: {met('pipelined_target_met')}")
    print(f"target: gather ours time <= {GATHER_TARGET}x bare: {met('gather100_target_met')}")
    print(f"all targets met: {'yes' if r['targets_met'] else 'NO'}")
    pinned = "client on one CPU, servers on another" if r["pinned"] else "not pinned"
    print(f"machine: {r['cpus']} CPUs ({pinned}), 1-min load average {r['loadavg_1min_before']} before, "
          f"{r['loadavg_1min_after']} after (other load skews these figures)")
    print(json.dumps(r, sort_keys=False), flush=True)


def parent_main(quick: bool) -> int:
    os.environ[_SECRET_ENV] = SECRET.hex()
    return run_parent("rpc", lambda: run(quick), report, _children.kill_all)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (~0.5 s a figure) for smoke tests")
    parser.add_argument(
        "--gc-freeze", action="store_true",
        help="call gc.freeze() in every process once set up (both sides alike), to see what it would buy the daemons",
    )
    parser.add_argument("--serve", choices=FLAVOURS, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--clusters", choices=FLAVOURS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pin", action="store_true",
        help="pin this process to one CPU and the server children to another (Linux, 2+ CPUs)",
    )
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=CLUSTERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr),
                              [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False,
    )
    if args.serve or args.clusters:
        if args.serve and not args.port_file or args.clusters and not args.port:
            parser.error("--serve needs --port-file; --clusters needs --port")
        return child_main(args)
    global _GC_FREEZE, _SERVER_CPU
    _GC_FREEZE = args.gc_freeze
    if args.pin:
        _SERVER_CPU = _pin_cpus()
    return parent_main(args.quick)


if __name__ == "__main__":
    sys.exit(main())

"""
Infrastructure benchmark: creates through the region (HTTP, RPC, the
cluster, its ``simulated`` driver, the VIM simulator) against the same
creates sent straight to the VIM simulator, in one run.

Usage::

    python bench/infrastructure.py [--quick] [--rounds R] [--round-seconds S]
                                   [--creates N] [--vim-duration D] [--completion-rounds R] [--keep]

Children (real daemons, in a fresh ``/tmp/outpost-bench-infra-*`` state
directory): ``twistd -n vim-sim``, ``twistd -n regiond`` (embedded
PostgreSQL) and one ``twistd -n clusterd`` whose ``simulated`` driver talks
to that VIM simulator (``monitor: {interval: 0.1, max_interval: 1.0}``).
The benchmark creates an admin token, waits for the cluster to register,
follows ``GET /api/v1/events/stream?type=infrastructure.task`` and, after a
warm-up, measures, **ours** and **direct** taking turns round by round:

1. accept: creates per second, one at a time and 16 in flight, each round
   lasting ``--round-seconds``; p50 and p99 latency.  Ours is ``POST
   /api/infrastructure/create`` until its 202; direct is ``POST
   /v1/infrastructures`` on the VIM simulator until its 202 (what a client
   talking to the VIM itself pays).  The template's ``create_duration`` is
   0, so each create of ours also costs, right behind it, the cluster's
   poll, its report and the region's event; after an ours round the
   benchmark waits for every completion event before the next round
   (untimed; its CPU is counted).
2. completion: N creates at once (default 100) whose VIM work takes
   ``--vim-duration`` seconds (default 1): ours is the time from sending
   them until every completion event has arrived on the event stream;
   direct is a client that sends the same creates to the VIM and polls
   each request (``GET /v1/infrastructures/{id}/requests/{rid}``) on the
   cluster monitor's own schedule (0.1 s, doubling, at most 1 s) until it
   ends.  The floor is the VIM's duration seen at the first poll at or
   after it (1.5 s for 1 s: polls at 0.1, 0.3, 0.7, 1.5 s).
3. CPU seconds per create (from /proc) of the region, the cluster,
   PostgreSQL and the VIM simulator, per phase.

The bench's HTTP client keeps enough persistent connections for its
concurrency and fills them before measuring, on both sides alike.  The
table goes to stdout; its last line is one JSON object with every figure.
Progress goes to stderr.  The exit status is 0 when the benchmark ran
(whatever the figures, failed creates included: they are reported), 1 when
it could not run (a daemon did not start, completions did not arrive within
``--timeout``) and 2 when interrupted.

Every daemon ends with the benchmark: SIGTERM when it ends however it ends
(the region then stops its PostgreSQL), SIGKILL after a grace period, and
each daemon is started with Linux's parent-death signal set to SIGTERM, so
it also goes when this process is killed outright.  A PostgreSQL the region
left running is stopped (``postgres_left_behind``), and the state directory
removed unless ``--keep``.
"""

from __future__ import annotations

import os
import sys

# Keep ``bench/`` off the path: ``import rpc`` must find the package at the
# repository root, not bench/rpc.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import collections  # noqa: E402
import ctypes  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import treq  # noqa: E402
import twisted  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, gatherResults  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402
from twisted.internet.utils import getProcessOutputAndValue  # noqa: E402
from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402

from bench._harness import Children, cpu_seconds, run_parent, wait_for  # noqa: E402
from bench.machines import TWISTD, postgres_cpu_seconds, stop_everything  # noqa: E402
from bench.volumes import listen_overflows  # noqa: E402
from clusterd.infrastructure.monitor import backoff  # noqa: E402

OURS, DIRECT = "ours", "direct"
FLAVOURS = (OURS, DIRECT)
CLUSTER = "bench-infra"
LOCATION = {"name": CLUSTER, "type": "simulated", "properties": {}}
#: The cluster's task monitor: first poll after `MONITOR_INTERVAL`, doubling up to `MONITOR_MAX`; the direct client polls alike.
MONITOR_INTERVAL, MONITOR_MAX = 0.1, 1.0
CONCURRENCY = (1, 16)
ROUNDS, ROUND_S, CREATES, COMPLETION_ROUNDS, VIM_DURATION = 4, 1.5, 100, 3, 1.0
ROUNDS_QUICK, ROUND_S_QUICK, CREATES_QUICK, COMPLETION_ROUNDS_QUICK = 2, 0.4, 10, 1
WARM_UP_CREATES = 4
#: Seconds each daemon gets to stop on SIGTERM (the region stops PostgreSQL first) before SIGKILL.
STOP_GRACE = 30.0
#: Seconds to let the daemons settle after a round of ours (the cluster's acknowledgements), charged to that round.
SETTLE_S = 0.3
ERRORS_SHOWN = 6

TEMPLATE = """\
parameters:
  flavor: {default: small}
resources:
  server:
    type: Simulated::Server
    properties: {flavor: {get_param: flavor}}
outputs:
  server_ip: {value: {get_attr: [server, ip]}}
  flavor: {get_attr: [server, flavor]}
simulation: {create_duration: %s}
"""


def _progress(message: str) -> None:
    print(f"bench/infrastructure: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q`th percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def poll_floor(duration: float, interval: float = MONITOR_INTERVAL, max_interval: float = MONITOR_MAX) -> float:
    """When the first poll at or after `duration` goes out, on the monitor's schedule (`backoff`)."""
    following = backoff(interval, max_interval)
    at, delay = interval, interval
    while at < duration - 1e-9:
        delay = following(delay)
        at += delay
    return at


# -- children ----------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _prctl = None


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGTERM this child when `parent` (the thread that forks: ours) dies."""

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the signal was armed
                os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Daemons(Children):
    """
    `Children` that are daemons: each writes its output to ``<name>.log``
    in the state directory, gets SIGTERM when this process dies (so no
    thread may be running when one is spawned), and is foreign: SIGTERM
    first when the benchmark ends, SIGKILL after the grace period.
    """

    def __init__(self, root: str, base: Path) -> None:
        super().__init__(root)
        self.base = base

    def daemon(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.base / f"{name}.log", "ab") as log:
            child = subprocess.Popen(
                argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.base),
                preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 - the benchmark starts no threads
            )
        self.procs.append(child)
        self.foreign.add(child.pid)
        return child

    def log_tail(self, name: str, chars: int = 3000) -> str:
        try:
            return (self.base / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- the event stream --------------------------------------------------------------------------


class TaskEvents:
    """
    ``GET /api/v1/events/stream?type=infrastructure.task``, parsed as it
    arrives: each request id's first event, with the `time.perf_counter`
    of its arrival and its status.
    """

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, str]] = {}
        self._buffer = b""
        self._waiters: list[tuple[set[str], Deferred[None]]] = []
        self.ended: str | None = None

    async def open(self, url: str, token: str) -> None:
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(
            url + "/api/v1/events/stream?type=infrastructure.task", unbuffered=True, pool=pool,
            headers={"Authorization": [f"Bearer {token}"], "Accept": ["text/event-stream"]},
        )
        if response.code != 200:
            raise RuntimeError(f"GET /api/v1/events/stream: HTTP {response.code}: {(await treq.content(response))[:300]!r}")
        treq.collect(response, self._received).addBoth(self._gone)

    def _received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        while b"\n\n" in self._buffer:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in frame.decode("utf-8", "replace").split("\n"):
                if line and not line.startswith(":"):
                    key, _, value = line.partition(":")
                    fields[key] = fields.get(key, "") + value.removeprefix(" ")
            if fields.get("event") != "infrastructure.task" or "data" not in fields:
                continue
            task = json.loads(fields["data"]).get("data") or {}
            request_id = task.get("requestId")
            if isinstance(request_id, str) and request_id not in self.arrived:
                self.arrived[request_id] = (now, str(task.get("status")))
                self._arrived(request_id)

    def _arrived(self, request_id: str) -> None:
        for pending, d in list(self._waiters):
            pending.discard(request_id)
            if not pending:
                self._waiters.remove((pending, d))
                d.callback(None)

    def _gone(self, result: Any) -> None:
        self.ended = "the event stream ended" if not hasattr(result, "getErrorMessage") else f"the event stream failed: {result.getErrorMessage()}"
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(RuntimeError(self.ended))

    async def wait(self, request_ids: list[str], timeout: float, what: str) -> None:
        """Until every one of `request_ids` has had its event; RuntimeError after `timeout` seconds."""
        pending = {r for r in request_ids if r not in self.arrived}
        if not pending:
            return
        if self.ended:
            raise RuntimeError(self.ended)
        d: Deferred[None] = Deferred()
        entry = (pending, d)
        self._waiters.append(entry)
        d.addTimeout(timeout, reactor)
        try:
            await d
        except TimeoutError:
            if entry in self._waiters:
                self._waiters.remove(entry)
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}: {len(pending)} of {len(request_ids)}"
                               " completion events missing (--timeout)") from None


# -- the benchmark ----------------------------------------------------------------------------


class CreateFailed(Exception):
    pass


class Bench:
    def __init__(self, args: argparse.Namespace, daemons: Daemons) -> None:
        self.args = args
        self.daemons = daemons
        self.base = daemons.base
        self.pgdata = self.base / "region" / "postgres" / "data"
        self.vim_url = f"http://127.0.0.1:{free_port()}"
        self.http_port, self.rpc_port = free_port(), free_port()
        self.region_url = f"http://127.0.0.1:{self.http_port}"
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max(max(CONCURRENCY), args.creates) + 4
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.auth: dict[str, list[str]] = {}
        self.events = TaskEvents()
        self.pids: dict[str, int] = {}
        self._names = itertools.count()
        self.accept_template = TEMPLATE % 0
        self.completion_template = TEMPLATE % args.vim_duration

    # -- set-up --

    def _check(self, name: str) -> None:
        for child in self.daemons.procs:
            if child.pid == self.pids.get(name) and child.poll() is not None:
                raise RuntimeError(f"{name} exited with status {child.returncode}; its log ends:\n{self.daemons.log_tail(name)}")

    async def _answers(self, url: str, name: str) -> bool:
        self._check(name)
        try:
            response = await self.http.get(url, timeout=5)
            await response.content()
        except Exception:
            return False
        return response.code == 200

    async def start(self) -> dict[str, float]:
        began = time.monotonic()
        _progress("starting vim-sim, regiond (embedded PostgreSQL) and clusterd")
        port = self.vim_url.rsplit(":", 1)[1]
        vim = self.daemons.daemon("vim-sim", [
            TWISTD, "-n", "--pidfile=", "vim-sim", "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--create-duration", str(self.args.vim_duration), "--delete-duration", "0.1"])
        self.pids["vim-sim"] = vim.pid
        config = self.base / "region.yaml"
        config.write_text(json.dumps({
            "state_dir": str(self.base / "region"),
            "rpc": {"listen": f"tcp:{self.rpc_port}:interface=127.0.0.1"},
            "http": {"listen": f"tcp:{self.http_port}:interface=127.0.0.1"},
        }))  # JSON is YAML
        region = self.daemons.daemon("regiond", [TWISTD, "-n", "--pidfile=", "regiond", "--config", str(config)])
        self.pids["regiond"] = region.pid
        await wait_for(lambda: self._answers(self.vim_url + "/v1", "vim-sim"), "vim-sim", vim, timeout=60)
        await wait_for(lambda: self._answers(self.region_url + "/api/v1/health", "regiond"), "regiond", region, timeout=120,
                       interval=0.2)
        region_ready = time.monotonic()
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "outpost", "token", "--config", str(config), "create", "--role", "admin", "--name", "bench"],
            env=self.daemons.env(), path=ROOT)
        if code != 0:
            raise RuntimeError(f"could not create an admin token: {err.decode(errors='replace').strip()}")
        token = out.decode().strip()
        self.auth = {"Authorization": [f"Bearer {token}"]}

        cluster_config = self.base / "cluster.yaml"
        cluster_config.write_text(json.dumps({"infrastructure": {
            "drivers": {"simulated": {"url": self.vim_url}},
            "monitor": {"interval": MONITOR_INTERVAL, "max_interval": MONITOR_MAX}}}))
        (self.base / CLUSTER).mkdir()
        cluster = self.daemons.daemon("clusterd", [
            TWISTD, "-n", "--pidfile=", "clusterd", "--config", str(cluster_config), "--region", self.region_url + "/",
            "--name", CLUSTER, "--state-dir", str(self.base / CLUSTER), "--secret-file", str(self.base / "region" / "secret")])
        self.pids["clusterd"] = cluster.pid

        async def registered() -> bool:
            self._check("regiond")
            self._check("clusterd")
            response = await self.http.get(self.region_url + "/api/v1/clusters?connected=true", headers=self.auth, timeout=10)
            body = await response.json()
            return response.code == 200 and body.get("total") == 1

        await wait_for(registered, "clusterd to register", cluster, timeout=60, interval=0.1)
        cluster_ready = time.monotonic()
        await self.events.open(self.region_url, token)
        return {"region_start_s": region_ready - began, "cluster_ready_s": cluster_ready - region_ready}

    # -- creates --

    async def create(self, flavour: str, template: str) -> tuple[str, str]:
        """One create, until its 202: (request id, infrastructure id); `CreateFailed` otherwise."""
        name = f"bench-{flavour}-{next(self._names)}"
        if flavour == OURS:
            url = self.region_url + "/api/infrastructure/create"
            body: dict[str, Any] = {"deploymentLocation": LOCATION, "template": template, "templateType": "simulated",
                                    "systemProperties": {"resourceName": name}, "properties": {"flavor": "large"}}
            headers = self.auth
        else:
            url = self.vim_url + "/v1/infrastructures"
            body = {"name": name, "template": template, "template_type": "simulated", "properties": {"flavor": "large"}}
            headers = {}
        response = await self.http.post(url, json=body, headers=headers, timeout=120)
        answer = await response.json()
        if response.code != 202:
            raise CreateFailed(f"{flavour}: HTTP {response.code}: {json.dumps(answer)[:200]}")
        if flavour == OURS:
            return answer["requestId"], answer["infrastructureId"]
        return answer["request_id"], answer["id"]

    async def poll_direct(self, request_id: str, infrastructure_id: str) -> tuple[float, str]:
        """Poll the VIM for the request on the monitor's schedule until it ends: (when, status)."""
        following = backoff(MONITOR_INTERVAL, MONITOR_MAX)
        delay = MONITOR_INTERVAL
        url = f"{self.vim_url}/v1/infrastructures/{infrastructure_id}/requests/{request_id}"
        while True:
            await deferLater(reactor, delay, lambda: None)
            response = await self.http.get(url, timeout=60)
            answer = await response.json()
            if response.code != 200:
                raise CreateFailed(f"direct: GET request: HTTP {response.code}: {json.dumps(answer)[:200]}")
            if answer.get("status") != "IN_PROGRESS":
                return time.perf_counter(), str(answer.get("status"))
            delay = following(delay)

    # -- measuring --

    def snapshot(self) -> dict[str, float]:
        return {
            "region": cpu_seconds(self.pids["regiond"]) or 0.0,
            "cluster": cpu_seconds(self.pids["clusterd"]) or 0.0,
            "postgres": postgres_cpu_seconds(self.pgdata),
            "vim": cpu_seconds(self.pids["vim-sim"]) or 0.0,
            "bench": time.process_time(),
        }

    async def settle(self, flavour: str) -> None:
        """After a round of ours, a moment for the work behind the last event (acknowledgements, journal writes)."""
        if flavour == OURS:
            await deferLater(reactor, SETTLE_S, lambda: None)

    async def fill_pool(self) -> None:
        """Open as many persistent connections to each server as the measurements keep in flight (unmeasured)."""
        n = self.pool.maxPersistentPerHost - 4
        for url in (self.region_url + "/api/v1/health", self.vim_url + "/v1"):
            responses = await gatherResults([Deferred.fromCoroutine(self._get(url)) for _ in range(n)], consumeErrors=True)
            del responses

    async def _get(self, url: str) -> None:
        response = await self.http.get(url, timeout=60)
        await response.content()

    async def warm_up(self) -> None:
        _progress(f"warming up: {WARM_UP_CREATES} creates each way, filling the client's connection pool")
        await self.fill_pool()
        ids = []
        for _ in range(WARM_UP_CREATES):
            ids.append((await self.create(OURS, self.accept_template))[0])
            await self.create(DIRECT, self.accept_template)
        await self.events.wait(ids, self.args.timeout, "the warm-up's completions")

    async def accept_round(self, flavour: str, in_flight: int, seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        ids: list[str] = []
        errors: list[str] = []
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                sent = time.perf_counter()
                try:
                    request_id, _ = await self.create(flavour, self.accept_template)
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                latencies.append(time.perf_counter() - sent)
                ids.append(request_id)

        start = time.perf_counter()
        await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(in_flight)], consumeErrors=True)
        elapsed = time.perf_counter() - start
        drain = 0.0
        if flavour == OURS:
            await self.events.wait(ids, self.args.timeout, f"the completions of an accept round ({in_flight} in flight)")
            drain = max((self.events.arrived[r][0] for r in ids), default=start + elapsed) - (start + elapsed)
        statuses = collections.Counter(self.events.arrived[r][1] for r in ids) if flavour == OURS else collections.Counter()
        return {"rate": len(latencies) / elapsed, "latencies": latencies, "creates": len(latencies), "errors": errors,
                "drain_s": max(0.0, drain), "statuses": statuses}

    async def completion_round(self, flavour: str, n: int) -> dict[str, Any]:
        start = time.perf_counter()
        accepted_at: list[float] = []

        async def one() -> tuple[str, str]:
            ids = await self.create(flavour, self.completion_template)
            accepted_at.append(time.perf_counter() - start)
            return ids

        if flavour == OURS:
            results = await DeferredList([Deferred.fromCoroutine(one()) for _ in range(n)], consumeErrors=True)
            ids = [r[0] for ok, r in results if ok]
            errors = [f"{r.type.__name__}: {r.getErrorMessage()}" for ok, r in results if not ok]
            await self.events.wait(ids, self.args.timeout, f"the completions of {n} concurrent creates")
            ends = [self.events.arrived[r][0] - start for r in ids]
            statuses = collections.Counter(self.events.arrived[r][1] for r in ids)
        else:
            async def created_and_polled() -> tuple[float, str]:
                request_id, infrastructure_id = await one()
                return await self.poll_direct(request_id, infrastructure_id)

            results = await DeferredList([Deferred.fromCoroutine(created_and_polled()) for _ in range(n)], consumeErrors=True)
            errors = [f"{r.type.__name__}: {r.getErrorMessage()}" for ok, r in results if not ok]
            ends = [r[0] - start for ok, r in results if ok]
            statuses = collections.Counter(r[1] for ok, r in results if ok)
        return {"seconds": max(ends) if ends and not errors else None, "all_accepted_s": max(accepted_at, default=None),
                "first_end_s": min(ends, default=None), "median_end_s": statistics.median(ends) if ends else None,
                "errors": errors, "statuses": statuses}

    async def run(self) -> dict[str, Any]:
        args = self.args
        load_before = os.getloadavg()[0]
        results: dict[str, Any] = {"benchmark": "infrastructure", "quick": args.quick}
        results.update({k: round(v, 2) for k, v in (await self.start()).items()})
        await self.warm_up()

        cpu: dict[str, dict[str, float]] = {}
        creates: collections.Counter[str] = collections.Counter()

        def charge(key: str, before: dict[str, float], count: int) -> None:
            after = self.snapshot()
            totals = cpu.setdefault(key, collections.defaultdict(float))
            for k in after:
                totals[k] += after[k] - before[k]
            creates[key] += count

        overflows: collections.Counter[str] = collections.Counter()
        errors: list[str] = []
        accept_statuses: collections.Counter[str] = collections.Counter()
        for in_flight in CONCURRENCY:
            _progress(f"accept, {in_flight} in flight: {args.rounds} alternating rounds of {args.round_seconds:g} s each way")
            rounds: dict[str, list[dict[str, Any]]] = {f: [] for f in FLAVOURS}
            for i in range(args.rounds):
                for flavour in FLAVOURS if i % 2 == 0 else tuple(reversed(FLAVOURS)):
                    before, dropped = self.snapshot(), listen_overflows()
                    r = await self.accept_round(flavour, in_flight, args.round_seconds)
                    await self.settle(flavour)
                    charge(f"accept_{flavour}", before, r["creates"])
                    after_dropped = listen_overflows()
                    if dropped is not None and after_dropped is not None:
                        overflows[f"accept_{flavour}"] += after_dropped - dropped
                    rounds[flavour].append(r)
                    errors += r["errors"]
                    accept_statuses.update(r["statuses"])
            key = f"accept_c{in_flight}"
            for flavour in FLAVOURS:
                latencies = [x for r in rounds[flavour] for x in r["latencies"]]
                results[f"{key}_{flavour}_per_s"] = round(statistics.median(r["rate"] for r in rounds[flavour]), 1)
                results[f"{key}_{flavour}_p50_ms"] = _ms(percentile(latencies, 50))
                results[f"{key}_{flavour}_p99_ms"] = _ms(percentile(latencies, 99))
                results[f"{key}_{flavour}_creates"] = len(latencies)
            results[f"{key}_ratio"] = _ratio(results[f"{key}_{OURS}_per_s"], results[f"{key}_{DIRECT}_per_s"], 3)
            results[f"{key}_p50_ratio"] = _ratio(results[f"{key}_{OURS}_p50_ms"], results[f"{key}_{DIRECT}_p50_ms"], 2)
            results[f"{key}_ours_drain_s_max"] = round(max(r["drain_s"] for r in rounds[OURS]), 3)

        n = args.creates
        _progress(f"completion: {n} creates at once, {args.vim_duration:g} s of VIM work each,"
                  f" {args.completion_rounds} alternating rounds")
        await self.fill_pool()
        completion: dict[str, list[dict[str, Any]]] = {f: [] for f in FLAVOURS}
        for i in range(args.completion_rounds):
            for flavour in FLAVOURS if i % 2 == 0 else tuple(reversed(FLAVOURS)):
                before, dropped = self.snapshot(), listen_overflows()
                r = await self.completion_round(flavour, n)
                await self.settle(flavour)
                charge(f"completion_{flavour}", before, n - len(r["errors"]))
                after_dropped = listen_overflows()
                if dropped is not None and after_dropped is not None:
                    overflows[f"completion_{flavour}"] += after_dropped - dropped
                completion[flavour].append(r)
                errors += r["errors"]
        floor = poll_floor(args.vim_duration)
        for flavour in FLAVOURS:
            seconds = [r["seconds"] for r in completion[flavour] if r["seconds"] is not None]
            results[f"completion_{flavour}_s"] = round(statistics.median(seconds), 3) if seconds else None
            results[f"completion_{flavour}_rounds_s"] = [None if r["seconds"] is None else round(r["seconds"], 3)
                                                         for r in completion[flavour]]
            results[f"completion_{flavour}_all_accepted_s"] = _median_of(completion[flavour], "all_accepted_s")
            results[f"completion_{flavour}_first_end_s"] = _median_of(completion[flavour], "first_end_s")
            results[f"completion_{flavour}_median_end_s"] = _median_of(completion[flavour], "median_end_s")
            statuses: collections.Counter[str] = collections.Counter()
            for r in completion[flavour]:
                statuses.update(r["statuses"])
            results[f"completion_{flavour}_statuses"] = dict(statuses)
        results["completion_creates"] = n
        results["completion_vim_duration_s"] = args.vim_duration
        results["completion_poll_floor_s"] = round(floor, 3)
        results["completion_floor_ratio"] = _ratio(results["completion_ours_s"], floor, 2)
        results["completion_direct_ratio"] = _ratio(results["completion_ours_s"], results["completion_direct_s"], 2)
        results["completion_direct_floor_ratio"] = _ratio(results["completion_direct_s"], floor, 2)
        results["accept_statuses_ours"] = dict(accept_statuses)
        results["errors"] = [[m, c] for m, c in collections.Counter(errors).most_common()]
        results["all_complete"] = (
            not errors and set(accept_statuses) <= {"COMPLETE"}
            and all(set(results[f"completion_{f}_statuses"]) == {"COMPLETE"} for f in FLAVOURS)
        )

        for key, totals in sorted(cpu.items()):
            count = creates[key]
            for who, seconds in totals.items():
                results[f"cpu_ms_per_create_{key}_{who}"] = round(seconds / count * 1000, 2) if count else None
        for key in ("accept_ours", "accept_direct", "completion_ours", "completion_direct"):
            results[f"listen_overflows_{key}"] = overflows.get(key) if listen_overflows() is not None else None
        results.update({
            "rounds": args.rounds, "round_s": args.round_seconds, "completion_rounds": args.completion_rounds,
            "monitor_interval_s": MONITOR_INTERVAL, "monitor_max_interval_s": MONITOR_MAX,
            "client_pool_per_host": self.pool.maxPersistentPerHost,
            "cpus": os.cpu_count(), "loadavg_1min_before": round(load_before, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0], "twisted": twisted.__version__,
        })
        await self.pool.closeCachedConnections()
        return results


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _ratio(a: float | None, b: float | None, digits: int) -> float | None:
    return None if a is None or not b else round(a / b, digits)


def _median_of(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r[key] is not None]
    return round(statistics.median(values), 3) if values else None


# -- report ------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def report(r: dict[str, Any]) -> None:
    mode = " (--quick)" if r["quick"] else ""
    print(f"Infrastructure benchmark{mode}: ours = POST /api/infrastructure/create (region -> RPC -> cluster -> simulated"
          " driver -> VIM simulator); direct = POST /v1/infrastructures on the VIM simulator")
    rows = [("accept", "ours/s", "direct/s", "ours/direct", "ours p50/p99 ms", "direct p50/p99 ms", "creates ours/direct")]
    for c in CONCURRENCY:
        k = f"accept_c{c}"
        rows.append((f"{c} in flight", _fmt(r[f"{k}_ours_per_s"]), _fmt(r[f"{k}_direct_per_s"]), _fmt(r[f"{k}_ratio"], ".3f"),
                     f"{_fmt(r[f'{k}_ours_p50_ms'])}/{_fmt(r[f'{k}_ours_p99_ms'])}",
                     f"{_fmt(r[f'{k}_direct_p50_ms'])}/{_fmt(r[f'{k}_direct_p99_ms'])}",
                     f"{r[f'{k}_ours_creates']}/{r[f'{k}_direct_creates']}"))
    print(_table(rows))
    print(f"(median of {r['rounds']} alternating rounds of {r['round_s']:g} s; latency percentiles over every create;"
          " ratio = ours/direct rate, higher is better)")
    print()
    n, d = r["completion_creates"], r["completion_vim_duration_s"]
    rows = [("completion", "all events s", "first/median s", "all accepted s", "ours/this")]
    rows.append(("ours (event stream)", _fmt(r["completion_ours_s"], ".3f"),
                 f"{_fmt(r['completion_ours_first_end_s'], '.3f')}/{_fmt(r['completion_ours_median_end_s'], '.3f')}",
                 _fmt(r["completion_ours_all_accepted_s"], ".3f"), "1.00"))
    rows.append(("direct (polling the VIM)", _fmt(r["completion_direct_s"], ".3f"),
                 f"{_fmt(r['completion_direct_first_end_s'], '.3f')}/{_fmt(r['completion_direct_median_end_s'], '.3f')}",
                 _fmt(r["completion_direct_all_accepted_s"], ".3f"), _fmt(r["completion_direct_ratio"], ".2f")))
    rows.append(("floor (VIM duration, next poll)", _fmt(r["completion_poll_floor_s"], ".3f"), "", "",
                 _fmt(r["completion_floor_ratio"], ".2f")))
    print(_table(rows))
    print(f"({n} creates at once, {d:g} s of VIM work each; median of {r['completion_rounds']} rounds; polls at"
          f" {r['monitor_interval_s']:g} s, doubling, at most {r['monitor_max_interval_s']:g} s; ours/this: lower is better)")
    print()
    rows = [("CPU ms per create", "region", "cluster", "postgres", "vim-sim", "bench client")]
    for key, label in (("accept_ours", "accept, ours (incl. completion)"), ("accept_direct", "accept, direct"),
                       ("completion_ours", "completion, ours"), ("completion_direct", "completion, direct")):
        rows.append((label, *(_fmt(r.get(f"cpu_ms_per_create_{key}_{who}"), ".2f")
                              for who in ("region", "cluster", "postgres", "vim", "bench"))))
    print(_table(rows))
    overflows = {k: r[f"listen_overflows_{k}"] for k in ("accept_ours", "accept_direct", "completion_ours", "completion_direct")}
    if any(overflows.values()):
        print("connections dropped by a full listen queue (Linux ListenOverflows, whole network namespace; each stalls"
              " ~1 s): " + ", ".join(f"{k} {v}" for k, v in overflows.items()))
    print(f"every create accepted and COMPLETE: {'yes' if r['all_complete'] else 'NO'}"
          f" (ours' accept rounds: {r['accept_statuses_ours']})")
    for message, count in r["errors"][:ERRORS_SHOWN]:
        print(f"  error ({count}x): {message}")
    print(f"start-up: regiond healthy in {r['region_start_s']} s, the cluster registered {r['cluster_ready_s']} s later;"
          f" PostgreSQL left behind: {r['postgres_left_behind']}")
    print(f"machine: {r['cpus']} CPUs, 1-min load average {r['loadavg_1min_before']} before, {r['loadavg_1min_after']} after"
          " (every daemon, PostgreSQL and the client share them; other load skews these figures)")
    print(json.dumps(r), flush=True)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{ROUNDS_QUICK} rounds of {ROUND_S_QUICK} s, {CREATES_QUICK} creates at once, for smoke tests")
    parser.add_argument("--rounds", type=int, help=f"accept rounds each way per concurrency (default {ROUNDS})")
    parser.add_argument("--round-seconds", type=float, help=f"seconds of one accept round (default {ROUND_S})")
    parser.add_argument("--creates", type=int, help=f"creates at once in the completion phase (default {CREATES})")
    parser.add_argument("--completion-rounds", type=int, help=f"completion rounds each way (default {COMPLETION_ROUNDS})")
    parser.add_argument("--vim-duration", type=float, default=VIM_DURATION,
                        help=f"seconds of VIM work per create in the completion phase (default {VIM_DURATION:g})")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up waiting for completions after this (default 120)")
    parser.add_argument("--keep", action="store_true", help="keep the state directory with every daemon's log")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (ROUNDS_QUICK if args.quick else ROUNDS)
    args.round_seconds = args.round_seconds or (ROUND_S_QUICK if args.quick else ROUND_S)
    args.creates = args.creates or (CREATES_QUICK if args.quick else CREATES)
    args.completion_rounds = args.completion_rounds or (COMPLETION_ROUNDS_QUICK if args.quick else COMPLETION_ROUNDS)
    if min(args.rounds, args.creates, args.completion_rounds) < 1 or not (args.round_seconds > 0 and args.vim_duration >= 0
                                                                            and args.timeout > 0):
        parser.error("--rounds, --creates and --completion-rounds must be at least 1, --round-seconds and --timeout above 0")
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False,
    )
    base = Path(tempfile.mkdtemp(prefix="outpost-bench-infra-", dir="/tmp"))
    base.chmod(0o755)  # the embedded PostgreSQL runs as another user when we are root
    daemons = Daemons(ROOT, base)
    bench = Bench(args, daemons)
    ended: dict[str, Any] = {}

    def cleanup() -> None:
        daemons.kill_all(grace=STOP_GRACE)
        ended.update(stop_everything([], [], bench.pgdata))
        if args.keep:
            _progress(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    def finish(results: dict[str, Any]) -> None:
        results["postgres_left_behind"] = ended.get("postgres_left_behind")
        results["state_dir"] = str(base) if args.keep else None
        report(results)

    status = run_parent("infrastructure", bench.run, finish, cleanup)
    if status == 1 and not args.keep:
        _progress("(run with --keep to keep the daemons' logs)")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""
Machines benchmark: a region and a fleet of clusters, each with its own
simulated MAAS, against talking to the same simulated MAAS directly.

Usage::

    python bench/machines.py [--quick] [--clusters N] [--machines M] [--repeats R] [--keep]

It starts one ``twistd -n regiond`` (embedded PostgreSQL, in a fresh
temporary state directory) and N ``twistd -n clusterd``, each running a
simulated MAAS of M machines in its own process (defaults 20 x 500;
``--quick`` 3 x 50), waits until every cluster is registered and the
initial inventory is in the region's database, then measures, R times each
(median):

1. sync: ``POST /api/v1/sync``, until every cluster's ``maas.sync`` event is
   recorded (``GET /api/v1/events?type=maas.sync&after=...``);
2. power: ``POST /api/v1/machines/power-query`` over every machine, checking
   that every machine answered.

The baseline ("direct") is the same work without the region, RPC or the
database: N more simulated MAAS servers, with the same seeds and sizes, run
inside this process, and this process lists all their machines with
`clusterd.maas.client.MAASClient` (all at once), and queries every machine's
power state (`QUERY_CONCURRENCY` in flight per MAAS, as a cluster does).
Ours and direct take turns, round by round.

The table goes to stdout; its last line is one JSON object with every
figure.  Progress goes to stderr.  The exit status is 0 when the benchmark
ran (whatever the figures, failed syncs or unanswered machines included:
they are reported), 1 when it could not run and 2 when interrupted.

Every child is in a process group of its own and is stopped when this script
ends, however it ends: SIGTERM (the region then stops its PostgreSQL), then
SIGKILL.  A small guardian process (this script with ``--guard``, in a
session of its own) does the same if this process is killed outright, and
stops any PostgreSQL the region left running.
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
import json  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Awaitable, Callable  # noqa: E402

MACHINES_DEFAULT, CLUSTERS_DEFAULT = 500, 20
MACHINES_QUICK, CLUSTERS_QUICK = 50, 3
REPEATS = 3
#: The body of the fleet power query.
POWER_TIMEOUT = 120.0
#: Simulated MAAS transition speed, as the integration tests use (it does not
#: change listing or power queries, which the simulator answers at once).
SIM_SPEED = 0.02
#: The simulated MAAS of cluster i (0-based) is seeded SEED_BASE + i, here and in the baseline.
SEED_BASE = 1
#: The region's periodic jobs are pushed out of the way: every sync measured is one we start.
REGION_MAAS_CONFIG = {"sync_interval": 86400, "transitional_interval": 86400}
#: Seconds between polls of the events API while a sync runs.
POLL = 0.05

TWISTD = str(Path(sys.executable).parent / "twistd")


def _progress(message: str) -> None:
    print(f"bench/machines: {message}", file=sys.stderr, flush=True)


# -- processes: shared by the parent and the guardian ----------------------------


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return not os.path.exists("/proc/self")
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (every child runs in a group of its own)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of `pids` is alive or `timeout` passes; return the ones still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _postmaster(pgdata: Path) -> int | None:
    """The pid of a live PostgreSQL server running on `pgdata`, if any."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:
        if Path(os.readlink(f"/proc/{pid}/cwd")) != pgdata.resolve():
            return None  # the pid was reused by something else
    except OSError:
        return None
    return pid


def _children_of(parent: int) -> list[int]:
    """The live child processes of `parent` (PostgreSQL's backends each lead a process group of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == parent and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def stop_everything(clusters: list[int], regions: list[int], pgdata: Path | None) -> dict[str, Any]:
    """
    Stop the clusters, then the region, then make sure no PostgreSQL is left.

    SIGTERM to each daemon (the region stops its embedded PostgreSQL on it),
    then SIGKILL to each one's whole process group.  Returns what it had to do.
    """
    outcome: dict[str, Any] = {"killed": 0, "postgres_left_behind": False}
    for pid in clusters:
        _signal(pid, signal.SIGTERM)
    stubborn = _wait_gone(clusters, 15.0)
    for pid in regions:
        _signal(pid, signal.SIGTERM)
    stubborn += _wait_gone(regions, 60.0)
    for pid in stubborn:
        _signal_group(pid, signal.SIGKILL)
    outcome["killed"] = len(stubborn)
    _wait_gone(stubborn, 10.0)
    for pid in clusters + regions:  # helpers a daemon was running (pg_ctl, psql) go too
        _signal_group(pid, signal.SIGKILL)
    if pgdata is not None:
        postmaster = _postmaster(pgdata)
        if postmaster is not None:
            outcome["postgres_left_behind"] = True
            _signal(postmaster, signal.SIGINT)  # fast shutdown
            if _wait_gone([postmaster], 20.0):
                backends = _children_of(postmaster)
                _signal(postmaster, signal.SIGKILL)
                for pid in backends:
                    _signal(pid, signal.SIGKILL)
                _wait_gone([postmaster, *backends], 10.0)
    return outcome


class _Stop(Exception):
    pass


def guard_main() -> int:
    """
    The guardian: note what the parent tells it on stdin; when stdin closes
    (the parent ended, however) or on SIGTERM/SIGHUP, stop all of it.

    Lines: ``cluster PID``, ``region PID``, ``gone PID`` (reaped by the
    parent: never signal that pid again), ``pgdata PATH``, ``rmtree PATH``.
    """

    def stop(signum: int, frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the parent, which tells us
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    procs: dict[int, str] = {}
    pgdata: Path | None = None
    trees: list[str] = []
    try:
        for line in sys.stdin:
            word, _, arg = line.strip().partition(" ")
            if word in ("cluster", "region"):
                procs[int(arg)] = word
            elif word == "gone":
                procs.pop(int(arg), None)
            elif word == "pgdata":
                pgdata = Path(arg)
            elif word == "rmtree":
                trees.append(arg)
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stop_everything([p for p, r in procs.items() if r == "cluster"], [p for p, r in procs.items() if r == "region"], pgdata)
    for tree in trees:
        shutil.rmtree(tree, ignore_errors=True)
    return 0


# -- the parent: the fleet --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fleet:
    """The children: the guardian, the region, the clusters, and what is needed to stop them."""

    def __init__(self, base: Path, keep: bool) -> None:
        self.base = base
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.pgdata = base / "region" / "postgres" / "data"
        self.cleanup: dict[str, Any] | None = None
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.env = env
        self.guardian = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--guard"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT, env=env,
            start_new_session=True, text=True,
        )
        self._tell(f"pgdata {self.pgdata}")
        if not keep:
            self._tell(f"rmtree {base}")

    def _tell(self, line: str) -> None:
        try:
            self.guardian.stdin.write(line + "\n")  # type: ignore[union-attr]
            self.guardian.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass

    def spawn(self, role: str, name: str, argv: list[str]) -> subprocess.Popen:
        """Start a daemon in a process group of its own, output to ``<name>.log``."""
        with open(self.base / f"{name}.log", "ab") as log:
            child = subprocess.Popen(
                argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.base), start_new_session=True,
            )
        self.children.append((role, child))
        self._tell(f"{role} {child.pid}")
        return child

    def pids(self, role: str) -> list[int]:
        return [c.pid for r, c in self.children if r == role]

    def stop(self) -> dict[str, Any]:
        """Stop every child (see `stop_everything`), reap them, then let the guardian go."""
        self.cleanup = stop_everything(self.pids("cluster"), self.pids("region"), self.pgdata)
        for _, child in self.children:
            try:
                child.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._tell(f"gone {child.pid}")
        self.children.clear()
        if self.guardian.stdin is not None:
            try:
                self.guardian.stdin.close()
            except OSError:
                pass
        try:
            self.guardian.wait(30.0)
        except subprocess.TimeoutExpired:
            pass
        # The guardian removes the state directory; double-check when it could not.
        self.cleanup["postgres_running_after"] = _postmaster(self.pgdata) is not None
        return self.cleanup

    def log_tail(self, name: str, chars: int = 3000) -> str:
        try:
            return (self.base / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- the parent: /proc figures ----------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of `pid` (plus its reaped children's with `children`); 0 if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its live backends and the ones it has reaped."""
    postmaster = _postmaster(pgdata)
    if postmaster is None:
        return 0.0
    return cpu_seconds(postmaster, children=True) + sum(cpu_seconds(p) for p in _children_of(postmaster))


def peak_rss_mib(pid: int) -> float | None:
    """The peak resident set (VmHWM) of `pid` in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def postgres_rss_mib(pgdata: Path) -> float | None:
    """The anonymous resident memory of the PostgreSQL server's processes, summed (shared buffers not counted)."""
    postmaster = _postmaster(pgdata)
    if postmaster is None:
        return None
    total = 0
    for pid in (postmaster, *_children_of(postmaster)):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# -- the parent: measuring ----------------------------------------------------------


def run_benchmark(args: argparse.Namespace, fleet: Fleet) -> Awaitable[dict[str, Any]]:
    # Twisted is imported here so that the guardian never loads it.
    import treq
    import twisted
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, gatherResults
    from twisted.internet.task import deferLater
    from twisted.internet.threads import deferToThread
    from twisted.web.client import HTTPConnectionPool

    from clusterd.machines import QUERY_CONCURRENCY
    from clusterd.maas.client import MAASClient
    from simulators.maas.faults import Durations
    from simulators.maas.web import simulator_url, start_maas_simulator, stop_maas_simulator

    import attrs

    n, m, repeats = args.clusters, args.machines, args.repeats
    total = n * m
    base = fleet.base
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    http_port, rpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    headers: dict[str, list[str]] = {}

    async def sleep(seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def get(path: str, timeout: float = 30.0) -> tuple[int, Any]:
        response = await treq.get(url + path, headers=headers, timeout=timeout, pool=pool)
        return response.code, await response.json()

    async def post(path: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
        response = await treq.post(url + path, json=body, headers=headers, timeout=timeout, pool=pool)
        return response.code, await response.json()

    def check_running(child: subprocess.Popen, name: str) -> None:
        if child.poll() is not None:
            raise RuntimeError(f"{name} exited with status {child.returncode}; its log ends:\n{fleet.log_tail(name)}")

    async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await check()
                if last:
                    return last
            except RuntimeError:
                raise
            except Exception as e:  # not up yet
                last = e
            await sleep(interval)
        raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")

    async def last_sync_event() -> int:
        after = 0
        while True:
            code, body = await get(f"/api/v1/events?type=maas.sync&after={after}&limit=1000")
            if code != 200:
                raise RuntimeError(f"GET /api/v1/events: {code} {body}")
            if not body["items"]:
                return after
            after = body["next_after"]

    async def start_fleet() -> dict[str, float]:
        config = base / "region.yaml"
        config.write_text(json.dumps({
            "state_dir": str(base / "region"),
            "rpc": {"listen": f"tcp:{rpc_port}:interface=127.0.0.1"},
            "http": {"listen": f"tcp:{http_port}:interface=127.0.0.1"},
            "maas": REGION_MAAS_CONFIG,
        }))  # JSON is YAML
        began = time.monotonic()
        _progress("starting regiond (embedded PostgreSQL)")
        region = fleet.spawn("region", "regiond", [TWISTD, "-n", "--pidfile=", "regiond", "--config", str(config)])

        async def healthy() -> bool:
            check_running(region, "regiond")
            response = await treq.get(url + "/api/v1/health", timeout=5, pool=pool)
            await response.content()
            return response.code == 200

        await until(healthy, 120, "regiond to be healthy")
        region_ready = time.monotonic()
        done = await deferToThread(
            subprocess.run,
            [sys.executable, "-m", "outpost", "token", "--config", str(config), "create", "--role", "admin"],
            env=fleet.env, capture_output=True, text=True, timeout=120, cwd=ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"could not create an admin token: {done.stderr.strip()}")
        headers["Authorization"] = [f"Bearer {done.stdout.strip()}"]

        _progress(f"starting {n} clusterd, each with a simulated MAAS of {m} machines")
        clusters_began = time.monotonic()
        secret = base / "region" / "secret"
        clusters = []
        for i in range(n):
            name = f"bench-{i:03d}"
            (base / name).mkdir()
            sim = base / f"{name}.yaml"
            sim.write_text(json.dumps({"simulate": {"maas": {"machines": m, "seed": SEED_BASE + i, "speed": SIM_SPEED}}}))
            clusters.append((name, fleet.spawn("cluster", name, [
                TWISTD, "-n", "--pidfile=", "clusterd", "--config", str(sim), "--region", url + "/", "--name", name,
                "--state-dir", str(base / name), "--secret-file", str(secret),
            ])))

        async def registered() -> bool:
            for name, child in clusters:
                check_running(child, name)
            check_running(region, "regiond")
            code, body = await get("/api/v1/clusters?connected=true&page_size=1000")
            return code == 200 and body["total"] == n

        await until(registered, 60 + 3 * n, f"{n} clusters to register")
        _progress(f"{n} clusters registered; waiting for the initial inventory ({total:,} machines)")

        async def inventory() -> bool:
            check_running(region, "regiond")
            code, body = await get("/api/v1/machines?page_size=1")
            return code == 200 and body["total"] == total

        await until(inventory, 120 + total / 50, f"the initial inventory of {total:,} machines", interval=0.5)
        ready = time.monotonic()
        return {"region_start_s": region_ready - began, "fleet_ready_s": ready - clusters_began}

    # -- resources, per phase --

    def snapshot() -> dict[str, float]:
        return {
            "region": sum(cpu_seconds(p, children=True) for p in fleet.pids("region")),
            "clusters": sum(cpu_seconds(p) for p in fleet.pids("cluster")),
            "postgres": postgres_cpu_seconds(fleet.pgdata),
            "bench": time.process_time(),
        }

    cpu: dict[str, dict[str, float]] = {}

    def charge(phase: str, before: dict[str, float]) -> None:
        after = snapshot()
        totals = cpu.setdefault(phase, {k: 0.0 for k in after})
        for k in after:
            totals[k] += after[k] - before[k]

    # -- ours --

    async def ours_sync() -> dict[str, Any]:
        after = await last_sync_event()
        before = snapshot()
        start = time.perf_counter()
        code, body = await post("/api/v1/sync", {})
        if code != 202:
            raise RuntimeError(f"POST /api/v1/sync: {code} {body}")
        seen: dict[str, dict[str, Any]] = {}
        deadline = start + args.sync_wait
        elapsed: float | None = None
        while True:
            code, page = await get(f"/api/v1/events?type=maas.sync&after={after}&limit=1000")
            if code != 200:
                raise RuntimeError(f"GET /api/v1/events: {code} {page}")
            for event in page["items"]:
                seen[event["cluster_uuid"]] = event
            after = page["next_after"]
            if len(seen) >= n:
                elapsed = time.perf_counter() - start
                break
            if time.perf_counter() > deadline:
                break
            await sleep(POLL)
        charge("sync_ours", before)
        not_ok = {u: e for u, e in seen.items() if e["outcome"] != "ok"}
        return {
            "seconds": elapsed,
            "events": len(seen),
            "failed": len(not_ok) + (n - len(seen)),
            "errors": sorted({f"{e['outcome']}: {e['data'].get('error', '')}" for e in not_ok.values()}),
            "synced": sum(int(e["data"].get("machines", 0)) for e in seen.values() if e["outcome"] == "ok"),
            "region_seconds_max": max((float(e["data"].get("seconds", 0)) for e in seen.values()), default=None),
        }

    async def ours_power() -> dict[str, Any]:
        before = snapshot()
        start = time.perf_counter()
        code, body = await post("/api/v1/machines/power-query", {"timeout": POWER_TIMEOUT}, timeout=POWER_TIMEOUT + 60)
        elapsed = time.perf_counter() - start
        charge("power_ours", before)
        if code != 200:
            return {"seconds": None, "answered": 0, "unanswered": total, "cluster_failures": n,
                    "errors": [f"HTTP {code}: {json.dumps(body)[:300]}"]}
        answered = sum(1 for r in body["results"] if r["state"] in ("on", "off", "unknown") and "error" not in r)
        errors = sorted({f"{f['status']}: {f['error']}" for f in body["failures"]})
        errors += sorted({r.get("error", r["state"]) for r in body["results"] if r["state"] not in ("on", "off", "unknown") or "error" in r})[:5]
        return {"seconds": elapsed, "answered": answered, "unanswered": total - answered,
                "cluster_failures": len(body["failures"]), "errors": errors}

    # -- direct --

    async def start_direct() -> list[tuple[Any, Any, MAASClient]]:
        _progress(f"starting {n} simulated MAAS in this process for the direct baseline")
        durations_base = Durations()
        durations = Durations(**{f.name: getattr(durations_base, f.name) * SIM_SPEED for f in attrs.fields(Durations)})
        sims = []
        for i in range(n):
            api_key = f"{secrets.token_hex(9)}:{secrets.token_hex(9)}:{secrets.token_hex(16)}"
            port, simulator = await start_maas_simulator(
                reactor, api_key=api_key, machines=m, seed=SEED_BASE + i, durations=durations
            )
            sims.append((port, simulator, MAASClient(reactor, simulator_url(port), api_key)))
        return sims

    async def direct_list(sims: list[tuple[Any, Any, MAASClient]]) -> dict[str, Any]:
        before = snapshot()
        start = time.perf_counter()
        results = await DeferredList(
            [Deferred.fromCoroutine(client.list_machines()) for _, _, client in sims], consumeErrors=True
        )
        elapsed = time.perf_counter() - start
        charge("sync_direct", before)
        listed = [r for ok, r in results if ok]
        errors = sorted({r.getErrorMessage() for ok, r in results if not ok})
        return {"seconds": elapsed, "listed": sum(len(x) for x in listed), "failed": len(errors), "errors": errors,
                "ids": [[mm["system_id"] for mm in x] for x in listed] if len(listed) == n else None}

    async def direct_power(sims: list[tuple[Any, Any, MAASClient]], ids: list[list[str]]) -> dict[str, Any]:
        states: list[str] = []
        errors: set[str] = set()

        async def one(client: MAASClient, system_id: str) -> None:
            try:
                states.append(await client.query_power_state(system_id))
            except Exception as e:
                states.append("error")
                errors.add(f"{type(e).__name__}: {e}")

        before = snapshot()
        start = time.perf_counter()
        work = []
        for (_, _, client), system_ids in zip(sims, ids):
            semaphore = DeferredSemaphore(QUERY_CONCURRENCY)
            work += [semaphore.run(lambda c=client, s=s: Deferred.fromCoroutine(one(c, s))) for s in system_ids]
        await gatherResults(work)
        elapsed = time.perf_counter() - start
        charge("power_direct", before)
        answered = sum(1 for s in states if s in ("on", "off", "unknown"))
        return {"seconds": elapsed, "answered": answered, "unanswered": total - answered, "errors": sorted(errors)[:5]}

    # -- the run --

    async def run() -> dict[str, Any]:
        load_before = os.getloadavg()[0]
        started = await start_fleet()
        sims = await start_direct()
        rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in ("sync_ours", "sync_direct", "power_ours", "power_direct")}
        try:
            for i in range(repeats):
                _progress(f"round {i + 1} of {repeats}: sync")
                # Alternate which goes first, so drifting load on the machine hits both alike.
                if i % 2 == 0:
                    rounds["sync_ours"].append(await ours_sync())
                    rounds["sync_direct"].append(await direct_list(sims))
                else:
                    rounds["sync_direct"].append(await direct_list(sims))
                    rounds["sync_ours"].append(await ours_sync())
                ids = rounds["sync_direct"][-1].pop("ids") or [
                    [mm["system_id"] for mm in await client.list_machines()] for _, _, client in sims
                ]
                _progress(f"round {i + 1} of {repeats}: power query")
                if i % 2 == 0:
                    rounds["power_ours"].append(await ours_power())
                    rounds["power_direct"].append(await direct_power(sims, ids))
                else:
                    rounds["power_direct"].append(await direct_power(sims, ids))
                    rounds["power_ours"].append(await ours_power())
        finally:
            for port, simulator, client in sims:
                await client.close()
                await stop_maas_simulator(port, simulator)
            await pool.closeCachedConnections()
        return summarize(args, started, rounds, cpu, load_before, fleet, twisted.__version__)

    return Deferred.fromCoroutine(run())


def _median(values: list[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return statistics.median(done) if done else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarize(
    args: argparse.Namespace, started: dict[str, float], rounds: dict[str, list[dict[str, Any]]],
    cpu: dict[str, dict[str, float]], load_before: float, fleet: Fleet, twisted_version: str,
) -> dict[str, Any]:
    n, m = args.clusters, args.machines
    total = n * m
    r: dict[str, Any] = {"benchmark": "machines", "quick": args.quick, "clusters": n, "machines_per_cluster": m,
                         "machines_total": total, "repeats": args.repeats}
    r["region_start_s"] = _round(started["region_start_s"], 2)
    r["fleet_ready_s"] = _round(started["fleet_ready_s"], 2)
    for figure, ours_key, direct_key in (("sync", "sync_ours", "sync_direct"), ("power", "power_ours", "power_direct")):
        ours = _median([x["seconds"] for x in rounds[ours_key]])
        direct = _median([x["seconds"] for x in rounds[direct_key]])
        r[f"{figure}_ours_s"] = _round(ours)
        r[f"{figure}_direct_s"] = _round(direct)
        r[f"{figure}_ratio"] = _round(ours / direct) if ours and direct else None
        r[f"{figure}_ours_machines_per_s"] = round(total / ours, 1) if ours else None
        r[f"{figure}_direct_machines_per_s"] = round(total / direct, 1) if direct else None
        r[f"{figure}_rounds_ours_s"] = [_round(x["seconds"]) for x in rounds[ours_key]]
        r[f"{figure}_rounds_direct_s"] = [_round(x["seconds"]) for x in rounds[direct_key]]
    sync = rounds["sync_ours"]
    r["sync_complete_rounds"] = sum(1 for x in sync if x["seconds"] is not None and x["failed"] == 0)
    r["sync_failed_clusters"] = sum(x["failed"] for x in sync)
    r["sync_machines_synced_min"] = min((x["synced"] for x in sync), default=0)
    r["sync_region_seconds_max"] = _round(max((x["region_seconds_max"] or 0 for x in sync), default=0))
    r["sync_errors"] = sorted({e for x in sync for e in x["errors"]})[:10]
    r["sync_direct_listed_min"] = min((x["listed"] for x in rounds["sync_direct"]), default=0)
    power = rounds["power_ours"]
    r["power_unanswered_max"] = max((x["unanswered"] for x in power), default=total)
    r["power_cluster_failures"] = sum(x["cluster_failures"] for x in power)
    r["power_errors"] = sorted({e for x in power for e in x["errors"]})[:10]
    r["power_direct_unanswered_max"] = max((x["unanswered"] for x in rounds["power_direct"]), default=total)
    r["all_answered"] = (r["power_unanswered_max"] == 0 and r["power_cluster_failures"] == 0
                         and r["sync_complete_rounds"] == args.repeats and r["sync_machines_synced_min"] == total)
    # CPU seconds per run (summed over the rounds, divided by their number), per party.
    for phase, used in sorted(cpu.items()):
        for party, seconds in used.items():
            if phase.endswith("_direct") and party != "bench":
                continue
            r[f"cpu_{phase}_{party}_s"] = round(seconds / args.repeats, 2)
    region_rss = [peak_rss_mib(p) for p in fleet.pids("region")]
    cluster_rss = [x for x in (peak_rss_mib(p) for p in fleet.pids("cluster")) if x is not None]
    r["region_peak_rss_mib"] = _round(region_rss[0], 1) if region_rss and region_rss[0] is not None else None
    r["cluster_peak_rss_mib_max"] = _round(max(cluster_rss), 1) if cluster_rss else None
    r["clusters_peak_rss_mib_total"] = _round(sum(cluster_rss), 1) if cluster_rss else None
    r["postgres_rss_anon_mib"] = _round(postgres_rss_mib(fleet.pgdata), 1)
    r["loadavg_1min_before"] = round(load_before, 2)
    r["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    r["cpus"] = os.cpu_count()
    r["python"] = sys.version.split()[0]
    r["twisted"] = twisted_version
    return r


def report(r: dict[str, Any]) -> None:
    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    total = r["machines_total"]
    rows = [
        ("figure", "ours s", "direct s", "ratio", "ours machines/s", "direct machines/s"),
        ("inventory sync (all clusters)", secs(r["sync_ours_s"]), secs(r["sync_direct_s"]), ratio(r["sync_ratio"]),
         rate(r["sync_ours_machines_per_s"]), rate(r["sync_direct_machines_per_s"])),
        ("fleet power query", secs(r["power_ours_s"]), secs(r["power_direct_s"]), ratio(r["power_ratio"]),
         rate(r["power_ours_machines_per_s"]), rate(r["power_direct_machines_per_s"])),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    mode = " (--quick)" if r["quick"] else ""
    print(f"Machines benchmark{mode}: {r['clusters']} clusters x {r['machines_per_cluster']} machines = {total:,} machines;"
          f" median of {r['repeats']}")
    print("ours: regiond + clusterd (RPC) + PostgreSQL, each cluster with its own simulated MAAS;")
    print("direct: MAASClient in the benchmark process against simulated MAAS servers in that process.")
    print("\n".join(lines))
    print("ratio: ours time / direct time (lower is better; no target yet, informational)")
    print(f"rounds (s): sync ours {r['sync_rounds_ours_s']}, direct {r['sync_rounds_direct_s']};"
          f" power ours {r['power_rounds_ours_s']}, direct {r['power_rounds_direct_s']}")
    print(f"sync: {r['sync_complete_rounds']}/{r['repeats']} rounds complete, {r['sync_failed_clusters']} cluster syncs failed"
          f" or missing, fewest machines synced in a round {r['sync_machines_synced_min']:,}/{total:,},"
          f" slowest cluster (region's own timing) {r['sync_region_seconds_max']} s")
    for e in r["sync_errors"]:
        print(f"  sync error: {e}")
    print(f"power: at most {r['power_unanswered_max']:,} of {total:,} machines unanswered in a round,"
          f" {r['power_cluster_failures']} cluster failures (direct: {r['power_direct_unanswered_max']:,} unanswered)")
    for e in r["power_errors"]:
        print(f"  power error: {e}")
    print(f"every machine synced and answered: {'yes' if r['all_answered'] else 'NO'}")
    parts = []
    for phase in ("sync_ours", "power_ours"):
        keys = [(p, r.get(f"cpu_{phase}_{p}_s")) for p in ("region", "clusters", "postgres", "bench")]
        parts.append(f"{phase.split('_')[0]} " + ", ".join(f"{p} {v}" for p, v in keys if v is not None))
    print("CPU s per run, ours: " + "; ".join(parts))
    print(f"CPU s per run, direct (one process): sync {r.get('cpu_sync_direct_bench_s')}, power {r.get('cpu_power_direct_bench_s')}")
    print(f"start-up: regiond healthy in {r['region_start_s']} s; {r['clusters']} clusters registered with their"
          f" inventory in {r['fleet_ready_s']} s")
    print(f"memory: regiond peak RSS {r['region_peak_rss_mib']} MiB; clusterd peak RSS max {r['cluster_peak_rss_mib_max']} MiB"
          f" (all {r['clusters_peak_rss_mib_total']} MiB); PostgreSQL anonymous RSS {r['postgres_rss_anon_mib']} MiB")
    print(f"clean-up: {r['children_killed']} children needed SIGKILL; PostgreSQL left running by regiond:"
          f" {'YES' if r['postgres_left_behind'] else 'no'}; running after clean-up: {'YES' if r['postgres_running_after'] else 'no'}")
    print(f"machine: {r['cpus']} CPUs, 1-min load average {r['loadavg_1min_before']} before, {r['loadavg_1min_after']} after"
          " (the whole fleet shares these CPUs with the baseline; other load skews both)")
    print(json.dumps(r, sort_keys=False), flush=True)


def parent_main(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver
    from twisted.python.failure import Failure

    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False,
    )
    base = Path(tempfile.mkdtemp(prefix="outpost-bench-machines-", dir="/tmp"))
    base.chmod(0o755)  # PostgreSQL runs as another user when we are root
    fleet = Fleet(base, args.keep)
    outcome: list[Any] = []
    interrupted: list[bool] = []

    def shutting_down() -> None:
        if not outcome:  # a signal, not us
            interrupted.append(True)

    def started() -> None:
        d = run_benchmark(args, fleet)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    try:
        reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
        reactor.callWhenRunning(started)
        reactor.run()
    finally:
        # Clean-up must finish: a second Ctrl-C or SIGTERM now is ignored (SIGKILL leaves it to the guardian).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if args.keep:
            _progress(f"state directory and logs kept in {base}")
        _progress("stopping the fleet")
        cleanup = fleet.stop()
    if cleanup["postgres_left_behind"]:
        _progress("regiond left its PostgreSQL running; it has been stopped")
    if interrupted or not outcome:
        _progress("interrupted")
        return 2
    if isinstance(outcome[0], Failure):
        _progress("failed")
        outcome[0].printTraceback(file=sys.stderr)
        return 1
    result = outcome[0]
    result["children_killed"] = cleanup["killed"]
    result["postgres_left_behind"] = cleanup["postgres_left_behind"]
    result["postgres_running_after"] = cleanup["postgres_running_after"]
    report(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{CLUSTERS_QUICK} clusters x {MACHINES_QUICK} machines (unless given), for smoke tests")
    parser.add_argument("--clusters", type=int, help=f"clusters to start (default {CLUSTERS_DEFAULT})")
    parser.add_argument("--machines", type=int, help=f"machines per cluster's simulated MAAS (default {MACHINES_DEFAULT})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"rounds of each figure (default {REPEATS})")
    parser.add_argument("--sync-wait", type=float, default=300.0,
                        help="seconds to wait for a sync's events before calling it incomplete (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the state directory (daemon logs) instead of removing it")
    parser.add_argument("--guard", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.guard:
        return guard_main()
    if args.clusters is None:
        args.clusters = CLUSTERS_QUICK if args.quick else CLUSTERS_DEFAULT
    if args.machines is None:
        args.machines = MACHINES_QUICK if args.quick else MACHINES_DEFAULT
    if args.clusters < 1 or args.machines < 1 or args.repeats < 1:
        parser.error("--clusters, --machines and --repeats must be at least 1")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())

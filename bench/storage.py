"""
Storage resources benchmark: our ``GET /api/storage-resources/`` against
the CSCS proxy's own FastAPI app (waldur-site-agent-cscs-hpc-storage 0.7.9
under uvicorn), on the same simulated Waldur, in one run.

Usage::

    python bench/storage.py [--quick] [--resources N]

Children (all spawned by this script, all ended when it ends, also on
errors and signals): one Waldur simulator with N resources (default 5,000),
one HPC User API simulator, our server (the region's router and storage
routes, with an in-memory token check where a region checks PostgreSQL) and
the peer (uvicorn, auth disabled — it would need Keycloak).  Both servers
talk to the same simulators, with the same configuration and GIDs from the
same HPC User API.

Figures, ours and the peer's, taking turns in alternating rounds:

1. ``page_size=500``: requests per second of
   ``/api/storage-resources/?page_size=500``, one request at a time (Waldur
   gives at most 300 resources a page, so each answer covers 300 resources);
2. the same with 4 requests in flight;
3. a full listing: seconds to walk every page (``page=1..``) with
   ``page_size=500`` until all N resources have been covered.

Server CPU time per request (from /proc) is reported too.  The table goes
to stdout; its last line is one JSON object with every figure.  Exit status
0 whether or not ours is faster (it is a measurement), 1 on errors, 2 when
interrupted.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Awaitable, Callable  # noqa: E402

import treq  # noqa: E402
import twisted  # noqa: E402
import yaml  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from bench._harness import Children, ParentWatch, cpu_seconds, run_parent, wait_for, write_port_file  # noqa: E402
from twisted.internet import defer, reactor, stdio  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.endpoints import serverFromString  # noqa: E402
from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402
from twisted.web.server import Site  # noqa: E402

OURS, PEER = "ours", "peer"
FLAVOURS = (OURS, PEER)
WALDUR_TOKEN = "bench-waldur-token"
CLIENT_ID, CLIENT_SECRET = "bench", "bench-hpc-secret"
API_TOKEN = "opt_bench-read-token"
SYSTEMS = {"capstor": "capstor", "vast": "vast", "iopsstor": "iopsstor"}
PATH = "/api/storage-resources/?page_size=500"
IN_FLIGHT = 4
WALDUR_PAGE = 300  # Waldur's max_page_size

#: Our children; the peer's uvicorn does not watch its stdin, so it is spawned as foreign (SIGTERM at once).
_children = Children(ROOT)


# -- children ----------------------------------------------------------------------------------


def _storage_config(waldur_url: str, hpc_url: str, token_url: str) -> dict[str, Any]:
    return {
        "waldur_api_url": waldur_url,
        "waldur_api_token": WALDUR_TOKEN,
        "storage_systems": SYSTEMS,
        "backend_settings": {"storage_file_system": "lustre", "inode_soft_coefficient": 1.33, "inode_hard_coefficient": 2.0},
        "backend_components": {"storage": {"measured_unit": "TB", "accounting_type": "limit", "label": "Storage", "unit_factor": 1}},
        "hpc_user_api": {"api_url": hpc_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "oidc_token_url": token_url, "oidc_scope": "openid"},
    }


async def _serve(args: argparse.Namespace) -> None:
    if args.serve == "waldur":
        from simulators.waldur import start_waldur_simulator

        port, sim = await start_waldur_simulator(reactor, token=WALDUR_TOKEN, resources=args.resources, seed=1)
        sim.record_requests = False
    elif args.serve == "hpc":
        from simulators.hpcuser import start_hpcuser_simulator

        port, _ = await start_hpcuser_simulator(reactor, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    else:
        from regiond.api.router import ApiResource
        from regiond.storage import StorageService, parse_storage_config

        problems: list[str] = []
        with open(args.config) as f:  # a file, not argv: it holds the Waldur token and the client secret
            config = parse_storage_config(json.load(f), problems)
        if config is None:
            raise RuntimeError(f"bad storage config: {problems}")

        async def authenticate(token: str) -> dict[str, Any] | None:
            return {"id": 1, "name": "bench", "role": "read"} if token == API_TOKEN else None

        service = StorageService(reactor, config)
        site = Site(ApiResource(service.routes(), authenticate))
        site.noisy = False
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    write_port_file(args.port_file, port.getHost().port)


def child_main(args: argparse.Namespace) -> int:
    stdio.StandardIO(ParentWatch())
    failed: list[Failure] = []

    def started() -> None:
        d = Deferred.fromCoroutine(_serve(args))

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


# -- the parent: children ---------------------------------------------------------------------


async def _start_child(kind: str, workdir: str, *extra: str) -> tuple[int, subprocess.Popen[bytes]]:
    port_file = os.path.join(workdir, f"{kind}.port")
    child = _children.spawn([sys.executable, os.path.abspath(__file__), "--serve", kind, "--port-file", port_file, *extra])

    async def ready() -> bool:
        return os.path.exists(port_file)

    await wait_for(ready, f"the {kind} server", child)
    with open(port_file) as f:
        return int(f.read()), child


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_peer(workdir: str, storage: dict[str, Any], http: HTTPClient) -> tuple[int, subprocess.Popen[bytes]]:
    config_path = os.path.join(workdir, "peer.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(storage, f)
    env = _children.env()
    env.update(WALDUR_CSCS_STORAGE_PROXY_CONFIG_PATH=config_path, DISABLE_AUTH="true")
    port = _free_port()
    child = _children.spawn(
        [sys.executable, "-m", "uvicorn", "waldur_site_agent_cscs_hpc_storage.waldur_storage_proxy.main:app",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env,
        foreign=True,
    )

    async def ready() -> bool:
        try:
            response = await http.get(f"http://127.0.0.1:{port}/api/storage-resources/?page_size=1", timeout=5)
            await treq.content(response)
            return response.code == 200
        except Exception:
            return False

    await wait_for(ready, "the peer (uvicorn)", child)
    return port, child


# -- the parent: measuring ---------------------------------------------------------------------


async def _get(http: HTTPClient, url: str) -> bytes:
    response = await http.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=120)
    body = await treq.content(response)
    if response.code != 200:
        raise RuntimeError(f"GET {url}: HTTP {response.code}: {body[:200]!r}")
    return body


async def _throughput(http: HTTPClient, origin: str, seconds: float, in_flight: int) -> tuple[int, float]:
    """Requests completed in about `seconds` with `in_flight` outstanding; (count, elapsed)."""
    count = 0
    start = time.perf_counter()
    end = start + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < end:
            await _get(http, origin + PATH)
            count += 1

    await defer.gatherResults([Deferred.fromCoroutine(worker()) for _ in range(in_flight)], consumeErrors=True)
    return count, time.perf_counter() - start


async def _full_listing(http: HTTPClient, origin: str, resources: int) -> float:
    pages = max(1, math.ceil(resources / WALDUR_PAGE))
    start = time.perf_counter()
    for page in range(1, pages + 1):
        await _get(http, f"{origin}{PATH}&page={page}")
    return time.perf_counter() - start


async def _alternate(
    measure: Callable[[str], Awaitable[tuple[int, float]]], rounds: int, pids: dict[str, int]
) -> tuple[dict[str, float], dict[str, float | None]]:
    rates: dict[str, list[float]] = {f: [] for f in FLAVOURS}
    cpu: dict[str, list[float]] = {f: [0, 0.0] for f in FLAVOURS}
    known = True
    for i in range(rounds):
        for flavour in FLAVOURS if i % 2 == 0 else tuple(reversed(FLAVOURS)):
            before = cpu_seconds(pids[flavour])
            count, elapsed = await measure(flavour)
            after = cpu_seconds(pids[flavour])
            rates[flavour].append(count / elapsed)
            if before is None or after is None:
                known = False
            else:
                cpu[flavour][0] += count
                cpu[flavour][1] += after - before
    per_request = {f: (used / n * 1000 if known and n else None) for f, (n, used) in cpu.items()}
    return {f: statistics.median(r) for f, r in rates.items()}, per_request


def _entry_counts(body: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in json.loads(body)["resources"]:
        kind = entry["target"]["targetType"]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


async def run(quick: bool, resources: int) -> dict[str, Any]:
    duration = 0.4 if quick else 4.0
    rounds = 2 if quick else 6
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = IN_FLIGHT + 2
    http = HTTPClient(Agent(reactor, pool=pool))
    results: dict[str, Any] = {"benchmark": "storage", "quick": quick, "resources": resources}
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="outpost-bench-storage-") as workdir:
            _progress(f"starting the simulators ({resources} Waldur resources)")
            waldur_port, _ = await _start_child("waldur", workdir, "--resources", str(resources))
            hpc_port, _ = await _start_child("hpc", workdir)
            waldur_url = f"http://127.0.0.1:{waldur_port}/api/"
            hpc_url = f"http://127.0.0.1:{hpc_port}"
            storage = _storage_config(waldur_url, hpc_url, hpc_url + "/oauth2/token")
            _progress("starting our server and the peer (uvicorn)")
            ours_config = os.path.join(workdir, "ours.json")
            with open(ours_config, "w") as f:
                json.dump(storage, f)
            ours_port, ours = await _start_child("ours", workdir, "--config", ours_config)
            peer_port, peer = await _start_peer(workdir, storage, http)
            origins = {OURS: f"http://127.0.0.1:{ours_port}", PEER: f"http://127.0.0.1:{peer_port}"}
            pids = {OURS: ours.pid, PEER: peer.pid}

            _progress("warming up (GIDs are cached on first sight)")
            pages = max(1, math.ceil(resources / WALDUR_PAGE))
            for flavour in FLAVOURS:
                for page in range(1, pages + 1):
                    await _get(http, f"{origins[flavour]}{PATH}&page={page}")
            bodies = {f: await _get(http, origins[f] + PATH) for f in FLAVOURS}
            for f in FLAVOURS:
                results[f"entries_{f}"] = _entry_counts(bodies[f])
                results[f"bytes_{f}"] = len(bodies[f])

            _progress(f"page_size=500, one at a time: {duration:g}s each in {rounds} alternating rounds")
            seq, seq_cpu = await _alternate(lambda f: _throughput(http, origins[f], duration / rounds, 1), rounds, pids)
            _progress(f"page_size=500, {IN_FLIGHT} in flight")
            par, par_cpu = await _alternate(lambda f: _throughput(http, origins[f], duration / rounds, IN_FLIGHT), rounds, pids)
            _progress(f"full listing: {pages} pages")
            walks: dict[str, list[float]] = {f: [] for f in FLAVOURS}
            for i in range(max(1, rounds // 2)):
                for flavour in FLAVOURS if i % 2 == 0 else tuple(reversed(FLAVOURS)):
                    walks[flavour].append(await _full_listing(http, origins[flavour], resources))
    finally:
        await pool.closeCachedConnections()

    for name, figures, cpu in (("sequential", seq, seq_cpu), ("concurrent", par, par_cpu)):
        results[f"{name}_rps_ours"] = round(figures[OURS], 2)
        results[f"{name}_rps_peer"] = round(figures[PEER], 2)
        results[f"{name}_ratio"] = round(figures[OURS] / figures[PEER], 3)
        results[f"{name}_cpu_ms_per_request_ours"] = None if cpu[OURS] is None else round(cpu[OURS], 2)
        results[f"{name}_cpu_ms_per_request_peer"] = None if cpu[PEER] is None else round(cpu[PEER], 2)
    walk = {f: statistics.median(w) for f, w in walks.items()}
    results["full_listing_pages"] = pages
    results["full_listing_s_ours"] = round(walk[OURS], 3)
    results["full_listing_s_peer"] = round(walk[PEER], 3)
    results["full_listing_ratio"] = round(walk[OURS] / walk[PEER], 3)
    results["loadavg_1min_before"] = round(load_before, 2)
    results["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count()
    results["python"] = sys.version.split()[0]
    results["twisted"] = twisted.__version__
    return results


def _progress(message: str) -> None:
    print(f"bench/storage: {message}", file=sys.stderr, flush=True)


def report(r: dict[str, Any]) -> None:
    rows = [
        ("metric", "ours", "peer", "ours/peer"),
        ("req/s, page_size=500, 1 in flight", f"{r['sequential_rps_ours']:.1f}", f"{r['sequential_rps_peer']:.1f}", f"{r['sequential_ratio']:.2f}x"),
        (f"req/s, page_size=500, {IN_FLIGHT} in flight", f"{r['concurrent_rps_ours']:.1f}", f"{r['concurrent_rps_peer']:.1f}", f"{r['concurrent_ratio']:.2f}x"),
        (f"full listing, {r['full_listing_pages']} pages (s)", f"{r['full_listing_s_ours']:.2f}", f"{r['full_listing_s_peer']:.2f}", f"{r['full_listing_ratio']:.2f}x"),
    ]
    for name in ("sequential", "concurrent"):
        if r[f"{name}_cpu_ms_per_request_ours"] is not None:
            rows.append((f"server CPU ms/request ({name})", f"{r[f'{name}_cpu_ms_per_request_ours']:.1f}",
                         f"{r[f'{name}_cpu_ms_per_request_peer']:.1f}",
                         f"{r[f'{name}_cpu_ms_per_request_ours'] / r[f'{name}_cpu_ms_per_request_peer']:.2f}x"))
    order = ("tenant", "customer", "project", "user")
    entries = {f: ", ".join(f"{r[f'entries_{f}'].get(k, 0)} {k}" for k in order) for f in FLAVOURS}
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    mode = " (--quick)" if r["quick"] else ""
    print(f"Storage resources benchmark{mode}: GET {PATH} over {r['resources']:,} simulated Waldur resources")
    print("ours: the region's router + storage routes (Twisted); peer: waldur-site-agent-cscs-hpc-storage 0.7.9 (FastAPI, uvicorn)")
    print("\n".join(lines))
    for f in FLAVOURS:
        print(f"one answer, {f}: {entries[f]} entries, {r[f'bytes_{f}']:,} bytes")
    print("ratio: ours/peer requests per second (higher is better); for the full listing and CPU, ours/peer time (lower is better).")
    print("Waldur caps pages at 300, so each answer covers 300 resources; the peer reads only 10 customers per offering,")
    print("so its answers have fewer customer entries than ours.")
    print(f"machine: {r['cpus']} CPUs, 1-min load average {r['loadavg_1min_before']} before, {r['loadavg_1min_after']} after")
    print(json.dumps(r), flush=True)


def parent_main(quick: bool, resources: int) -> int:
    return run_parent("storage", lambda: run(quick, resources), report, _children.kill_all)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs for smoke tests (about 1 s a figure)")
    parser.add_argument("--resources", type=int, default=5000, help="Waldur resources to simulate (default 5000)")
    parser.add_argument("--serve", choices=("waldur", "hpc", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)])],
        redirectStandardIO=False,
    )
    if args.serve:
        if not args.port_file or args.serve == "ours" and not args.config:
            parser.error("--serve needs --port-file (and ours, --config)")
        return child_main(args)
    if args.resources < 1:
        parser.error("--resources must be at least 1")
    return parent_main(args.quick, args.resources)


if __name__ == "__main__":
    sys.exit(main())

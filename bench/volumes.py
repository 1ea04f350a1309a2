"""
Volumes benchmark: many migration jobs' volumes prepared and cleaned up at
once through `VolumeLifecycle`, against the critical path the CloudStack
latency allows.

Usage::

    python bench/volumes.py [--quick] [--jobs 50] [--disks 4] [--job-latency 1.0]

Everything runs in this one process, on one reactor: the CloudStack
simulator (`simulators.cloudstack`, served over loopback HTTP, every async
job taking ``--job-latency`` seconds), a `CloudStackClient` talking to it,
a `SimulatedMounter` whose block devices the simulator's attach/detach hooks
make appear and disappear (as ``tests/test_volume_lifecycle.py`` wires
them), and one `VolumeLifecycle` over both.  The simulator's CPU work
therefore shares the benchmark's CPU; the table says so.

What is measured (wall time, after an unmeasured warm-up job of one disk):

1. prepare: N jobs x D disks, every job's ``prepare`` started at once, until
   the last one has answered;
2. cleanup: every job's ``cleanup(delete=True)`` started at once, until the
   last one has answered.

The baseline is the critical path the simulator's own latency implies, as if
everything else took no time: a disk's prepare waits for three async jobs
in a row (createVolume, then createTags, then attachVolume: ``3 x
latency``); its cleanup waits for one (detachVolume; deleteVolume is
synchronous: ``1 x latency``).  The "poll floor" is the same path with each
job's end seen only at the client's first ``queryAsyncJobResult`` poll after
it (the `PollPolicy` here: first poll after 0.1 s, then x1.5, at most
0.5 s): what a perfectly concurrent client with this policy can reach.

Correctness is checked too: after prepare, every job ``ok``, every volume
attached to the appliance VM and mounted at its mount point; after cleanup,
every job ``ok`` and no volume, block device or mount left.  Failures are
reported (with their distinct error messages), not raised.

The table goes to stdout; its last line is one JSON object with every
figure.  The exit status is 0 when the benchmark ran, whether or not the
target was met or every check passed (the figures say so), 1 when it could
not run (or a phase did not end within ``--timeout``) and 2 when
interrupted.  There are no child processes; the simulator's listening port
and the client's connections are closed however the run ends.
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
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, DeferredList  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure  # noqa: E402

from clusterd.cloudstack.client import CloudStackClient  # noqa: E402
from clusterd.cloudstack.retry import PollPolicy  # noqa: E402
from clusterd.site import plug_devices  # noqa: E402
from clusterd.volumes import SimulatedMounter  # noqa: E402
from clusterd.volumes.lifecycle import Settings, VolumeLifecycle  # noqa: E402
from simulators.cloudstack import (  # noqa: E402
    Limits,
    simulator_url,
    start_cloudstack_simulator,
    stop_cloudstack_simulator,
)

KEY, SECRET = "bench-volumes-api-key", "bench-volumes-secret-key"
JOBS_DEFAULT, DISKS_DEFAULT, LATENCY_DEFAULT = 50, 4, 1.0
JOBS_QUICK, DISKS_QUICK, LATENCY_QUICK = 5, 2, 0.2
#: Async jobs in a row on one disk's path: createVolume, createTags, attachVolume / detachVolume.
PREPARE_JOBS, CLEANUP_JOBS = 3, 1
POLL = PollPolicy(initial=0.1, factor=1.5, cap=0.5)
#: Target: each phase's wall time at most this many times its baseline (k x latency).
TARGET = 1.5
#: The simulator's default Limits.max_device_id (device ids per VM); raised here to fit N x D disks.
SIM_DEFAULT_MAX_DEVICE_ID = Limits().max_device_id
#: How long the lifecycle waits for a block device to appear or go.
DEVICE_TIMEOUT = 30.0
MOUNT_ROOT = "/mnt/migration"
#: Distinct error messages shown in the table (all are counted).
ERRORS_SHOWN = 8


def _progress(message: str) -> None:
    print(f"bench/volumes: {message}", file=sys.stderr, flush=True)


def listen_overflows() -> int | None:
    """Linux's count of connections dropped because a listen queue was full (this network namespace), or None."""
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0][1:], lines[1][1:]))["ListenOverflows"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def _overflows_since(before: int | None) -> int | None:
    after = listen_overflows()
    return None if before is None or after is None else after - before


def first_poll_after(latency: float, poll: PollPolicy = POLL) -> float:
    """When the client's first queryAsyncJobResult at or after `latency` seconds goes out."""
    at = 0.0
    for delay in poll.delays():
        at += delay
        if at >= latency - 1e-9:
            return at
    raise AssertionError("unreachable")  # pragma: no cover


class Recorder:
    """The lifecycle's state reports: counted, the last per disk kept."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.last: dict[tuple[str, str], str] = {}

    async def __call__(self, job: str, disk: str, state: str, details: dict[str, Any]) -> None:
        self.counts[state] += 1
        self.last[(job, disk)] = state


class Traffic:
    """API requests served by the simulator (per command) and TCP connections it accepted."""

    def __init__(self, sim: Any) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.connections = 0
        _, factory = sim.listeners[0]
        resource = factory.wrappedFactory.resource
        render, build = resource.render, factory.buildProtocol

        def counted_render(request: Any) -> Any:
            command = (request.args or {}).get(b"command", [b"?"])[0].decode("utf-8", "replace")
            self.requests[command] += 1
            return render(request)

        def counted_build(addr: Any) -> Any:
            self.connections += 1
            return build(addr)

        resource.render = counted_render  # instance attributes: the bench's own objects only
        factory.buildProtocol = counted_build

    def snapshot(self) -> tuple[dict[str, int], int]:
        return dict(self.requests), self.connections


def _diff(after: tuple[dict[str, int], int], before: tuple[dict[str, int], int]) -> tuple[dict[str, int], int]:
    requests = {k: v - before[0].get(k, 0) for k, v in sorted(after[0].items()) if v - before[0].get(k, 0)}
    return requests, after[1] - before[1]


async def _timed_all(calls: list[Any]) -> tuple[float, list[Any], list[float]]:
    """Start every coroutine at once; the wall time until the last ends, results (or Failures), each one's end."""
    ends: list[float] = [0.0] * len(calls)
    start = time.monotonic()

    def ended(result: Any, i: int) -> Any:
        ends[i] = time.monotonic() - start
        return result

    runs = [Deferred.fromCoroutine(c).addBoth(ended, i) for i, c in enumerate(calls)]
    results = await DeferredList(runs, consumeErrors=True)
    wall = time.monotonic() - start
    return wall, [r for _, r in results], ends


def _outcome_errors(results: list[Any]) -> tuple[int, list[str]]:
    """How many jobs did not end ``ok``, and their error messages."""
    failed, errors = 0, []
    for r in results:
        if isinstance(r, Failure):
            failed += 1
            errors.append(f"{r.type.__name__}: {r.getErrorMessage()}")
        elif r.get("outcome") != "ok":
            failed += 1
            errors.extend(e.strip() for e in str(r.get("error", "")).split(";") if e.strip())
    return failed, errors


def _distinct(errors: list[str]) -> list[tuple[str, int]]:
    return collections.Counter(errors).most_common()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    jobs, disks, latency = args.jobs, args.disks, args.job_latency
    total = jobs * disks
    # Device ids 0 (root) and 3 (CD-ROM) are never given to data disks; one more for the warm-up disk.
    max_device_id = max(SIM_DEFAULT_MAX_DEVICE_ID, total + 3)
    limits = Limits(max_volumes=None, capacity_gb=None, max_device_id=max_device_id)
    load_before = os.getloadavg()[0]
    port, sim = await start_cloudstack_simulator(reactor, api_key=KEY, secret_key=SECRET, job_duration=latency, limits=limits)
    client = CloudStackClient(reactor, simulator_url(port), KEY, SECRET, poll=POLL)
    try:
        traffic = Traffic(sim)
        mounter = SimulatedMounter(reactor)
        plug_devices(sim, mounter)
        zone = (await client.list_zones())[0]["id"]
        offering = next(o["id"] for o in await client.list_disk_offerings() if o.get("iscustomized"))
        report = Recorder()
        settings = Settings(zone, sim.appliance.id, offering, MOUNT_ROOT)
        lifecycle = VolumeLifecycle(client, mounter, settings, report, device_timeout=DEVICE_TIMEOUT)
        job_ids = [f"bench-{j:03d}" for j in range(jobs)]
        disk_list = [{"name": f"disk-{i}", "size_gb": 10 + i} for i in range(disks)]

        _progress("warm-up: one job of one disk")
        warm = await lifecycle.prepare("bench-warmup", disk_list[:1])
        warm_clean = await lifecycle.cleanup("bench-warmup", delete=True)
        if warm["outcome"] != "ok" or warm_clean["outcome"] != "ok":
            raise RuntimeError(f"the warm-up job failed: {warm['error'] or warm_clean['error']}")

        # -- prepare ---------------------------------------------------------
        _progress(f"prepare: {jobs} jobs x {disks} disks at once, {latency:g} s a CloudStack job")
        before, cpu0, overflows0 = traffic.snapshot(), time.process_time(), listen_overflows()
        prepare_s, prepare_results, prepare_ends = await _with_timeout(
            _timed_all([lifecycle.prepare(j, disk_list) for j in job_ids]), args.timeout, "prepare")
        cpu_prepare = time.process_time() - cpu0
        prepare_overflows = _overflows_since(overflows0)
        prepare_requests, prepare_connections = _diff(traffic.snapshot(), before)
        prepare_failed, prepare_errors = _outcome_errors(prepare_results)

        attached_ok = mounted = 0
        for j in job_ids:
            for v in await lifecycle.volumes_of(j):
                attached_ok += v.get("virtualmachineid") == sim.appliance.id and v.get("state") == "Ready"
            for d in disk_list:
                mounted += await mounter.is_mounted(lifecycle.mountpoint(j, d["name"]))
        devices_after_prepare = len(mounter.device_names)

        # -- cleanup ---------------------------------------------------------
        _progress("cleanup: every job's cleanup(delete=True) at once")
        before, cpu0, overflows0 = traffic.snapshot(), time.process_time(), listen_overflows()
        cleanup_s, cleanup_results, cleanup_ends = await _with_timeout(
            _timed_all([lifecycle.cleanup(j, delete=True) for j in job_ids]), args.timeout, "cleanup")
        cpu_cleanup = time.process_time() - cpu0
        cleanup_overflows = _overflows_since(overflows0)
        cleanup_requests, cleanup_connections = _diff(traffic.snapshot(), before)
        cleanup_failed, cleanup_errors = _outcome_errors(cleanup_results)

        volumes_left = len(sim.data_volumes())
        devices_left = len(mounter.device_names)
        mounts_left = 0
        for j in job_ids:
            for d in disk_list:
                mounts_left += await mounter.is_mounted(lifecycle.mountpoint(j, d["name"]))
        deleted = sum(1 for (j, _), s in report.last.items() if j != "bench-warmup" and s == "Deleted")
    finally:
        await client.close()
        await stop_cloudstack_simulator(port, sim)

    prepare_base, cleanup_base = PREPARE_JOBS * latency, CLEANUP_JOBS * latency
    prepare_floor, cleanup_floor = PREPARE_JOBS * first_poll_after(latency), CLEANUP_JOBS * first_poll_after(latency)
    prepare_ratio, cleanup_ratio = prepare_s / prepare_base, cleanup_s / cleanup_base
    all_ok = (
        prepare_failed == 0 and cleanup_failed == 0 and attached_ok == total and mounted == total
        and devices_after_prepare == total and volumes_left == 0 and devices_left == 0 and mounts_left == 0
        and deleted == total
    )
    return {
        "benchmark": "volumes",
        "quick": args.quick,
        "simulator_in_process": True,
        "jobs": jobs,
        "disks_per_job": disks,
        "volumes_total": total,
        "job_latency_s": latency,
        "poll_initial_s": POLL.initial,
        "poll_factor": POLL.factor,
        "poll_cap_s": POLL.cap,
        "max_device_id": max_device_id,
        "max_device_id_default": SIM_DEFAULT_MAX_DEVICE_ID,
        "prepare_s": round(prepare_s, 3),
        "prepare_baseline_s": round(prepare_base, 3),
        "prepare_ratio": round(prepare_ratio, 2),
        "prepare_poll_floor_s": round(prepare_floor, 3),
        "prepare_floor_ratio": round(prepare_s / prepare_floor, 2),
        "prepare_job_end_min_s": round(min(prepare_ends), 3),
        "prepare_job_end_median_s": round(statistics.median(prepare_ends), 3),
        "cleanup_s": round(cleanup_s, 3),
        "cleanup_baseline_s": round(cleanup_base, 3),
        "cleanup_ratio": round(cleanup_ratio, 2),
        "cleanup_poll_floor_s": round(cleanup_floor, 3),
        "cleanup_floor_ratio": round(cleanup_s / cleanup_floor, 2),
        "cleanup_job_end_min_s": round(min(cleanup_ends), 3),
        "cleanup_job_end_median_s": round(statistics.median(cleanup_ends), 3),
        "target_ratio": TARGET,
        "prepare_target_met": prepare_ratio <= TARGET,
        "cleanup_target_met": cleanup_ratio <= TARGET,
        "targets_met": prepare_ratio <= TARGET and cleanup_ratio <= TARGET,
        "prepare_failed_jobs": prepare_failed,
        "cleanup_failed_jobs": cleanup_failed,
        "attached_after_prepare": attached_ok,
        "mounted_after_prepare": mounted,
        "devices_after_prepare": devices_after_prepare,
        "volumes_left_after_cleanup": volumes_left,
        "devices_left_after_cleanup": devices_left,
        "mounts_left_after_cleanup": mounts_left,
        "deleted_reported": deleted,
        "all_ok": all_ok,
        "prepare_errors": [[m, n] for m, n in _distinct(prepare_errors)],
        "cleanup_errors": [[m, n] for m, n in _distinct(cleanup_errors)],
        "prepare_requests": prepare_requests,
        "cleanup_requests": cleanup_requests,
        "prepare_connections": prepare_connections,
        "cleanup_connections": cleanup_connections,
        "prepare_listen_overflows": prepare_overflows,
        "cleanup_listen_overflows": cleanup_overflows,
        "cpu_prepare_s": round(cpu_prepare, 2),
        "cpu_cleanup_s": round(cpu_cleanup, 2),
        "states_reported": dict(sorted(report.counts.items())),
        "cpus": os.cpu_count(),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


async def _with_timeout(work: Any, timeout: float, phase: str) -> Any:
    d = Deferred.fromCoroutine(work)
    timer = reactor.callLater(timeout, d.cancel)
    try:
        return await d
    except Exception as e:
        if not timer.active():
            raise RuntimeError(f"the {phase} phase did not end within {timeout:g} s (--timeout)") from e
        raise
    finally:
        if timer.active():
            timer.cancel()


def report(r: dict[str, Any]) -> None:
    lat = r["job_latency_s"]
    rows = [
        ("phase", "ours s", "baseline s", "ratio", "poll floor s", "ours/floor", "job ends min/median s", "target"),
    ]
    for phase, k in (("prepare", PREPARE_JOBS), ("cleanup", CLEANUP_JOBS)):
        rows.append((
            phase,
            f"{r[f'{phase}_s']:.3f}",
            f"{r[f'{phase}_baseline_s']:.3f} ({k}x{lat:g})",
            f"{r[f'{phase}_ratio']:.2f}",
            f"{r[f'{phase}_poll_floor_s']:.3f}",
            f"{r[f'{phase}_floor_ratio']:.2f}",
            f"{r[f'{phase}_job_end_min_s']:.3f}/{r[f'{phase}_job_end_median_s']:.3f}",
            ("met" if r[f"{phase}_target_met"] else "MISSED") + f" (<= {r['target_ratio']}x)",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i and i < 6 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    mode = " (--quick)" if r["quick"] else ""
    print(f"Volumes benchmark{mode}: {r['jobs']} jobs x {r['disks_per_job']} disks = {r['volumes_total']} volumes,"
          f" every job at once; each CloudStack async job takes {lat:g} s")
    print("The CloudStack simulator and the simulated mounter run IN THIS PROCESS, on the same reactor and CPU.")
    print("\n".join(lines))
    print(f"baseline: the simulator's latency on one disk's path: prepare = createVolume + createTags + attachVolume"
          f" = 3 x {lat:g} s; cleanup = detachVolume = 1 x {lat:g} s (deleteVolume is synchronous).")
    print(f"poll floor: the same, each job's end seen at the client's first poll after it (PollPolicy initial"
          f" {r['poll_initial_s']} s, x{r['poll_factor']}, cap {r['poll_cap_s']} s).")
    raised = f"raised from {r['max_device_id_default']}" if r["max_device_id"] > r["max_device_id_default"] else "the default"
    print(f"simulator Limits: no volume or capacity limit; max_device_id {r['max_device_id']} ({raised}) so that all {r['volumes_total']} disks fit on the one appliance VM"
          " (real KVM: ~26 virtio disks per VM).")
    for phase in ("prepare", "cleanup"):
        reqs = r[f"{phase}_requests"]
        shown = ", ".join(f"{k} {v}" for k, v in sorted(reqs.items(), key=lambda kv: -kv[1]))
        print(f"{phase}: {sum(reqs.values())} API requests ({shown}); {r[f'{phase}_connections']} TCP connections"
              f" opened; {r[f'cpu_{phase}_s']} CPU s (client and simulator together)")
        overflows = r[f"{phase}_listen_overflows"]
        if overflows:
            print(f"  {overflows} connections dropped by a full listen queue meanwhile (Linux ListenOverflows, whole"
                  " network namespace): each one stalls its request ~1 s (TCP retransmit)")
    print(f"after prepare: {r['prepare_failed_jobs']} jobs failed; {r['attached_after_prepare']}/{r['volumes_total']}"
          f" volumes attached, {r['mounted_after_prepare']}/{r['volumes_total']} mounted,"
          f" {r['devices_after_prepare']} block devices")
    print(f"after cleanup: {r['cleanup_failed_jobs']} jobs failed; {r['volumes_left_after_cleanup']} volumes,"
          f" {r['devices_left_after_cleanup']} block devices, {r['mounts_left_after_cleanup']} mounts left;"
          f" {r['deleted_reported']}/{r['volumes_total']} reported Deleted")
    for phase in ("prepare", "cleanup"):
        errors = r[f"{phase}_errors"]
        for message, n in errors[:ERRORS_SHOWN]:
            print(f"  {phase} error ({n}x): {message}")
        if len(errors) > ERRORS_SHOWN:
            print(f"  ... and {len(errors) - ERRORS_SHOWN} more distinct {phase} errors (in the JSON)")
    print(f"every check passed: {'yes' if r['all_ok'] else 'NO'}; all targets met: {'yes' if r['targets_met'] else 'NO'}")
    print(f"machine: {r['cpus']} CPUs, 1-min load average {r['loadavg_1min_before']} before,"
          f" {r['loadavg_1min_after']} after (other load skews these figures)")
    print(json.dumps(r, sort_keys=False), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{JOBS_QUICK} jobs x {DISKS_QUICK} disks, {LATENCY_QUICK} s a job (unless given), for smoke tests")
    parser.add_argument("--jobs", type=int, help=f"migration jobs, all at once (default {JOBS_DEFAULT})")
    parser.add_argument("--disks", type=int, help=f"disks per job (default {DISKS_DEFAULT})")
    parser.add_argument("--job-latency", type=float, help=f"seconds each CloudStack async job takes (default {LATENCY_DEFAULT})")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a phase after this many seconds (default 600)")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = JOBS_QUICK if args.quick else JOBS_DEFAULT
    if args.disks is None:
        args.disks = DISKS_QUICK if args.quick else DISKS_DEFAULT
    if args.job_latency is None:
        args.job_latency = LATENCY_QUICK if args.quick else LATENCY_DEFAULT
    if args.jobs < 1 or args.disks < 1 or not args.job_latency > 0 or not args.timeout > 0:
        parser.error("--jobs and --disks must be at least 1, --job-latency and --timeout above 0")
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False,
    )
    outcome: list[Any] = []
    interrupted: list[bool] = []

    def shutting_down() -> None:
        if not outcome:  # a signal, not us
            interrupted.append(True)

    def started() -> None:
        d = Deferred.fromCoroutine(run(args))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    reactor.callWhenRunning(started)
    reactor.run()
    if interrupted or not outcome:
        _progress("interrupted")
        return 2
    if isinstance(outcome[0], Failure):
        _progress("failed")
        outcome[0].printTraceback(file=sys.stderr)
        return 1
    report(outcome[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

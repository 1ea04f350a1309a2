"""The infrastructure benchmark runs end to end (--quick), ends with its JSON summary and leaves nothing behind (its speed is not asserted here)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_KEYS = {
    "benchmark",
    "quick",
    "region_start_s",
    "cluster_ready_s",
    "completion_creates",
    "completion_vim_duration_s",
    "completion_ours_s",
    "completion_direct_s",
    "completion_poll_floor_s",
    "completion_floor_ratio",
    "completion_direct_ratio",
    "completion_ours_statuses",
    "completion_direct_statuses",
    "accept_statuses_ours",
    "errors",
    "all_complete",
    "postgres_left_behind",
} | {
    f"accept_c{c}_{figure}"
    for c in (1, 16)
    for figure in ("ours_per_s", "direct_per_s", "ratio", "ours_p50_ms", "ours_p99_ms", "direct_p50_ms", "direct_p99_ms", "p50_ratio")
} | {
    f"cpu_ms_per_create_{phase}_ours_{who}" for phase in ("accept", "completion") for who in ("region", "cluster", "postgres", "vim")
} | {
    f"listen_overflows_{phase}_{flavour}" for phase in ("accept", "completion") for flavour in ("ours", "direct")
}


def _bench_dirs() -> set[str]:
    return set(glob.glob("/tmp/outpost-bench-infra-*"))


def test_infrastructure_benchmark_quick_run_exits_0_and_ends_with_a_json_summary() -> None:
    before = _bench_dirs()
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "infrastructure.py"), "--quick"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert EXPECTED_KEYS <= summary.keys(), EXPECTED_KEYS - summary.keys()
    assert summary["benchmark"] == "infrastructure" and summary["quick"] is True
    assert summary["completion_creates"] == 10 and summary["completion_vim_duration_s"] == 1.0
    # The floor is the VIM's 1 s seen at the monitor's first poll after it: 0.1, 0.3, 0.7, 1.5 s.
    assert summary["completion_poll_floor_s"] == 1.5
    # A small run works: every create accepted, every completion event on the stream, all COMPLETE.
    assert summary["all_complete"] is True, summary["errors"]
    assert summary["completion_ours_statuses"] == summary["completion_direct_statuses"] == {"COMPLETE": 10}
    # Nothing is left behind: the region stopped its PostgreSQL and the state directory is gone.
    assert summary["postgres_left_behind"] is False
    assert not (_bench_dirs() - before)

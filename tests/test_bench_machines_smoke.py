"""The machines benchmark runs end to end and cleans up after itself (its speed is not asserted here)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_KEYS = {
    "benchmark",
    "clusters",
    "machines_per_cluster",
    "machines_total",
    "sync_ours_s",
    "sync_direct_s",
    "sync_ratio",
    "sync_ours_machines_per_s",
    "sync_direct_machines_per_s",
    "power_ours_s",
    "power_direct_s",
    "power_ratio",
    "power_ours_machines_per_s",
    "power_direct_machines_per_s",
    "power_unanswered_max",
    "power_cluster_failures",
    "sync_failed_clusters",
    "all_answered",
    "postgres_left_behind",
    "postgres_running_after",
}


def _bench_dirs() -> set[str]:
    return set(glob.glob("/tmp/outpost-bench-machines-*"))


def test_machines_benchmark_quick_run_exits_0_and_ends_with_a_json_summary() -> None:
    before = _bench_dirs()
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "machines.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert EXPECTED_KEYS <= summary.keys()
    assert summary["benchmark"] == "machines"
    assert summary["machines_total"] == summary["clusters"] * summary["machines_per_cluster"] == 150
    for key in ("sync_ours_s", "sync_direct_s", "power_ours_s", "power_direct_s", "sync_ratio", "power_ratio"):
        assert summary[key] > 0, key
    # A small fleet works: every sync completes and every machine answers.
    assert summary["all_answered"] is True
    # Nothing is left behind: the region stopped its PostgreSQL, the state directory is gone.
    assert summary["postgres_left_behind"] is False
    assert summary["postgres_running_after"] is False
    assert not (_bench_dirs() - before)

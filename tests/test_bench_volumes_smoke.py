"""The volumes benchmark runs end to end (--quick) and ends with its JSON summary (its speed is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_KEYS = {
    "benchmark",
    "simulator_in_process",
    "jobs",
    "disks_per_job",
    "volumes_total",
    "job_latency_s",
    "max_device_id",
    "prepare_s",
    "prepare_baseline_s",
    "prepare_ratio",
    "prepare_poll_floor_s",
    "cleanup_s",
    "cleanup_baseline_s",
    "cleanup_ratio",
    "cleanup_poll_floor_s",
    "targets_met",
    "prepare_failed_jobs",
    "cleanup_failed_jobs",
    "mounted_after_prepare",
    "volumes_left_after_cleanup",
    "devices_left_after_cleanup",
    "mounts_left_after_cleanup",
    "prepare_errors",
    "cleanup_errors",
    "prepare_requests",
    "cleanup_requests",
    "all_ok",
}


def test_volumes_benchmark_quick_run_exits_0_and_ends_with_a_json_summary() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "volumes.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert EXPECTED_KEYS <= summary.keys()
    assert summary["benchmark"] == "volumes"
    assert summary["simulator_in_process"] is True
    assert (summary["jobs"], summary["disks_per_job"], summary["job_latency_s"]) == (5, 2, 0.2)
    assert summary["volumes_total"] == 10
    for key in ("prepare_s", "prepare_baseline_s", "prepare_ratio", "cleanup_s", "cleanup_baseline_s", "cleanup_ratio"):
        assert summary[key] > 0, key
    # The baseline is the latency's critical path: three async jobs to prepare a disk, one to clean it up.
    assert summary["prepare_baseline_s"] == pytest.approx(3 * 0.2) and summary["cleanup_baseline_s"] == pytest.approx(0.2)
    # A small run works: every volume mounted, then nothing left.
    assert summary["all_ok"] is True, summary
    assert summary["mounted_after_prepare"] == 10
    assert summary["volumes_left_after_cleanup"] == summary["devices_left_after_cleanup"] == 0

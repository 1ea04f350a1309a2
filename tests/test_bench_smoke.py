"""The RPC benchmark runs end to end (its speed is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_KEYS = {
    "benchmark",
    "sequential_ours",
    "sequential_bare",
    "sequential_ratio",
    "pipelined_ours",
    "pipelined_bare",
    "pipelined_ratio",
    "gather100_ours_ms",
    "gather100_bare_ms",
    "gather100_ratio",
    "targets_met",
}


def test_rpc_benchmark_quick_run_exits_0_and_ends_with_a_json_summary() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "rpc.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    assert EXPECTED_KEYS <= summary.keys()
    assert summary["benchmark"] == "rpc"
    assert isinstance(summary["targets_met"], bool)
    for key in EXPECTED_KEYS - {"benchmark", "targets_met"}:
        assert summary[key] > 0, key

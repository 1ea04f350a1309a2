"""The storage benchmark runs end to end against the peer and ends with its JSON summary (speed is not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.storagehelpers import PEER_SKIP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(PEER_SKIP is not None, reason=PEER_SKIP or "")
def test_storage_benchmark_quick_run_compares_ours_with_the_peer() -> None:
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "storage.py"), "--quick", "--resources", "300"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == "storage" and summary["resources"] == 300
    for key in ("sequential_rps_ours", "sequential_rps_peer", "concurrent_rps_ours", "concurrent_rps_peer", "full_listing_s_ours", "full_listing_s_peer"):
        assert summary[key] > 0, key
    assert summary["entries_ours"]["project"] == summary["entries_peer"]["project"] > 0
    assert any("req/s, page_size=500" in line for line in lines)

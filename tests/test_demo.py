"""`make demo` runs its tour to the end and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys

from tests.daemons import env


def test_the_narrated_demo_runs_every_step_and_stops_everything() -> None:
    result = subprocess.run([sys.executable, "-m", "outpost.demo"], env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.count(": connected, 2 connections") == 3
    assert "Deployed" in out and "unavailable (8 machines not queried)" in out
    assert "cleanup: cleaned; disks Deleted, Deleted" in out
    assert "GET /api/storage-resources/ -> 200" in out
    assert "POST /api/infrastructure/query -> IN_PROGRESS" in out and "... then COMPLETE with outputs" in out
    assert "infrastructure.task: {'status': 'COMPLETE'" in out
    assert "POST /api/infrastructure/create -> 202\n" in out and "(web), " in out
    assert "still running: none" in out

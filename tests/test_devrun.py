"""`make run`: prints the API and a token, serves them, and leaves nothing behind on Ctrl-C (even twice)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from tests.daemons import env, eventually, free_port, state_dir


def postgres_running_in(directory: Path) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in cmdline and ("twistd" in cmdline or "postgres" in cmdline):
                return True
    return False


@pytest_twisted.ensureDeferred
async def test_make_run_prints_api_and_token_and_stops_cleanly() -> None:
    base = state_dir()
    http_port, rpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "outpost.devrun", "--state", str(base), "--http-port", str(http_port), "--rpc-port", str(rpc_port)],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As a background job of a non-interactive shell starts it: Ctrl-C must still stop it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []

    def read_until_token() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("TOKEN: "):
                return

    try:
        await deferToThread(read_until_token)
        api = [l for l in lines if l.startswith("API: ")]
        token = [l for l in lines if l.startswith("TOKEN: ")]
        assert api == [f"API: http://127.0.0.1:{http_port}/api/"], lines
        assert len(token) == 1
        response = await treq.get(
            f"http://127.0.0.1:{http_port}/api/v1/clusters",
            headers={"Authorization": [f"Bearer {token[0].split(' ', 1)[1]}"]},
        )
        body = await response.json()
        assert response.code == 200 and body["items"][0]["connected"] is True
    finally:
        # Ctrl-C, and Ctrl-C again while it stops: it still stops everything, without a traceback.
        proc.send_signal(signal.SIGINT)

        def read_until_stopping() -> None:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if line.strip() == "stopping...":
                    return

        await deferToThread(read_until_stopping)
        proc.send_signal(signal.SIGINT)
        code = await deferToThread(proc.wait, 60)
    rest = proc.stdout.read()
    assert code == 0, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest

    async def all_gone() -> bool:
        return not postgres_running_in(base)

    await eventually(all_gone, 10, "every daemon and PostgreSQL to exit")
    shutil.rmtree(base, ignore_errors=True)

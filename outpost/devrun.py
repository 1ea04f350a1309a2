"""
``make run``: the whole system on its embedded default, in the foreground.

Starts ``twistd regiond`` (which creates and runs a private PostgreSQL in
its state directory) and one ``twistd clusterd`` with a simulated MAAS of
20 machines in its process, waits for the cluster to
register, makes an admin token and prints, each on a line of its own::

    API: http://127.0.0.1:5240/api/
    TOKEN: opt_...

Ctrl-C or SIGTERM stops both daemons (the region stops its PostgreSQL) and
waits for them, leaving no process behind.  State is kept in ``.run/`` so a
second run reuses the database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, cast

ROOT = Path(__file__).resolve().parent.parent


def wait_until(check: Callable[[], object], timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                # Every command here is a list of str: [twistd, "-n", "--pidfile=", DAEMON, ...].
                raise SystemExit(f"{cast('list[str]', p.args)[3]} exited with {p.returncode} while waiting for {what}; see its log")
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", default=str(ROOT / ".run"), help="state directory (default .run/)")
    ap.add_argument("--http-port", type=int, default=5240)
    ap.add_argument("--rpc-port", type=int, default=5250)
    args = ap.parse_args()
    state = Path(args.state).absolute()
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)  # the embedded PostgreSQL may run as another user
    region_yaml = state / "region.yaml"
    region_yaml.write_text(
        f"state_dir: {state / 'region'}\n"
        f"rpc: {{listen: 'tcp:{args.rpc_port}:interface=127.0.0.1'}}\n"
        f"http: {{listen: 'tcp:{args.http_port}:interface=127.0.0.1'}}\n"
    )
    base = f"http://127.0.0.1:{args.http_port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    twistd = [str(Path(sys.executable).parent / "twistd")]
    procs: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        # Another Ctrl-C while the daemons shut down (they got the first one
        # too) must not abandon them half-stopped, nor print a traceback.
        def patience(*_: object) -> None:
            print("still stopping: waiting for the daemons to exit", file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, patience)
        signal.signal(signal.SIGTERM, patience)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # Ctrl-C stops everything even when started with SIGINT ignored (as a
    # background job of a non-interactive shell is), and so does SIGTERM.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        region_log = open(state / "regiond.log", "ab")
        procs.append(subprocess.Popen([*twistd, "-n", "--pidfile=", "regiond", "--config", str(region_yaml)],
                                      env=env, stdout=region_log, stderr=subprocess.STDOUT, cwd=state))
        print(f"regiond starting (log: {state / 'regiond.log'})", flush=True)

        def healthy() -> bool:
            with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as r:
                status: object = json.load(r)["status"]
                return status == "ok"

        wait_until(healthy, 60, "the region", procs)
        cluster_yaml = state / "cluster.yaml"
        cluster_yaml.write_text("simulate:\n  maas: {machines: 20, seed: 1, speed: 0.1}\n  vim: {create_duration: 2.0}\n")
        cluster_log = open(state / "clusterd.log", "ab")
        procs.append(subprocess.Popen(
            [*twistd, "-n", "--pidfile=", "clusterd", "--config", str(cluster_yaml), "--region", base + "/", "--name", "sim-1",
             "--state-dir", str(state / "cluster"), "--secret-file", str(state / "region" / "secret")],
            env=env, stdout=cluster_log, stderr=subprocess.STDOUT, cwd=state))
        print(f"clusterd starting (log: {state / 'clusterd.log'})", flush=True)
        token = subprocess.run(
            [sys.executable, "-m", "outpost", "token", "--config", str(region_yaml), "create", "--role", "admin", "--name", "make-run"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()

        def cluster_connected() -> bool:
            req = urllib.request.Request(f"{base}/api/v1/clusters?connected=true", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                total: int = json.load(r)["total"]
                return total > 0

        wait_until(cluster_connected, 60, "the cluster to register", procs)
        print("Outpost is running: one region (embedded PostgreSQL) and one cluster, sim-1, with a simulated MAAS"
              " of 20 machines and a simulated VIM (deployment location sim-1, type simulated or maas). Ctrl-C stops it.")
        print(f"API: {base}/api/")
        print(f"TOKEN: {token}", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a daemon exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())

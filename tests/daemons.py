"""
Real daemons for integration tests: ``twistd -n regiond`` and ``twistd -n
clusterd`` as child processes on free 127.0.0.1 ports, and polling helpers
that wait with a deadline on the reactor (never time.sleep).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_dir(prefix: str = "outpost-test-") -> Path:
    """A fresh directory that PostgreSQL (run as another user when we are root) can reach."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = reactor.seconds() + timeout
    last: Any = None
    while reactor.seconds() < deadline:
        try:
            last = await check()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        await deferLater(reactor, interval, lambda: None)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@attrs.define
class Daemon:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log, "ab")
        self.process = subprocess.Popen(self.argv, env=env(), stdout=out, stderr=subprocess.STDOUT, cwd=str(self.log.parent))
        out.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = await deferToThread(self.process.wait, timeout)
        # twistd re-raises the signal it stopped on, so a clean stop by
        # SIGTERM exits "killed by SIGTERM"; report that as 0.
        return 0 if code == -sig else code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@attrs.define
class Region(Daemon):
    http_port: int = 0
    rpc_port: int = 0
    config: Path = Path()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def secret(self) -> Path:
        return self.log.parent / "region" / "secret"

    async def health(self) -> dict[str, Any] | None:
        response = await treq.get(self.url + "/api/v1/health", timeout=5)
        body = await response.json()
        return body if response.code == 200 else None

    async def wait_healthy(self, timeout: float = 60) -> None:
        async def check() -> Any:
            if not self.running:
                raise AssertionError(f"regiond exited:\n{self.log_text()[-3000:]}")
            return await self.health()

        await eventually(check, timeout, "regiond to be healthy")

    async def make_token(self, role: str = "admin") -> str:
        result = await deferToThread(
            subprocess.run,
            [sys.executable, "-m", "outpost", "token", "--config", str(self.config), "create", "--role", role],
            env=env(), capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def make_region(base: Path, **extra_config: Any) -> Region:
    http_port, rpc_port = free_port(), free_port()
    config = base / "region.yaml"
    data = {
        "state_dir": str(base / "region"),
        "rpc": {"listen": f"tcp:{rpc_port}:interface=127.0.0.1"},
        "http": {"listen": f"tcp:{http_port}:interface=127.0.0.1"},
        **extra_config,
    }
    config.write_text(json.dumps(data))  # JSON is YAML
    return Region(
        name="regiond",
        argv=[TWISTD, "-n", "--pidfile=", "regiond", "--config", str(config)],
        log=base / "regiond.log",
        http_port=http_port,
        rpc_port=rpc_port,
        config=config,
    )


def make_cluster(base: Path, name: str, region: Region, simulate_maas: dict[str, Any] | None = None) -> Daemon:
    """A clusterd for `region`; with `simulate_maas` (e.g. {"machines": 8}) it runs a simulated MAAS in-process."""
    directory = base / name
    directory.mkdir(exist_ok=True)
    config: list[str] = []
    if simulate_maas is not None:
        path = base / f"{name}.yaml"
        path.write_text(json.dumps({"simulate": {"maas": {"speed": 0.02, **simulate_maas}}}))
        config = ["--config", str(path)]
    return Daemon(
        name=name,
        argv=[TWISTD, "-n", "--pidfile=", "clusterd", *config, "--region", region.url + "/", "--name", name,
              "--state-dir", str(directory), "--secret-file", str(region.secret)],
        log=base / f"{name}.log",
    )


async def api_get(region: Region, path: str, token: str) -> tuple[int, Any]:
    response = await treq.get(region.url + path, headers={"Authorization": [f"Bearer {token}"]}, timeout=10)
    return response.code, await response.json()


async def api_post(region: Region, path: str, token: str, body: Any = None) -> tuple[int, Any, Any]:
    response = await treq.post(region.url + path, json=body or {}, headers={"Authorization": [f"Bearer {token}"]}, timeout=30)
    return response.code, await response.json(), response.headers

"""EmbeddedPostgres: a private server in the region's state directory."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from regiond.db import Database, EmbeddedPostgres, EmbeddedPostgresError
from tests.pg import server_account, wait_for

# No fsync: these tests crash servers, but never the machine, and a busy disk
# makes each shutdown checkpoint's fsyncs cost seconds.
_FAST = {"fsync": "off"}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _processes_in(directory: Path) -> set[int]:
    """Live processes whose working directory is ``directory`` (a server's)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if Path(cwd) == directory.resolve() and _alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def _postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split("\n")[0])


@pytest.fixture(scope="module")
def pristine_cluster() -> Iterator[Path]:
    """
    A stopped cluster made by one initdb, for tests to copy.

    initdb takes ~1 s and a copy ~0.2 s; only the test about the first start
    needs an initdb of its own.
    """
    root = Path(tempfile.mkdtemp(prefix="outpost-pristine-", dir="/tmp"))
    root.chmod(0o755)
    server = EmbeddedPostgres(_reactor(), root / "postgres", settings=_FAST)
    try:
        pytest_twisted.blockon(Deferred.fromCoroutine(server.start()))
        pytest_twisted.blockon(Deferred.fromCoroutine(server.stop()))
        yield server.directory
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Under /tmp, 0755: the server's account must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="outpost-embedded-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    for pid in _processes_in(root / "state" / "postgres" / "data"):
        os.kill(pid, signal.SIGKILL)  # only if a test failed half-way
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def servers(scratch: Path) -> Iterator[list[EmbeddedPostgres]]:
    """Servers made by a test; stopped before its directory is removed."""
    made: list[EmbeddedPostgres] = []
    yield made
    for server in made:
        try:
            pytest_twisted.blockon(Deferred.fromCoroutine(server.stop()))
        except EmbeddedPostgresError:
            pass  # the test crashed it on purpose


@pytest.fixture
def state_dir(scratch: Path) -> Path:
    """A state directory that does not exist yet."""
    return scratch / "state" / "postgres"


@pytest.fixture
def cluster_dir(scratch: Path, pristine_cluster: Path) -> Path:
    """A state directory holding a stopped cluster, as a previous run leaves it."""
    target = scratch / "state" / "postgres"
    shutil.copytree(pristine_cluster, target, symlinks=True)
    return target


def _new(
    servers: list[EmbeddedPostgres], directory: Path, database: str = "outpost"
) -> EmbeddedPostgres:
    server = EmbeddedPostgres(_reactor(), directory, database, settings=_FAST)
    servers.append(server)
    return server


async def _write_row(server: EmbeddedPostgres, value: str) -> None:
    db = await Database.connect(_reactor(), server.dsn, size=1)
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS kept (value text)")
        await db.execute("INSERT INTO kept VALUES (%s)", (value,))
    finally:
        await db.close()


async def _read_rows(server: EmbeddedPostgres) -> list[str]:
    db = await Database.connect(_reactor(), server.dsn, size=1)
    try:
        return [
            r["value"] for r in await db.fetch("SELECT value FROM kept ORDER BY value")
        ]
    finally:
        await db.close()


@pytest_twisted.ensureDeferred
async def test_first_start_creates_a_private_cluster_and_a_restart_keeps_the_data(
    servers: list[EmbeddedPostgres], state_dir: Path
) -> None:
    server = _new(servers, state_dir)
    await server.start()
    assert (server.data_dir / "PG_VERSION").exists()
    assert f"host={server.socket_dir}" in server.dsn
    db = await Database.connect(_reactor(), server.dsn, size=1)
    try:
        row = await db.fetchone(
            "SELECT current_setting('listen_addresses') AS listen,"
            " current_setting('unix_socket_directories') AS sockets,"
            " current_database() AS database, current_user AS role"
        )
    finally:
        await db.close()
    assert row == {
        "listen": "",  # no TCP at all
        "sockets": str(server.socket_dir),
        "database": "outpost",
        "role": "outpost",
    }
    # Trust authentication is safe only because nobody else can reach the socket.
    assert server.socket_dir.stat().st_mode & 0o777 == 0o700
    account = server_account()
    if account is not None:
        assert (server.data_dir.stat().st_uid, server.data_dir.stat().st_gid) == account

    await _write_row(server, "survives")
    await server.stop()

    # A new object, as after a regiond restart.
    again = _new(servers, state_dir)
    await again.start()
    assert await _read_rows(again) == ["survives"]


@pytest_twisted.ensureDeferred
async def test_a_restart_with_another_database_name_creates_it(
    servers: list[EmbeddedPostgres], cluster_dir: Path
) -> None:
    server = _new(servers, cluster_dir)
    await server.start()
    await _write_row(server, "first")
    await server.stop()

    other = _new(servers, cluster_dir, database="Other DB")
    await other.start()
    db = await Database.connect(_reactor(), other.dsn, size=1)
    try:
        assert await db.fetchone("SELECT current_database() AS d") == {"d": "Other DB"}
    finally:
        await db.close()
    assert await _read_rows(server) == ["first"]  # the first database is kept


@pytest_twisted.ensureDeferred
async def test_stop_leaves_no_postgres_process(
    servers: list[EmbeddedPostgres], cluster_dir: Path
) -> None:
    server = _new(servers, cluster_dir)
    await server.start()
    processes = _processes_in(server.data_dir)
    assert _postmaster_pid(server) in processes
    assert len(processes) > 1  # the postmaster and its helpers

    await server.stop()
    await wait_for(lambda: not _processes_in(server.data_dir), timeout=5)
    assert not any(_alive(pid) for pid in processes)
    assert not (server.data_dir / "postmaster.pid").exists()
    assert not list(server.socket_dir.iterdir())


@pytest_twisted.ensureDeferred
async def test_start_after_a_crash_with_a_stale_pid_file(
    servers: list[EmbeddedPostgres], cluster_dir: Path
) -> None:
    server = _new(servers, cluster_dir)
    await server.start()
    await _write_row(server, "committed before the crash")

    os.kill(_postmaster_pid(server), signal.SIGKILL)
    # The helpers notice their postmaster died and exit by themselves.
    await wait_for(lambda: not _processes_in(server.data_dir), timeout=10)
    assert (server.data_dir / "postmaster.pid").exists()
    await server.stop()  # a dead server counts as stopped

    restarted = _new(servers, cluster_dir)
    await restarted.start()
    assert await _read_rows(restarted) == ["committed before the crash"]


class _Sleeper(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_start_when_the_stale_pid_now_belongs_to_an_unrelated_process(
    servers: list[EmbeddedPostgres], cluster_dir: Path
) -> None:
    # After a reboot a crashed server's pid may be reused. PostgreSQL alone
    # refuses to start if that process belongs to its own user.
    server = _new(servers, cluster_dir)
    account = server_account()
    sleeper = _Sleeper()
    transport = _reactor().spawnProcess(
        sleeper, "/bin/sleep", ["sleep", "30"], env={},
        uid=None if account is None else account[0],
        gid=None if account is None else account[1],
    )  # fmt: skip
    try:
        lock = f"{transport.pid}\n{server.data_dir}\n"
        (server.data_dir / "postmaster.pid").write_text(lock)
        (server.socket_dir / ".s.PGSQL.5432.lock").write_text(lock)

        restarted = _new(servers, cluster_dir)
        await restarted.start()
        await _write_row(restarted, "started")
        assert await _read_rows(restarted) == ["started"]
    finally:
        transport.signalProcess("KILL")
        await sleeper.ended


@pytest_twisted.ensureDeferred
async def test_start_refuses_while_a_server_runs_on_the_directory(
    servers: list[EmbeddedPostgres], cluster_dir: Path
) -> None:
    running = _new(servers, cluster_dir)
    await running.start()

    with pytest.raises(EmbeddedPostgresError, match="already running"):
        await _new(servers, cluster_dir).start()
    # The running server was not disturbed.
    await _write_row(running, "still fine")
    assert await _read_rows(running) == ["still fine"]


@pytest_twisted.ensureDeferred
async def test_a_failed_start_quotes_the_server_log(
    servers: list[EmbeddedPostgres], cluster_dir: Path
) -> None:
    server = _new(servers, cluster_dir)
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 'plenty'\n")

    with pytest.raises(EmbeddedPostgresError) as caught:
        await _new(servers, cluster_dir).start()
    message = str(caught.value)
    assert "did not start" in message
    assert str(server.log_file) in message
    assert "shared_buffers" in message  # PostgreSQL's own complaint, from the log


@pytest.mark.skipif(
    os.geteuid() != 0, reason="only root hands the server to another user"
)
@pytest_twisted.ensureDeferred
async def test_an_unreachable_directory_is_a_clear_error(
    servers: list[EmbeddedPostgres],
) -> None:
    private = Path(tempfile.mkdtemp(prefix="outpost-private-", dir="/tmp"))  # 0700
    try:
        with pytest.raises(EmbeddedPostgresError) as caught:
            await _new(servers, private / "state").start()
        message = str(caught.value)
        assert str(private) in message
        assert "'postgres'" in message
        assert not (private / "state" / "data").exists()
    finally:
        shutil.rmtree(private)

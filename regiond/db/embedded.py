"""
A private PostgreSQL server for a region that has no DSN configured.

The region keeps its state in PostgreSQL. So that a single region works with
nothing but the machine's PostgreSQL binaries installed, it can run its own
cluster inside its state directory: ``initdb`` on first start, ``pg_ctl``
start and stop around the process's life, and a Unix socket as the only way
in (no TCP port to collide with, or to firewall).

Layout of ``directory``::

    data/           the cluster (PGDATA), made by initdb
    run/            the Unix socket directory, mode 0700
    postgres.log    the server's log; a failed start quotes its tail

Every child process is spawned through the injected reactor; nothing here
blocks except a few small filesystem calls.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

import attrs
from psycopg2.extensions import make_dsn
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from regiond.errors import EmbeddedPostgresError

__all__ = ["EmbeddedPostgres", "IEmbeddedPostgresReactor"]

_log = Logger()

#: The superuser initdb creates, and the role the region connects as. Trust
#: authentication is safe only because the socket directory is 0700.
_ROLE = "outpost"
#: The unprivileged account that runs the server when regiond runs as root
#: (initdb and pg_ctl refuse to run as root). Debian's packages create it.
_SYSTEM_USER = "postgres"
#: With no TCP listener the port only names the socket file (.s.PGSQL.5432),
#: but it is set explicitly so a PGPORT in the environment cannot change it.
_PORT = 5432
#: sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_LOG_TAIL_LINES = 30
_OUTPUT_LIMIT = 64 * 1024

#: Creates the database only if it is missing. psql quotes :'dbname' as a
#: literal, so the name needs no escaping here; format('%I') quotes it as an
#: identifier for the generated statement, which \gexec then runs.
_CREATE_DATABASE = b"""\
SELECT format('CREATE DATABASE %I', :'dbname')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \\gexec
"""


class IEmbeddedPostgresReactor(IReactorProcess, IReactorTime):
    """
    What EmbeddedPostgres needs of a reactor: child processes, and a clock to
    time them. (Like treq's ``_ITreqReactor``: the real reactor provides both,
    a test can provide a fake.)
    """


@attrs.frozen
class _Account:
    """The OS account the server runs as, when that is not this process's."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_root(cls) -> _Account | None:
        """None unless we are root: then the unprivileged system user."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            raise EmbeddedPostgresError(
                f"regiond runs as root, and initdb refuses to; the embedded "
                f"PostgreSQL runs as the {_SYSTEM_USER!r} user, which does not "
                f"exist here (install the PostgreSQL server package, or "
                f"configure a DSN)"
            ) from None
        return cls(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)

    def may_search(self, path: Path) -> bool:
        """Whether this account may traverse ``path`` (the directory's x bit)."""
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & 0o100)
        if st.st_gid in os.getgrouplist(self.name, self.gid):
            return bool(st.st_mode & 0o010)
        return bool(st.st_mode & 0o001)


@attrs.frozen
class _Result:
    """How a child process ended, and what it printed."""

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        how = (
            f"was killed by signal {self.signal}"
            if self.signal is not None
            else f"exited with status {self.exit_code}"
        )
        text = f"{' '.join(map(shlex.quote, self.argv))} {how}"
        output = self.output.strip()
        return f"{text}:\n{output}" if output else text


class _Collector(ProcessProtocol):
    """Feeds a child its stdin, keeps the tail of its output, reports its end."""

    def __init__(self, stdin: bytes) -> None:
        self._stdin = stdin
        self.output = bytearray()
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        if self._stdin:
            transport.write(self._stdin)
        transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data
        del self.output[:-_OUTPUT_LIMIT]

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated):
            self.ended.callback((value.exitCode, value.signal))
        else:
            self.ended.callback((0, None))


def _find_bindir() -> Path:
    """
    The directory holding initdb, pg_ctl, postgres and psql.

    Debian keeps them in /usr/lib/postgresql/<version>/bin and puts only
    wrappers on PATH, so a ``pg_ctl`` on PATH is followed through its symlinks
    and the versioned directories are tried after it, newest first.
    """

    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in path.parent.name.split("."))
        except ValueError:
            return ()

    candidates = []
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    )
    for candidate in candidates:
        if all(
            (candidate / name).is_file()
            for name in ("initdb", "pg_ctl", "postgres", "psql")
        ):
            return candidate
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres, psql): "
        "install the PostgreSQL server package, put its bin directory on PATH, "
        "or configure a DSN"
    )


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it holds nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # No /proc at all: trust kill(). /proc without the pid: it just went.
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _is_postmaster_for(pid: int, data_dir: Path) -> bool:
    """
    Whether ``pid`` is a server running on ``data_dir``.

    A postmaster chdirs into its data directory, so its /proc cwd tells it
    apart from an unrelated process that reuses the pid of one that crashed
    (common in containers, where pids restart low after every reboot).
    """
    if not _alive(pid):
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except PermissionError:
        # Another user's process. Our server runs as us, or, when we are root
        # (who may read every cwd), as the system user: so not ours.
        return False
    except FileNotFoundError:
        # No /proc to ask: assume the worst rather than start a second server.
        return not Path("/proc/self").exists()
    return Path(cwd) == data_dir.resolve()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(could not read {path}: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def _absolute(path: str | os.PathLike[str]) -> Path:
    # Absolute, so that a later chdir cannot change which cluster this is.
    return Path(path).absolute()


@attrs.define
class EmbeddedPostgres:
    """
    A PostgreSQL cluster owned by one region process, in ``directory``.

    ``start()`` creates it on first use and otherwise reuses it, so the data
    survives restarts; ``stop()`` shuts it down. When regiond runs as root the
    server runs as the ``postgres`` user, which is given the directory.
    """

    reactor: IEmbeddedPostgresReactor
    directory: Path = attrs.field(converter=_absolute)
    database: str = "outpost"
    #: Where initdb, pg_ctl, postgres and psql live; found when None.
    bindir: Path | None = None
    #: Extra server settings, passed as ``-c name=value`` at every start
    #: (tests turn durability off with them: fsync=off, say).
    settings: Mapping[str, str] = attrs.field(factory=dict)
    _running: bool = attrs.field(default=False, init=False)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def dsn(self) -> str:
        """The libpq connection string for ``database`` over the socket."""
        return make_dsn(host=str(self.socket_dir), port=_PORT, dbname=self.database, user=_ROLE)

    async def start(self) -> None:
        """
        Create the cluster if needed, start the server, create the database.

        Raises EmbeddedPostgresError if any step fails, or if a server is
        already running on this data directory (another regiond with the same
        state directory, or a server a crashed regiond left behind).
        """
        if self._running:
            return
        account = _Account.for_root()
        bindir = self.bindir if self.bindir is not None else _find_bindir()
        self._check_socket_path()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        # Trust authentication: whoever reaches the socket is superuser.
        self.socket_dir.chmod(0o700)
        if account is not None:
            self._check_reachable(account)
            self._give_to(account)

        if not (self.data_dir / "PG_VERSION").exists():
            await self._initdb(bindir, account)
        else:
            self._clear_stale_lock()

        began = self.reactor.seconds()
        options = [
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "unix_socket_permissions=0700",
            "-p", str(_PORT),
        ]  # fmt: skip
        for name, value in self.settings.items():
            options += ["-c", f"{name}={value}"]
        result = await self._run(
            bindir / "pg_ctl",
            "start", "-w", "-t", "60",
            "-D", str(self.data_dir),
            "-l", str(self.log_file),
            "-o", " ".join(map(shlex.quote, options)),
            account=account,
        )  # fmt: skip
        if not result.ok:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start in {self.data_dir}: {result.describe()}"
                f"\n--- last lines of {self.log_file} ---\n{_tail(self.log_file)}"
            )
        self._running = True
        _log.info(
            "Embedded PostgreSQL started in {seconds:.2f}s ({directory})",
            seconds=self.reactor.seconds() - began,
            directory=str(self.directory),
        )
        try:
            await self._create_database(bindir, account)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Shut the server down (fast mode: roll back open transactions)."""
        if not self._running:
            return
        pid = self._lock_pid()
        if pid is None or not _is_postmaster_for(pid, self.data_dir):
            # It died under us. pg_ctl would wait its whole timeout for a
            # killed server whose zombie nobody has reaped yet.
            _log.warn(
                "Embedded PostgreSQL was no longer running ({directory})",
                directory=str(self.directory),
            )
            self._running = False
            return
        bindir = self.bindir if self.bindir is not None else _find_bindir()
        began = self.reactor.seconds()
        result = await self._run(
            bindir / "pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir),
            account=_Account.for_root(),
        )  # fmt: skip
        if not result.ok:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not stop in {self.data_dir}: {result.describe()}"
                f"\n--- last lines of {self.log_file} ---\n{_tail(self.log_file)}"
            )
        self._running = False
        _log.info(
            "Embedded PostgreSQL stopped in {seconds:.2f}s",
            seconds=self.reactor.seconds() - began,
        )

    def _check_socket_path(self) -> None:
        socket = self.socket_dir / f".s.PGSQL.{_PORT}"
        if len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
            raise EmbeddedPostgresError(
                f"the PostgreSQL socket path {socket} is longer than "
                f"{_MAX_SOCKET_PATH} bytes, the limit for a Unix socket; "
                f"choose a shorter state directory"
            )
        if "," in str(self.socket_dir):
            raise EmbeddedPostgresError(
                f"the PostgreSQL socket directory {self.socket_dir} contains a "
                f"comma, which PostgreSQL reads as a list separator"
            )

    def _check_reachable(self, account: _Account) -> None:
        """Fail clearly if the server's account cannot get to ``directory``."""
        for parent in reversed(self.directory.parents):
            if not account.may_search(parent):
                mode = parent.stat().st_mode & 0o7777
                raise EmbeddedPostgresError(
                    f"regiond runs as root, so the embedded PostgreSQL runs as "
                    f"the {account.name!r} user, which cannot reach "
                    f"{self.directory}: it may not traverse {parent} "
                    f"(mode {mode:04o}). Give {parent} o+x, or choose a state "
                    f"directory that user can reach"
                )

    def _give_to(self, account: _Account) -> None:
        """Make the server's account own the whole tree (it must own PGDATA)."""
        for root, dirs, files in os.walk(self.directory):
            for path in [root, *(os.path.join(root, n) for n in dirs + files)]:
                st = os.lstat(path)
                if (st.st_uid, st.st_gid) != (account.uid, account.gid):
                    os.lchown(path, account.uid, account.gid)

    def _clear_stale_lock(self) -> None:
        """
        Refuse to start beside a running server; remove a crashed one's locks.

        PostgreSQL removes a lock file whose pid is gone by itself, but refuses
        to start when that pid now belongs to some unrelated process of the
        same user. Both lock files are removed once we know the pid is not a
        server on this data directory.
        """
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = self._lock_pid()
        if pid is not None and _is_postmaster_for(pid, self.data_dir):
            raise EmbeddedPostgresError(
                f"PostgreSQL is already running on {self.data_dir} (pid {pid}): "
                f"another regiond is using the state directory {self.directory}, "
                f"or a server outlived the regiond that started it; stop it "
                f"with `pg_ctl stop -D {self.data_dir}`"
            )
        _log.warn(
            "Removing stale PostgreSQL lock files in {directory} (pid {pid})",
            directory=str(self.directory),
            pid=pid,
        )
        pid_file.unlink(missing_ok=True)
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def _lock_pid(self) -> int | None:
        """The pid in postmaster.pid; None if there is none, or it is torn."""
        try:
            text = (self.data_dir / "postmaster.pid").read_text()
            return int(text.partition("\n")[0])
        except (FileNotFoundError, ValueError):
            return None

    async def _initdb(self, bindir: Path, account: _Account | None) -> None:
        began = self.reactor.seconds()
        result = await self._run(
            bindir / "initdb", "--no-sync", "-U", _ROLE, "-A", "trust",
            "-E", "UTF8", "-D", str(self.data_dir),
            account=account,
        )  # fmt: skip
        if not result.ok:
            raise EmbeddedPostgresError(
                f"could not create a PostgreSQL cluster in {self.data_dir}: "
                f"{result.describe()}"
            )
        _log.info(
            "Created a PostgreSQL cluster in {seconds:.2f}s ({directory})",
            seconds=self.reactor.seconds() - began,
            directory=str(self.data_dir),
        )

    async def _create_database(self, bindir: Path, account: _Account | None) -> None:
        result = await self._run(
            bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-v", f"dbname={self.database}",
            "-h", str(self.socket_dir), "-p", str(_PORT),
            "-U", _ROLE, "-d", "postgres",
            account=account,
            stdin=_CREATE_DATABASE,
        )  # fmt: skip
        if not result.ok:
            raise EmbeddedPostgresError(
                f"could not create the database {self.database!r}: "
                f"{result.describe()}"
            )

    async def _run(
        self,
        executable: Path,
        *args: str,
        account: _Account | None,
        stdin: bytes = b"",
    ) -> _Result:
        """
        Run one PostgreSQL program to completion.

        Its environment is minimal on purpose: PGDATA, PGHOST, PGPORT and
        friends from ours must not redirect it, and LC_ALL=C makes initdb's
        collation independent of the host's locale settings.
        """
        argv = (str(executable), *args)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        collector = _Collector(stdin)
        self.reactor.spawnProcess(
            collector,
            argv[0],
            argv,
            env=env,
            path=str(self.directory),
            uid=None if account is None else account.uid,
            gid=None if account is None else account.gid,
        )
        exit_code, signal = await collector.ended
        output = collector.output.decode("utf-8", "replace")
        return _Result(argv, exit_code, signal, output)

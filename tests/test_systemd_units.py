"""
The systemd units in contrib/systemd: what they run, how they restart and stop, how they
are hardened, and the socket-activated region.

The units are parsed here (systemd's own syntax, a little of it), checked against the
daemons' real defaults, verified with ``systemd-analyze verify`` when it is installed,
and the socket-activated configuration is run for real: the sockets handed over as
systemd does (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), without systemd itself.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from clusterd import config as cluster_config
from regiond import config as region_config
from tests.daemons import ROOT, TWISTD, env, state_dir

UNITS = ROOT / "contrib" / "systemd"
TWISTD_PATH = "/opt/outpost/venv/bin/twistd"
DROP_IN = UNITS / "outpost-regiond.service.d" / "socket-activation.conf"
EXAMPLE = UNITS / "region-socket-activated.yaml"
SOCKETS = {"http": "outpost-regiond-http.socket", "rpc": "outpost-regiond-rpc.socket"}

#: Options that run a service in a mount namespace of its own (or, for ProtectClock=,
#: turn on the device allow-list).  Mounts made inside such a namespace never reach the
#: host, so the cluster, which mounts volumes for others, must use none of them.
NAMESPACING = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ReadWritePaths",
    "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem",
    "BindPaths", "BindReadOnlyPaths", "ProtectKernelTunables", "ProtectKernelModules",
    "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateMounts",
    "ProtectHostname", "MountFlags", "RootDirectory", "RootImage", "DynamicUser",
    "ProtectClock", "DevicePolicy", "DeviceAllow",
}  # fmt: skip


# -- a small reader for systemd's unit syntax --


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """
    Sections → keys → values, in order (keys may repeat; an empty value resets the list,
    as systemd does for list settings).  Comments (# ;) and backslash continuations are
    understood; nothing else of systemd's syntax is needed here.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, eq, value = line.partition("=")
        assert eq and current is not None, f"{path.name}:{number}: not key=value in a section: {raw!r}"
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should be set once, is {values!r}"
    return values[0]


def words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> list[str]:
    return [word for value in unit.get(section, {}).get(key, []) for word in value.split()]


def yes(value: str) -> bool:
    return value.lower() in ("1", "yes", "true", "on")


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNITS / name)


def tcp_default(description: str) -> tuple[str, int]:
    """(interface, port) of a ``tcp:PORT:interface=ADDR`` endpoint string."""
    parts = description.split(":")
    assert parts[0] == "tcp", description
    options = dict(part.split("=", 1) for part in parts[2:])
    return options.get("interface", "0.0.0.0"), int(parts[1])


def listen_address(value: str) -> tuple[str, int]:
    """(address, port) of a ListenStream= value: PORT, ADDR:PORT or [ADDR6]:PORT."""
    if value.isdigit():
        return "::", int(value)
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def systemd_endpoint(description: str) -> dict[str, str]:
    """The fields of ``systemd:domain=INET:name=http``."""
    prefix, *fields = description.split(":")
    assert prefix == "systemd", description
    return dict(field.split("=", 1) for field in fields)


# -- the services --

DAEMONS = [
    pytest.param("outpost-regiond.service", "regiond", "/etc/outpost/region.yaml", region_config, id="regiond"),
    pytest.param("outpost-clusterd.service", "clusterd", "/etc/outpost/cluster.yaml", cluster_config, id="clusterd"),
]


@pytest.mark.parametrize(("name", "plugin", "config", "module"), DAEMONS)
def test_exec_start_runs_the_plugin_in_the_foreground_logging_to_the_journal(name, plugin, config, module):
    service = unit(name)
    assert one(service, "Service", "Type") == "simple"
    argv = shlex.split(one(service, "Service", "ExecStart"))
    assert argv[0] == TWISTD_PATH
    split = argv.index(plugin)
    twistd_options, plugin_options = argv[1:split], argv[split + 1 :]
    assert set(twistd_options) == {"-n", "--pidfile=", "--logfile=-"}
    assert plugin_options == ["--config", config]


@pytest.mark.parametrize("plugin", ["regiond", "clusterd"])
def test_the_plugin_names_are_the_real_twistd_plugins(plugin):
    module = __import__(f"twisted.plugins.outpost_{plugin}", fromlist=[plugin])
    assert getattr(module, plugin).tapname == plugin


@pytest.mark.parametrize(("name", "plugin", "config", "module"), DAEMONS)
def test_restart_stop_and_limits(name, plugin, config, module):
    service = unit(name)
    # always: a failed start exits with status 0 (see the comment in the unit).
    assert one(service, "Service", "Restart") in ("always", "on-failure")
    assert re.fullmatch(r"[1-9]\d*s?", one(service, "Service", "RestartSec"))
    assert one(service, "Unit", "StartLimitIntervalSec") == "0"
    assert one(service, "Service", "KillMode") == "mixed"
    assert int(one(service, "Service", "TimeoutStopSec").rstrip("s")) >= 60
    assert int(one(service, "Service", "LimitNOFILE")) >= 65536
    assert "multi-user.target" in words(service, "Install", "WantedBy")


@pytest.mark.parametrize(("name", "plugin", "config", "module"), DAEMONS)
def test_state_and_configuration_directories_are_the_daemons_defaults(name, plugin, config, module):
    service = unit(name)
    assert "/var/lib/" + one(service, "Service", "StateDirectory") == module.DEFAULT_STATE_DIR
    assert one(service, "Service", "WorkingDirectory") == module.DEFAULT_STATE_DIR
    assert "/etc/" + one(service, "Service", "ConfigurationDirectory") == str(Path(config).parent)


def test_the_region_runs_unprivileged_and_fully_sandboxed():
    service = unit("outpost-regiond.service")["Service"]
    assert service["User"] == ["outpost"] and service["Group"] == ["outpost"]
    assert "CapabilityBoundingSet" in service and service["CapabilityBoundingSet"] == []
    assert service["ProtectSystem"] == ["strict"]
    for key in (
        "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
    ):  # fmt: skip
        assert yes(one({"Service": service}, "Service", key)), key
    assert "@system-service" in words({"Service": service}, "Service", "SystemCallFilter")
    assert one({"Service": service}, "Service", "UMask") == "0077"


def test_the_sysusers_file_creates_the_regions_user():
    entries = [line.split() for line in (UNITS / "outpost.sysusers.conf").read_text().splitlines() if line and line[0] != "#"]
    assert [entry[:2] for entry in entries] == [["u", one(unit("outpost-regiond.service"), "Service", "User")]]


def test_the_cluster_runs_as_root_with_no_mount_namespace():
    service = unit("outpost-clusterd.service")["Service"]
    assert "User" not in service and "Group" not in service
    assert not NAMESPACING & set(service), "these would hide the cluster's mounts from the host"
    assert yes(one({"Service": service}, "Service", "NoNewPrivileges"))
    capabilities = set(words({"Service": service}, "Service", "CapabilityBoundingSet"))
    assert {"CAP_SYS_ADMIN", "CAP_MKNOD"} <= capabilities
    assert not {"CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_NET_ADMIN"} & capabilities
    assert {"@system-service", "@mount"} <= set(words({"Service": service}, "Service", "SystemCallFilter"))
    # The mount points it makes (0755) must stay usable by others.
    assert one({"Service": service}, "Service", "UMask") == "0022"


def test_the_cluster_mounts_where_the_unit_says():
    assert "/mnt/migration" in (UNITS / "outpost-clusterd.service").read_text()
    assert cluster_config.ClusterConfig.__attrs_attrs__.mount_root.default == "/mnt/migration"


# -- socket activation --


def example_listeners() -> dict[str, str]:
    data = yaml.safe_load(EXAMPLE.read_text())
    return {"http": data["http"]["listen"], "rpc": data["rpc"]["listen"]}


@pytest.mark.parametrize("kind", ["http", "rpc"])
def test_sockets_match_the_region_defaults_and_the_example_configuration(kind):
    socket_unit = unit(SOCKETS[kind])
    address, port = listen_address(one(socket_unit, "Socket", "ListenStream"))
    default = region_config.DEFAULT_HTTP_LISTEN if kind == "http" else region_config.DEFAULT_RPC_LISTEN
    assert (address, port) == tcp_default(default)
    assert one(socket_unit, "Socket", "Service") == "outpost-regiond.service"
    endpoint = systemd_endpoint(example_listeners()[kind])
    assert endpoint["name"] == one(socket_unit, "Socket", "FileDescriptorName")
    assert "index" not in endpoint, "names, not positions: systemd does not promise an order"
    # Twisted adopts the socket with the family it is told: it must be the socket's.
    family = {4: "INET", 6: "INET6"}[ipaddress.ip_address(address).version]
    assert endpoint["domain"] == family
    assert "sockets.target" in words(socket_unit, "Install", "WantedBy")


def test_the_drop_in_hands_both_sockets_to_the_region():
    drop_in = parse_unit(DROP_IN)
    both = sorted(SOCKETS.values())
    assert sorted(words(drop_in, "Service", "Sockets")) == both
    assert sorted(words(drop_in, "Unit", "Requires")) == both
    assert sorted(words(drop_in, "Unit", "After")) == both


def test_the_example_configuration_changes_only_the_listeners():
    data = yaml.safe_load(EXAMPLE.read_text())
    assert data["state_dir"] == region_config.DEFAULT_STATE_DIR
    assert set(data) == {"state_dir", "rpc", "http"}


LAUNCHER = """\
import fcntl, os, sys
names, fds, argv = sys.argv[1], [int(fd) for fd in sys.argv[2].split(",")], sys.argv[3:]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, ...
for index, spare in enumerate(high):
    os.dup2(spare, 3 + index)
    os.close(spare)
os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=names, LISTEN_PID=str(os.getpid()))
os.execv(argv[0], argv)
"""


def listening_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(50)
    return s


def socket_activated(argv: list[str], sockets: dict[str, socket.socket], **popen) -> subprocess.Popen:
    """Start `argv` as systemd would with `sockets` (by FileDescriptorName), same pid."""
    names = ":".join(sockets)
    fds = ",".join(str(s.fileno()) for s in sockets.values())
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, names, fds, *argv],
        pass_fds=[s.fileno() for s in sockets.values()],
        env=env(),
        **popen,
    )


ADOPT = """\
import json
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from regiond.config import load_config
config = load_config(open({path!r}).read())
ports = {{kind: serverFromString(reactor, getattr(config, kind).listen).listen(Factory()).result.getHost().port
          for kind in ("http", "rpc")}}
print(json.dumps(ports))
"""


def test_a_socket_activated_region_validates_and_adopts_each_socket_by_name():
    # rpc first: the order systemd passes them in must not matter.
    sockets = {"rpc": listening_socket(), "http": listening_socket()}
    try:
        child = socket_activated(
            [sys.executable, "-c", ADOPT.format(path=str(EXAMPLE))], sockets, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
        assert json.loads(out) == {kind: s.getsockname()[1] for kind, s in sockets.items()}
    finally:
        for s in sockets.values():
            s.close()


def test_the_socket_activated_configuration_loads_without_inherited_sockets():
    assert "LISTEN_FDS" not in os.environ
    region_config.load_config(EXAMPLE.read_text())


def get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def test_a_socket_activated_region_serves_on_systemds_sockets_and_stops_cleanly(tmp_path):
    from regiond.db.embedded import _find_bindir
    from regiond.errors import EmbeddedPostgresError

    try:
        _find_bindir()
    except EmbeddedPostgresError as e:
        pytest.skip(f"no PostgreSQL server binaries for the embedded database: {e}")
    base = state_dir("outpost-systemd-")
    config = base / "region.yaml"
    data = yaml.safe_load(EXAMPLE.read_text())
    data["state_dir"] = str(base / "region")
    config.write_text(yaml.safe_dump(data))
    sockets = {"http": listening_socket(), "rpc": listening_socket()}
    http_port, rpc_port = (sockets[kind].getsockname()[1] for kind in ("http", "rpc"))
    log = tmp_path / "regiond.log"
    with open(log, "wb") as out:
        region = socket_activated(
            [TWISTD, "-n", "--pidfile=", "--logfile=-", "regiond", "--config", str(config)],
            sockets, stdout=out, stderr=subprocess.STDOUT, cwd=str(base),
        )  # fmt: skip
    for s in sockets.values():
        s.close()  # as systemd keeps its own copy, the region holds its own
    try:
        # systemd's sockets listen before the daemon runs: the kernel holds the
        # request until the region adopts the socket, so no polling is needed.
        try:
            health = get_json(f"http://127.0.0.1:{http_port}/api/v1/health", timeout=90)
        except OSError as e:
            raise AssertionError(f"{e}\n{log.read_text()[-3000:]}") from None
        assert health["status"] == "ok"
        # The region registers and advertises the port of the socket it was given.
        endpoints = get_json(f"http://127.0.0.1:{http_port}/api/v1/rpc-endpoints")["endpoints"]
        assert endpoints == [{"host": "127.0.0.1", "port": rpc_port}]
        region.send_signal(signal.SIGTERM)
        # Dead by SIGTERM (twistd re-raises it): a clean exit to systemd.
        assert region.wait(timeout=90) == -signal.SIGTERM
        text = log.read_text()
        assert "Embedded PostgreSQL stopped" in text and "Region stopped" in text, text[-3000:]
    finally:
        if region.poll() is None:
            region.kill()
            region.wait()
        shutil.rmtree(base, ignore_errors=True)


# -- systemd-analyze --

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def copy_units(destination: Path, *, socket_activation: bool) -> list[Path]:
    """
    The units in `destination`, ExecStart= pointing at an executable that exists here
    (verify checks it, and /opt/outpost/venv is an install-time path).
    """
    executable = shutil.which("true")
    assert executable is not None
    names = ["outpost-regiond.service", "outpost-clusterd.service"]
    if socket_activation:
        names += list(SOCKETS.values())
        (destination / DROP_IN.parent.name).mkdir()
        shutil.copy(DROP_IN, destination / DROP_IN.parent.name / DROP_IN.name)
    for name in names:
        text = (UNITS / name).read_text()
        assert name.endswith(".socket") or TWISTD_PATH in text
        (destination / name).write_text(text.replace(TWISTD_PATH, executable))
    return [destination / name for name in names]


@needs_systemd_analyze
@pytest.mark.parametrize("socket_activation", [False, True], ids=["plain", "socket-activated"])
def test_systemd_analyze_verify(tmp_path, socket_activation):
    paths = copy_units(tmp_path, socket_activation=socket_activation)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, paths)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # verify exits 0 even for unknown keys ("Unknown key ..., ignoring"): any output fails.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


@needs_systemd_analyze
@pytest.mark.parametrize(("name", "ceiling"), [("outpost-regiond.service", 3.0), ("outpost-clusterd.service", 6.0)])
def test_systemd_analyze_security_exposure(tmp_path, name, ceiling):
    copy_units(tmp_path, socket_activation=False)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(tmp_path / name)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot rate offline units: {(result.stderr or result.stdout)[-300:]}")
    assert float(found.group(1)) <= ceiling, result.stdout

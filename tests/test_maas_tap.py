"""``twistd maas-sim``: its options, and a real child process that python clients can use."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.python import usage

from clusterd.maas import MAASClient
from simulators.maas.tap import Options, makeService
from tests.daemons import TWISTD, Daemon, eventually, free_port
from tests.maashelpers import API_KEY, FAST_RETRY


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_an_api_key_is_required_exactly_once(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError):
        parse()
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    with pytest.raises(usage.UsageError):
        parse("--api-key", API_KEY, "--api-key-file", str(key_file))
    assert parse("--api-key-file", str(key_file))["key"] == API_KEY
    with pytest.raises(usage.UsageError, match="consumer_key:token_key:token_secret"):
        parse("--api-key", "not-a-key")


def test_durations_and_faults_are_set_from_the_command_line() -> None:
    options = parse("--api-key", API_KEY, "--fast", "--duration", "deploying=2", "--fault", "error_rate=0.25", "--machines", "3")
    assert options["parsed_durations"].deploying == 2.0 and options["parsed_durations"].power == 0.1
    assert options["parsed_faults"] == {"error_rate": 0.25}
    for bad in (["--duration", "forever=1"], ["--fault", "error_rate=lots"], ["--machines", "-1"]):
        with pytest.raises(usage.UsageError):
            parse("--api-key", API_KEY, *bad)
    service = makeService(options)
    assert IService.providedBy(service)


@pytest_twisted.ensureDeferred
async def test_twistd_maas_sim_serves_clients(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(
        "maas-sim",
        [TWISTD, "-n", "--pidfile=", "maas-sim", "--listen", f"tcp:{port}:interface=127.0.0.1", "--machines", "5",
         "--api-key", API_KEY, "--fast"],
        tmp_path / "maas-sim.log",
    )
    daemon.start()
    url = f"http://127.0.0.1:{port}/MAAS/"
    client = MAASClient(reactor, url, API_KEY, retry=FAST_RETRY, timeout=5)
    try:
        async def up() -> bool:
            if not daemon.running:
                raise AssertionError(daemon.log_text()[-2000:])
            return (await treq.get(url + "api/2.0/version/", timeout=2)).code == 200

        await eventually(up, 30, "twistd maas-sim to answer")
        describe = await (await treq.get(url + "api/2.0/describe/")).json()
        assert any(h["uri"].startswith(f"http://127.0.0.1:{port}/MAAS/api/2.0/") for h in describe["handlers"])
        assert (await client.whoami())["username"] == "admin"
        assert len(await client.list_machines()) == 5
    finally:
        await client.close()
        assert await daemon.stop() == 0

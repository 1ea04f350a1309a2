"""The twistd plugins' options: bad configuration is a usage error listing every problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.python.usage import UsageError

from clusterd import tap as cluster_tap
from outpost.secret import write_secret
from regiond import tap as region_tap
from tests.daemons import env


def test_region_options_report_every_config_problem(tmp_path: Path) -> None:
    config = tmp_path / "region.yaml"
    config.write_text("rpc: {listen: nonsense}\nhttp: {listen: 'tcp:notaport'}\ncolour: blue\n")
    with pytest.raises(UsageError) as info:
        region_tap.Options().parseOptions(["--config", str(config)])
    message = str(info.value)
    assert "rpc.listen" in message and "http.listen" in message and "colour: unknown key" in message


def test_region_options_without_a_config_use_the_defaults() -> None:
    options = region_tap.Options()
    options.parseOptions([])
    assert options["parsed"].rpc.listen == "tcp:5250:interface=127.0.0.1"
    assert options["parsed"].http.listen == "tcp:5240:interface=127.0.0.1"


def test_cluster_flags_override_the_file_and_make_a_lasting_uuid(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("regions: ['http://file:5240/']\nname: from-file\n")
    write_secret(tmp_path / "secret", b"s" * 32)
    argv = ["--config", str(config), "--name", "from-flag", "--state-dir", str(tmp_path / "state"), "--secret-file", str(tmp_path / "secret")]
    first = cluster_tap.Options()
    first.parseOptions(argv)
    assert first["parsed"].name == "from-flag"
    assert first["parsed"].regions == ("http://file:5240/",)
    second = cluster_tap.Options()
    second.parseOptions([*argv, "--region", "http://a:1/", "--region", "http://b:2/"])
    assert second["parsed"].regions == ("http://a:1/", "http://b:2/")
    assert first["uuid"] == second["uuid"]


def test_cluster_without_a_secret_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        cluster_tap.Options().parseOptions(["--region", "http://r:5240/", "--state-dir", str(tmp_path)])


def test_cluster_without_regions_is_a_usage_error(tmp_path: Path) -> None:
    write_secret(tmp_path / "secret", b"s" * 32)
    with pytest.raises(UsageError, match="regions: required"):
        cluster_tap.Options().parseOptions(["--state-dir", str(tmp_path)])


def test_twistd_prints_the_problems_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "region.yaml"
    config.write_text("database: {pool_size: -1}\n")
    twistd = str(Path(sys.executable).parent / "twistd")
    result = subprocess.run([twistd, "-n", "regiond", "--config", str(config)], env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "database.pool_size" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_storage_section_turns_on_the_storage_resources_api(tmp_path: Path) -> None:
    from regiond.app import RegionApp

    config = tmp_path / "region.yaml"
    config.write_text(
        "storage:\n"
        "  waldur_api_url: http://waldur.example/api/\n"
        "  waldur_api_token: secret-token\n"
        "  storage_systems: {capstor: capstor-offering}\n"
    )
    options = region_tap.Options()
    options.parseOptions(["--config", str(config)])
    parsed = options["parsed"]
    assert parsed.storage is not None and "secret-token" not in repr(parsed.storage)
    app = RegionApp(object(), object(), storage_config=parsed.storage)  # type: ignore[arg-type]
    app.attach_process(1)
    templates = {route.template for route in app.routes()}
    assert {"/api/storage-resources/", "/api/v1/storage/gid-cache"} <= templates


def test_a_region_that_cannot_start_exits_non_zero(tmp_path: Path) -> None:
    from tests.daemons import TWISTD, free_port

    config = tmp_path / "region.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "database: {dsn: 'host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=2'}\n"
        f"rpc: {{listen: 'tcp:{free_port()}:interface=127.0.0.1'}}\nhttp: {{listen: 'tcp:{free_port()}:interface=127.0.0.1'}}\n"
    )
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "regiond", "--config", str(config)], env=env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "Region failed to start" in result.stdout


def _cluster_tree(tmp_path: Path, yaml_text: str) -> tuple[object, list[object]]:
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml_text)
    write_secret(tmp_path / "secret", b"s" * 32)
    options = cluster_tap.Options()
    options.parseOptions(["--config", str(config), "--state-dir", str(tmp_path / "state"), "--secret-file", str(tmp_path / "secret")])
    from twisted.internet.task import Clock

    top = cluster_tap.build_service(Clock(), options)
    return options, list(top)


def test_the_cluster_does_infrastructure_work_with_its_journal_in_the_state_dir(tmp_path: Path) -> None:
    from clusterd.connector import RegionConnector
    from clusterd.infrastructure.work import InfrastructureWork
    from clusterd.site import SiteService

    options, services = _cluster_tree(
        tmp_path,
        "regions: ['http://r:5240/']\n"
        "infrastructure: {drivers: {acme: {zone: north}}, monitor: {interval: 2, max_interval: 20}}\n",
    )
    [work] = [s for s in services if isinstance(s, InfrastructureWork)]
    kinds = [type(s) for s in services]
    assert kinds.index(SiteService) < kinds.index(InfrastructureWork) < kinds.index(RegionConnector), (
        "the journal is loaded before the region can call, and after a simulated VIM is up")
    assert work.state_dir == tmp_path / "state" / "infrastructure"
    assert (work.interval, work.max_interval) == (2.0, 20.0)
    assert work.registry.configs == {"acme": {"zone": "north"}}
    assert work.registry.context.state_dir == tmp_path / "state" / "infrastructure" / "drivers"
    [site] = [s for s in services if isinstance(s, SiteService)]
    assert site.infrastructure is work
    assert work.registry.context.machines is site.machines and work.registry.context.volumes is site.volumes
    [connector] = [s for s in services if isinstance(s, RegionConnector)]
    assert "infrastructure/1" in connector.capabilities

    class Proto:
        pass

    responders = connector.locator_factory(Proto())  # type: ignore[misc]
    assert responders._infrastructure is work  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_simulated_vim_starts_with_the_site_and_the_simulated_driver_points_at_it(tmp_path: Path) -> None:
    import treq
    from twisted.internet import reactor

    from clusterd.infrastructure.work import InfrastructureWork
    from clusterd.site import SiteService

    config = tmp_path / "cluster.yaml"
    config.write_text("regions: ['http://r:5240/']\n"
                      "simulate: {vim: {create_duration: 0.5}}\n"
                      "infrastructure: {drivers: {simulated: {timeout: 7}}}\n")
    write_secret(tmp_path / "secret", b"s" * 32)
    options = cluster_tap.Options()
    options.parseOptions(["--config", str(config), "--state-dir", str(tmp_path / "state"), "--secret-file", str(tmp_path / "secret")])
    services = list(cluster_tap.build_service(reactor, options))
    [site] = [s for s in services if isinstance(s, SiteService)]
    [work] = [s for s in services if isinstance(s, InfrastructureWork)]
    site.startService()
    try:
        await site._started  # type: ignore[attr-defined]
        settings = work.registry.configs["simulated"]
        assert settings["timeout"] == 7, "the configured settings are kept"
        assert settings["url"].startswith("http://127.0.0.1:")
        response = await treq.get(settings["url"].rstrip("/") + "/v1", timeout=10)
        assert response.code == 200
        await treq.content(response)
    finally:
        await site.stopService()
    assert site._vim is None  # type: ignore[attr-defined]

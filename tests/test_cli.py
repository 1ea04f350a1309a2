"""The `outpost` admin command against a real region daemon: output, --json and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from outpost import cli, cliutil
from tests.daemons import api_get, env, eventually, free_port, make_cluster, make_region, state_dir


def run(*args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outpost", *args], env=env(), capture_output=True, text=True, timeout=60, **kw)


@pytest_twisted.async_yield_fixture(scope="module")
async def live():
    base = state_dir()
    region = make_region(base)
    cluster = make_cluster(base, "cli-site", region, simulate_maas={"machines": 5, "seed": 3})
    region.start()
    try:
        await region.wait_healthy()
        token = await region.make_token("admin")
        cluster.start()

        async def registered() -> Any:
            code, body = await api_get(region, "/api/v1/clusters?connected=true", token)
            return body["items"] if code == 200 and body["total"] == 1 else None

        items = await eventually(registered, 30, "the cluster to register")

        async def synced() -> Any:
            code, body = await api_get(region, "/api/v1/machines", token)
            return code == 200 and body["total"] == 5

        await eventually(synced, 30, "the first inventory sync")
        yield {"region": region, "token": token, "uuid": items[0]["uuid"], "base": base}
    finally:
        await cluster.stop()
        await region.stop()
    shutil.rmtree(base, ignore_errors=True)


async def outpost(live: dict, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    return await deferToThread(run, "--url", live["region"].url, "--token", token or live["token"], *args)


@pytest_twisted.ensureDeferred
async def test_clusters_lists_a_table_and_json(live) -> None:
    table = await outpost(live, "clusters")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["UUID", "NAME", "CONNECTED"]
    assert "cli-site" in table.stdout
    as_json = await outpost(live, "--json", "clusters")
    items = json.loads(as_json.stdout)
    assert [c["name"] for c in items] == ["cli-site"] and items[0]["connected"] is True


@pytest_twisted.ensureDeferred
async def test_status_reports_health_and_counts(live) -> None:
    result = await outpost(live, "--json", "status")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["region"]["status"] == "ok"
    assert status["clusters"] == {"total": 1, "connected": 1, "disconnected": 0}


@pytest_twisted.ensureDeferred
async def test_ping_prints_latency(live) -> None:
    result = await outpost(live, "clusters", "ping", live["uuid"])
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert result.stdout.strip().endswith("ms")


@pytest_twisted.ensureDeferred
async def test_exit_codes_scripts_can_rely_on(live) -> None:
    missing = await outpost(live, "clusters", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == cli.EXIT_NOT_FOUND and "no cluster" in missing.stderr
    bad_token = await outpost(live, "clusters", token="opt_wrong")
    assert bad_token.returncode == cli.EXIT_AUTH
    unreachable = await deferToThread(run, "--url", f"http://127.0.0.1:{free_port()}/", "--token", "x", "clusters")
    assert unreachable.returncode == cli.EXIT_UNAVAILABLE
    usage = await deferToThread(run, "clusters", "frobnicate")
    assert usage.returncode == cli.EXIT_USAGE
    for result in (missing, bad_token, unreachable):
        assert "Traceback" not in result.stderr


@pytest_twisted.ensureDeferred
async def test_token_lifecycle_through_the_database(live) -> None:
    config = str(live["region"].config)
    made = await deferToThread(run, "--json", "token", "--config", config, "create", "--role", "read", "--name", "ci")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["role"] == "read" and created["token"].startswith("opt_")
    listed = await deferToThread(run, "--json", "tokens", "--config", config, "list")  # the documented spelling; token is an alias
    tokens = json.loads(listed.stdout)
    assert any(t["id"] == created["id"] and t["role"] == "read" for t in tokens)
    assert created["token"] not in listed.stdout, "token values are never shown again"
    # A read token may list but not ping.
    assert (await outpost(live, "clusters", token=created["token"])).returncode == 0
    assert (await outpost(live, "clusters", "ping", live["uuid"], token=created["token"])).returncode == cli.EXIT_AUTH
    revoked = await deferToThread(run, "token", "--config", config, "revoke", str(created["id"]))
    assert revoked.returncode == 0
    assert (await outpost(live, "clusters", token=created["token"])).returncode == cli.EXIT_AUTH
    again = await deferToThread(run, "token", "--config", config, "revoke", str(created["id"]))
    assert again.returncode == cli.EXIT_NOT_FOUND


@pytest.mark.parametrize("argv", [[], ["token"], ["token", "create"], ["tokens"], ["tokens", "create"], ["clusters"], ["clusters", "ping"],
                                  ["status"], ["machines"], ["machines", "list"], ["machines", "power"], ["machines", "power-query"],
                                  ["secret"], ["secret", "show-path"], ["secret", "status"], ["secret", "rotate"],
                                  ["secret", "rotate", "add"], ["secret", "rotate", "promote"], ["secret", "rotate", "retire"]])
def test_every_level_has_help(argv: list[str]) -> None:
    result = run(*argv, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_tokens_is_the_documented_spelling_and_token_still_works() -> None:
    assert "tokens (token)" in run("--help").stdout
    for spelling in ("tokens", "token"):
        assert cli.parser().parse_args([spelling, "revoke", "7"]).func is cli.cmd_token_revoke


def test_token_comes_from_flag_then_environment_then_a_private_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OUTPOST_TOKEN", raising=False)
    with pytest.raises(cli.CommandError) as info:
        cliutil.find_token(None)
    assert info.value.code == cli.EXIT_AUTH
    path = tmp_path / ".config" / "outpost" / "token"
    path.parent.mkdir(parents=True)
    path.write_text("opt_file\n")
    path.chmod(0o644)
    with pytest.raises(cli.CommandError, match="readable by others"):
        cliutil.find_token(None)
    path.chmod(0o600)
    assert cliutil.find_token(None) == "opt_file"
    monkeypatch.setenv("OUTPOST_TOKEN", "opt_env")
    assert cliutil.find_token(None) == "opt_env"
    assert cliutil.find_token("opt_flag") == "opt_flag"


def test_table_aligns_columns() -> None:
    assert cli.table([("a", 1), ("bbb", None)], ["X", "YY"]) == "X    YY\na    1\nbbb"


@pytest_twisted.ensureDeferred
async def test_machines_list_show_power_and_power_query(live) -> None:
    listed = await outpost(live, "--json", "machines", "list")
    assert listed.returncode == 0, listed.stderr
    machines = json.loads(listed.stdout)
    assert len(machines) == 5
    table = await outpost(live, "machines", "list", "--cluster", "cli-site")
    assert table.stdout.splitlines()[0].split()[:4] == ["CLUSTER", "SYSTEM_ID", "HOSTNAME", "STATUS"]
    ready = [m for m in machines if m["status"] == "Ready"]
    target = ready[0]["system_id"]
    shown = await outpost(live, "--json", "machines", "show", "cli-site", target)
    assert json.loads(shown.stdout)["system_id"] == target
    # MAAS refuses to power on a machine nobody has allocated: the outcome says so, and the exit code is 1.
    refused = await outpost(live, "--json", "machines", "power", "cli-site", target, "on", "--wait", "--wait-timeout", "60")
    assert refused.returncode == cli.EXIT_ERROR, refused.stdout
    outcome = json.loads(refused.stdout)
    assert outcome["outcome"] == "failed" and "allocated" in outcome["error"]
    accepted = await outpost(live, "machines", "power", "cli-site", target, "off")
    assert accepted.returncode == 0 and "accepted" in accepted.stdout
    queried = await outpost(live, "--json", "machines", "power-query")
    assert queried.returncode == 0, queried.stderr
    answer = json.loads(queried.stdout)
    assert len(answer["results"]) == 5 and answer["failures"] == []
    missing = await outpost(live, "machines", "show", "cli-site", "nosuch")
    assert missing.returncode == cli.EXIT_NOT_FOUND
    bad = await outpost(live, "machines", "power", "nosuch-site", target, "on")
    assert bad.returncode == cli.EXIT_NOT_FOUND
    synced = await outpost(live, "machines", "sync")
    assert synced.returncode == 0


@pytest_twisted.ensureDeferred
async def test_events_lists_the_audit_log_with_filters(live) -> None:
    result = await outpost(live, "--json", "events", "--type", "cluster.connected")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and all(e["type"] == "cluster.connected" for e in events)
    table = await outpost(live, "events", "--limit", "3")
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "TIME", "TYPE"]
    bad = await outpost(live, "events", "--cluster", "not-a-uuid")
    assert bad.returncode == cli.EXIT_ERROR and "cluster" in bad.stderr


@pytest_twisted.ensureDeferred
async def test_storage_without_a_storage_section_is_not_found(live) -> None:
    result = await outpost(live, "storage")
    assert result.returncode == cli.EXIT_NOT_FOUND

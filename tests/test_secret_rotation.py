"""
Rotating the RPC secret: stored CloudStack credentials stay readable
(sealed with the prover, opened with any accepted secret, re-encrypted when
the prover changes); the ``outpost secret`` commands keep the file private
and never print a secret; and real daemons stay connected through the three
steps and reconnect after each.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from outpost import cli, cli_secret
from outpost.secret import SecretFile, Secrets, fingerprint, load_secrets, update_secrets, write_secret, write_secrets
from regiond.db import Database
from regiond.volumes.config import CloudStackConfigStore, CredentialResealer, CredentialsUnreadable
from tests.daemons import api_get, env, eventually, make_cluster, make_region, state_dir
from tests.pg import wait_for

OLD, NEW = b"o" * 32, b"n" * 32
API_KEY, SECRET_KEY = "rotation-api-key", "rotation-secret-key-0123456789"


def config(name: str = "cs-rot") -> dict[str, Any]:
    return {"name": name, "api_url": "http://127.0.0.1:1/client/api", "api_key": API_KEY, "secret_key": SECRET_KEY,
            "zone": "zone-1", "oma_vm_id": str(uuidlib.uuid4())}


async def stored_config(db: Database, source: Any, name: str = "cs-rot") -> tuple[CloudStackConfigStore, str]:
    cluster = str(uuidlib.uuid4())
    await db.execute("INSERT INTO clusters (uuid, name) VALUES (%s, %s)", (cluster, name))
    store = CloudStackConfigStore(db, source)
    await store.create(cluster, config(name), actor="test")
    return store, cluster


def secret_file(tmp_path: Path, *secrets: bytes) -> SecretFile:
    path = tmp_path / "secret"
    write_secrets(path, Secrets.of(*secrets))
    return SecretFile.load(path)


# -- stored credentials across the rotation --------------------------------------


@pytest_twisted.ensureDeferred
async def test_credentials_stay_readable_through_add_promote_and_retire(db: Database, tmp_path: Path) -> None:
    source = secret_file(tmp_path, OLD)
    store, cluster = await stored_config(db, source)
    path = source.path

    update_secrets(path, lambda s: s.with_added(NEW))
    assert (await store.for_cluster(cluster))["secret_key"] == SECRET_KEY
    report = await store.report()
    assert (report.prover, report.total, report.current, report.retire_safe) == (fingerprint(OLD), 1, 1, True)

    update_secrets(path, lambda s: s.promoted())
    assert (await store.for_cluster(cluster))["secret_key"] == SECRET_KEY, "the old secret is still accepted"
    report = await store.report()
    assert report.older == ("cs-rot",) and not report.retire_safe, "sealed with the old prover: not safe to retire yet"

    resealed = await store.reseal()
    assert resealed.older == ("cs-rot",) and resealed.current == 1
    assert (await store.report()).retire_safe
    again = await store.reseal()
    assert again.older == (), "resealing is cheap to repeat: nothing left to do"

    update_secrets(path, lambda s: s.retired())
    whole = await store.for_cluster(cluster)
    assert (whole["api_key"], whole["secret_key"]) == (API_KEY, SECRET_KEY)
    # Updates after the rotation seal with the new secret, and read back.
    await store.update(cluster, {"api_key": "api-key-2"}, actor="test")
    assert (await store.for_cluster(cluster))["api_key"] == "api-key-2"
    events = await db.fetch("SELECT type, subject, data FROM events WHERE type = 'cloudstack.credentials.resealed'")
    assert [(e["subject"], e["data"]["configurations"]) for e in events] == [(fingerprint(NEW), ["cs-rot"])]


@pytest_twisted.ensureDeferred
async def test_retiring_before_the_reseal_makes_credentials_unreadable_with_a_clear_error(db: Database, tmp_path: Path) -> None:
    source = secret_file(tmp_path, OLD)
    store, cluster = await stored_config(db, source)
    write_secrets(source.path, Secrets.of(NEW))  # the old secret dropped without the steps
    with pytest.raises(CredentialsUnreadable, match=f"cs-rot open with none of the region's RPC secrets \\({fingerprint(NEW)}\\)"):
        await store.for_cluster(cluster)
    report = await store.reseal()
    assert report.unreadable == ("cs-rot",) and report.current == 0


@pytest_twisted.ensureDeferred
async def test_the_resealer_reseals_at_start_and_when_the_prover_changes(db: Database, tmp_path: Path) -> None:
    source = secret_file(tmp_path, OLD)
    store, cluster = await stored_config(db, source)
    clock = Clock()
    resealer = CredentialResealer(clock, store, interval=5.0)
    resealer.start()
    await wait_for(lambda: resealer.sealed_with == fingerprint(OLD))
    update_secrets(source.path, lambda s: s.with_added(NEW))
    assert await resealer.check() is None, "an added secret changes nothing: the prover is the same"
    update_secrets(source.path, lambda s: s.promoted())
    clock.advance(5.0)
    await wait_for(lambda: resealer.sealed_with == fingerprint(NEW))
    assert (await store.report()).retire_safe
    await resealer.stop()
    update_secrets(source.path, lambda s: s.retired())
    assert (await store.for_cluster(cluster))["secret_key"] == SECRET_KEY


@pytest_twisted.ensureDeferred
async def test_a_store_with_one_fixed_secret_works_as_before(db: Database) -> None:
    store, cluster = await stored_config(db, OLD)
    assert (await store.for_cluster(cluster))["secret_key"] == SECRET_KEY
    assert (await store.report()).prover == fingerprint(OLD)


# -- the outpost secret commands ---------------------------------------------------


def outpost(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rotate_steps_keep_the_file_private_print_fingerprints_and_never_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    export = tmp_path / "new.hex"
    printed = ""

    code, out, err = outpost(capsys, "secret", "rotate", "add", "--file", str(path), "--export", str(export))
    assert code == 0, err
    new = load_secrets(export).prover
    assert load_secrets(path).accepted == (OLD, new)
    assert f"added {fingerprint(new)}" in out and f"{fingerprint(OLD)} still proves" in out
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    printed += out + err

    # The same secret installed on another host's file, from the exported copy and from standard input.
    other = tmp_path / "other"
    write_secret(other, OLD)
    code, out, err = outpost(capsys, "--json", "secret", "rotate", "add", "--file", str(other), "--secret-from", str(export))
    assert code == 0 and json.loads(out)["added"] == fingerprint(new) and load_secrets(other).accepted == (OLD, new)
    printed += out + err

    inode = path.stat().st_ino
    code, out, err = outpost(capsys, "secret", "rotate", "promote", "--file", str(path))
    assert code == 0 and f"{fingerprint(new)} proves now (was {fingerprint(OLD)})" in out
    assert path.stat().st_ino != inode, "written to a new file and renamed over the old"
    code, out, err = outpost(capsys, "secret", "rotate", "promote", "--file", str(path))
    assert code == 0 and "nothing changed" in out and load_secrets(path).prover == new
    printed += out + err

    code, out, err = outpost(capsys, "secret", "status", "--file", str(path))
    assert code == 0 and out.index(fingerprint(new)) < out.index(fingerprint(OLD)) and "proves" in out
    printed += out + err

    code, out, err = outpost(capsys, "secret", "rotate", "retire", "--file", str(path), fingerprint(new))
    assert code == 0 and f"retired {fingerprint(OLD)}" in out and load_secrets(path).accepted == (new,)
    printed += out + err

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.hex", "other", "secret"], "no temporary files left"
    for secret in (OLD, new):
        assert secret.hex() not in printed and secret.hex().upper() not in printed


def test_retire_on_a_host_that_missed_promote_is_refused_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    assert outpost(capsys, "secret", "rotate", "add", "--file", str(path))[0] == 0
    before = path.read_bytes()
    code, out, err = outpost(capsys, "secret", "rotate", "retire", "--file", str(path))
    assert code == cli.EXIT_ERROR and "does not prove yet" in err and "promote" in err
    assert path.read_bytes() == before


def test_promote_and_add_explain_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    code, _, err = outpost(capsys, "secret", "rotate", "promote", "--file", str(path))
    assert code == cli.EXIT_ERROR and "nothing to promote" in err
    code, _, err = outpost(capsys, "secret", "rotate", "promote", "--file", str(path), "abcd1234")
    assert code == cli.EXIT_ERROR and "no secret with fingerprint abcd1234" in err
    code, _, err = outpost(capsys, "secret", "rotate", "add", "--file", str(tmp_path / "missing"))
    assert code == cli.EXIT_ERROR and "does not exist" in err
    loose = tmp_path / "loose"
    loose.write_text(NEW.hex() + "\n")
    loose.chmod(0o644)
    code, _, err = outpost(capsys, "secret", "rotate", "add", "--file", str(path), "--secret-from", str(loose))
    assert code == cli.EXIT_ERROR and "chmod 600" in err and load_secrets(path).accepted == (OLD,)
    code, _, err = outpost(capsys, "secret", "rotate", "add", "--file", str(path), "--export", str(loose))
    assert code == cli.EXIT_ERROR and "exists already" in err and load_secrets(path).accepted == (OLD,)


def test_secret_from_standard_input(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path, OLD)
    result = subprocess.run([sys.executable, "-m", "outpost", "secret", "rotate", "add", "--file", str(path), "--secret-from", "-"],
                            input=NEW.hex() + "\n", env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert load_secrets(path).accepted == (OLD, NEW) and NEW.hex() not in result.stdout + result.stderr


def test_show_path_follows_each_daemons_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    region_yaml = tmp_path / "region.yaml"
    region_yaml.write_text(f"state_dir: {tmp_path / 'r'}\n")
    assert outpost(capsys, "secret", "show-path", "--region", "--config", str(region_yaml))[1].strip() == str(tmp_path / "r" / "secret")
    region_yaml.write_text(f"state_dir: {tmp_path / 'r'}\nsecret_file: {tmp_path / 'elsewhere'}\n")
    assert outpost(capsys, "secret", "show-path", "--region", "--config", str(region_yaml))[1].strip() == str(tmp_path / "elsewhere")
    # A cluster's file need not name its regions (they may come from flags).
    cluster_yaml = tmp_path / "cluster.yaml"
    cluster_yaml.write_text(f"state_dir: {tmp_path / 'c'}\n")
    assert outpost(capsys, "secret", "show-path", "--cluster", "--config", str(cluster_yaml))[1].strip() == str(tmp_path / "c" / "secret")
    assert outpost(capsys, "secret", "show-path", "--cluster")[1].strip() == "/var/lib/outpost/cluster/secret"
    code, _, err = outpost(capsys, "secret", "show-path", "--config", str(cluster_yaml))
    assert code == cli.EXIT_USAGE and "--region or --cluster" in err
    region_yaml.write_text("state_dir: [not, a, path]\n")
    code, _, err = outpost(capsys, "secret", "show-path", "--region", "--config", str(region_yaml))
    assert code == cli.EXIT_USAGE and "state_dir" in err


def test_without_a_role_the_one_existing_default_file_is_used(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    existing: set[str] = set()
    monkeypatch.setattr(cli_secret, "_exists", lambda p: str(p) in existing)
    code, _, err = outpost(capsys, "secret", "show-path")
    assert code == cli.EXIT_USAGE and "--region, --cluster or --file" in err
    existing.add("/var/lib/outpost/cluster/secret")
    code, out, _ = outpost(capsys, "--json", "secret", "show-path")
    assert code == 0 and json.loads(out) == {"path": "/var/lib/outpost/cluster/secret", "role": "cluster"}
    existing.add("/var/lib/outpost/region/secret")
    assert outpost(capsys, "secret", "show-path")[0] == cli.EXIT_USAGE


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outpost", *argv], env=env(), capture_output=True, text=True, timeout=60)


@pytest_twisted.ensureDeferred
async def test_region_retire_waits_until_the_credentials_are_resealed(db: Database, db_dsn: str, tmp_path: Path) -> None:
    source = secret_file(tmp_path, OLD)
    store, _ = await stored_config(db, source)
    path = str(source.path)
    update_secrets(source.path, lambda s: s.with_added(NEW))
    update_secrets(source.path, lambda s: s.promoted())

    status = await deferToThread(run, "--json", "secret", "status", "--region", "--file", path, "--dsn", db_dsn)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["credentials"] == {"prover": fingerprint(NEW), "total": 1, "current": 0,
                                                        "older": ["cs-rot"], "unreadable": [], "retire_safe": False}
    refused = await deferToThread(run, "secret", "rotate", "retire", "--region", "--file", path, "--dsn", db_dsn)
    assert refused.returncode == cli.EXIT_ERROR and "cs-rot" in refused.stderr and "still sealed" in refused.stderr
    assert load_secrets(source.path).accepted == (NEW, OLD), "nothing retired"

    await store.reseal()
    human = await deferToThread(run, "secret", "status", "--region", "--file", path, "--dsn", db_dsn)
    assert "1 sealed with the prover" in human.stdout and "retiring older secrets is safe" in human.stdout
    retired = await deferToThread(run, "secret", "rotate", "retire", "--region", "--file", path, "--dsn", db_dsn)
    assert retired.returncode == 0, retired.stderr
    assert load_secrets(source.path).accepted == (NEW,)


def test_region_retire_without_its_database_is_refused_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret"
    write_secrets(path, Secrets.of(OLD).with_added(NEW).promoted())
    dsn = f"host={tmp_path} port=1 dbname=nothing user=nobody connect_timeout=2"
    code, _, err = outpost(capsys, "secret", "rotate", "retire", "--region", "--file", str(path), "--dsn", dsn)
    assert code == cli.EXIT_UNAVAILABLE and "cannot check the region's stored CloudStack credentials" in err
    assert load_secrets(path).accepted == (NEW, OLD)
    code, _, err = outpost(capsys, "secret", "rotate", "retire", "--region", "--file", str(path), "--dsn", dsn, "--force")
    assert code == 0 and load_secrets(path).accepted == (NEW,)


# -- real daemons ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_cluster_stays_connected_through_the_rotation_and_reconnects_after_each_step() -> None:
    base = state_dir()
    region = make_region(base)
    cluster = make_cluster(base, "rot-site", region)
    # The cluster gets its own copy of the secret file, as on a separate host.
    cluster_secret = base / "cluster-secret"
    cluster.argv[cluster.argv.index("--secret-file") + 1] = str(cluster_secret)
    region_args = ["--region", "--config", str(region.config)]
    cluster_args = ["--cluster", "--file", str(cluster_secret)]

    async def outpost_(*argv: str) -> subprocess.CompletedProcess:
        result = await deferToThread(run, *argv)
        assert result.returncode == 0, f"outpost {' '.join(argv)}: {result.stderr}"
        return result

    try:
        region.start()
        await region.wait_healthy()
        shown = (await outpost_("secret", "show-path", *region_args)).stdout.strip()
        assert shown == str(region.secret)
        shutil.copy(region.secret, cluster_secret)
        os.chmod(cluster_secret, 0o600)
        token = await region.make_token("admin")
        cluster.start()

        async def connected() -> dict[str, Any] | None:
            code, body = await api_get(region, "/api/v1/clusters?connected=true", token)
            return body["items"][0] if code == 200 and body["total"] == 1 else None

        uuid = (await eventually(connected, 30, "the cluster to register"))["uuid"]
        code, body, _ = await _put(region, f"/api/v1/clusters/{uuid}/cloudstack", token, config())
        assert code in (200, 201), body

        def registrations() -> int:
            return cluster.log_text().count("Registered with region")

        async def restart_cluster(step: str) -> None:
            before = registrations()
            await cluster.stop()
            cluster.start()

            async def back() -> bool:
                return registrations() > before and await connected() is not None

            await eventually(back, 30, f"the cluster to reconnect after {step}")

        async def still_connected(step: str) -> None:
            assert await connected() is not None, f"disconnected by {step}"
            assert registrations() == count, f"the cluster reconnected during {step}"
            assert "Lost region" not in cluster.log_text()[log_mark:], f"the connection dropped during {step}"

        # Step 1, region first: add a new secret there and export it; install the same one on the cluster.
        count, log_mark = registrations(), len(cluster.log_text())
        export = base / "new.hex"
        added = json.loads((await outpost_("--json", "secret", "rotate", "add", *region_args, "--export", str(export))).stdout)["added"]
        assert json.loads((await outpost_("--json", "secret", "rotate", "add", *cluster_args, "--secret-from", str(export))).stdout)["added"] == added
        secrets_used = [load_secrets(export).prover, load_secrets(cluster_secret).entries[0].secret]
        export.unlink()
        await still_connected("add")
        await restart_cluster("add")

        # Step 2, cluster first: promote.  The region re-encrypts the stored credentials on its own.
        count, log_mark = registrations(), len(cluster.log_text())
        await outpost_("secret", "rotate", "promote", *cluster_args, added)
        await outpost_("secret", "rotate", "promote", *region_args, added)
        await still_connected("promote")

        async def resealed() -> bool:
            result = await deferToThread(run, "--json", "secret", "status", *region_args)
            return result.returncode == 0 and (json.loads(result.stdout)["credentials"] or {}).get("retire_safe") is True

        await eventually(resealed, 30, "the region to re-encrypt the stored credentials")
        assert "Re-encrypted the stored CloudStack credentials of cs-rot with the RPC secret " + added in region.log_text()
        await restart_cluster("promote")

        # Step 3, region first: retire the old secret.
        count, log_mark = registrations(), len(cluster.log_text())
        await outpost_("secret", "rotate", "retire", *region_args, added)
        await outpost_("secret", "rotate", "retire", *cluster_args, added)
        assert load_secrets(region.secret).fingerprints == load_secrets(cluster_secret).fingerprints == (added,)
        await still_connected("retire")
        mark = len(cluster.log_text())
        await restart_cluster("retire")

        # The region still reads the credentials: it sends them to the reconnected cluster, and keeps
        # the secret key when only the API key changes.
        async def configured() -> bool:
            return "CloudStack configuration cs-rot (revision 1)" in cluster.log_text()[mark:]

        await eventually(configured, 30, "the cluster to get its CloudStack configuration")
        code, body, _ = await _put(region, f"/api/v1/clusters/{uuid}/cloudstack", token, {"api_key": "api-key-2"})
        assert code == 200 and body["configuration"]["revision"] == 2, body
        assert "failed to prove" not in region.log_text() + cluster.log_text()
        assert "probably does not accept" not in region.log_text() + cluster.log_text()
    finally:
        await cluster.stop()
        code = await region.stop()
        logs = region.log_text()
    assert code == 0, logs[-3000:]
    for text in (logs, cluster.log_text()):
        for secret in secrets_used:
            assert secret.hex() not in text
    shutil.rmtree(base, ignore_errors=True)


async def _put(region: Any, path: str, token: str, body: Any) -> tuple[int, Any, Any]:
    import treq

    response = await treq.put(region.url + path, json=body, headers={"Authorization": [f"Bearer {token}"]}, timeout=30)
    return response.code, await response.json(), response.headers

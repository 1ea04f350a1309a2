"""
End to end: real ``twistd regiond`` and ``twistd clusterd`` processes over
real sockets on 127.0.0.1, with the region's embedded PostgreSQL.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from regiond.db import Database, EmbeddedPostgres
from tests.daemons import api_get, api_post, eventually, make_cluster, make_region, state_dir


async def end_every_other_session(dsn: str) -> int:
    """End every session on the database of `dsn` but our own; how many ended."""
    db = await Database.connect(reactor, dsn, size=1)
    try:
        rows = await db.fetch(
            "SELECT pg_terminate_backend(pid, 5000) AS ended FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await db.close()
    return sum(1 for row in rows if row["ended"])


async def clusters_by_name(region: Any, token: str) -> dict[str, dict[str, Any]]:
    code, body = await api_get(region, "/api/v1/clusters", token)
    assert code == 200, body
    return {c["name"]: c for c in body["items"]}


@pytest_twisted.ensureDeferred
async def test_clusters_connect_disconnect_fail_fast_and_survive_region_and_database_restarts() -> None:
    base = state_dir()
    region = make_region(base)
    one = make_cluster(base, "site-one", region)
    two = make_cluster(base, "site-two", region)
    try:
        region.start()
        await region.wait_healthy()
        token = await region.make_token("admin")
        one.start()
        two.start()

        async def both_connected() -> dict[str, Any] | None:
            found = await clusters_by_name(region, token)
            ok = all(found.get(n, {}).get("connected") for n in ("site-one", "site-two"))
            return found if ok else None

        found = await eventually(both_connected, 30, "both clusters to register")
        uuid_two = found["site-two"]["uuid"]
        assert found["site-one"]["connections"] == 1

        # Kill one cluster outright: the region notices and shows it disconnected.
        two.kill()

        async def two_disconnected() -> bool:
            return not (await clusters_by_name(region, token))["site-two"]["connected"]

        await eventually(two_disconnected, 15, "site-two to show disconnected")
        code, body = await api_get(region, f"/api/v1/clusters/{uuid_two}", token)
        assert code == 200 and body["connected"] is False and body["connections"] == 0

        # A call to the disconnected cluster fails fast with 503 (NoConnectionsAvailable).
        started = time.monotonic()
        code, body, headers = await api_post(region, f"/api/v1/clusters/{uuid_two}/ping", token)
        assert code == 503, body
        assert body["error"]["code"] == "unavailable"
        assert headers.getRawHeaders("retry-after")
        assert time.monotonic() - started < 2.0
        # The live one answers.
        code, body, _ = await api_post(region, f"/api/v1/clusters/{found['site-one']['uuid']}/ping", token)
        assert code == 200 and body["latency_ms"] >= 0

        # Restart the region; bring the killed cluster back while it is down.
        assert await region.stop() == 0
        two.start()
        region.start()
        await region.wait_healthy()
        restarted = time.monotonic()
        found = await eventually(both_connected, 35, "both clusters to reconnect after the region restart")
        assert time.monotonic() - restarted < 35
        assert found["site-two"]["uuid"] == uuid_two, "a cluster keeps its uuid across restarts"

        # PostgreSQL ends every region session (as its own restart would): the
        # region reopens its connections as it uses them, and answers at once.
        ended = await end_every_other_session(EmbeddedPostgres(None, base / "region" / "postgres").dsn)
        assert ended >= 4, "the pool, the leadership and event LISTEN sessions"
        for _ in range(6):
            assert len(await clusters_by_name(region, token)) == 2
        assert await region.health() is not None
    finally:
        for daemon in (one, two):
            await daemon.stop()
        code = await region.stop()
        logs = region.log_text()
    assert code == 0, logs[-3000:]
    assert "Embedded PostgreSQL stopped" in logs
    # No secret ever reaches a log.
    secret = (base / "region" / "secret").read_text().strip()
    for log in (logs, one.log_text(), two.log_text()):
        assert secret not in log
        assert token not in log
        assert "Traceback" not in log and "Unhandled" not in log
    shutil.rmtree(base, ignore_errors=True)  # kept for reading when a test fails


@pytest_twisted.ensureDeferred
async def test_cluster_with_the_wrong_secret_never_registers() -> None:
    base = state_dir()
    region = make_region(base)
    impostor = make_cluster(base, "impostor", region)
    bad_secret = base / "bad-secret"
    bad_secret.write_text("00" * 32 + "\n")
    bad_secret.chmod(0o600)
    impostor.argv[impostor.argv.index("--secret-file") + 1] = str(bad_secret)
    try:
        region.start()
        await region.wait_healthy()
        token = await region.make_token("read")
        impostor.start()

        async def refused() -> bool:
            return "failed to prove the shared secret" in region.log_text()

        await eventually(refused, 30, "the region to refuse the impostor")
        code, body = await api_get(region, "/api/v1/clusters", token)
        assert code == 200 and body["total"] == 0
    finally:
        await impostor.stop()
        await region.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_a_cluster_given_one_region_connects_to_every_region_process() -> None:
    base = state_dir()
    first = make_region(base)
    second_dir = base / "second"
    second_dir.mkdir()
    second_dir.chmod(0o755)
    dsn = EmbeddedPostgres(None, base / "region" / "postgres").dsn
    second = make_region(second_dir, database={"dsn": dsn}, secret_file=str(base / "region" / "secret"))
    cluster = make_cluster(base, "site-multi", first)  # told only of the first
    try:
        first.start()
        await first.wait_healthy()
        second.start()
        await second.wait_healthy()
        token = await first.make_token("read")

        async def endpoints() -> bool:
            code, body = await api_get(second, "/api/v1/rpc-endpoints", token)
            return len(body["endpoints"]) == 2

        await eventually(endpoints, 10, "both region processes to be listed")
        cluster.start()

        async def connected_to_both() -> bool:
            found = await clusters_by_name(first, token)
            return found.get("site-multi", {}).get("connections") == 2

        await eventually(connected_to_both, 30, "the cluster to connect to both region processes")
        # Either process answers for the cluster.
        code, body = await api_get(second, "/api/v1/clusters?connected=true", token)
        assert body["total"] == 1 and body["items"][0]["connections"] == 2

        # One region process goes: the cluster keeps its other connection.
        assert await second.stop() == 0

        async def one_left() -> bool:
            found = await clusters_by_name(first, token)
            return found["site-multi"]["connections"] == 1

        await eventually(one_left, 15, "the cluster to show one connection")
    finally:
        await cluster.stop()
        await second.stop()
        await first.stop()
    shutil.rmtree(base, ignore_errors=True)

"""Schema migrations: applied once, recorded, safe from several processes."""

from __future__ import annotations

import uuid
from typing import Any
from collections.abc import AsyncIterator

import psycopg2.errors
import pytest
import pytest_twisted
from psycopg2.sql import SQL, Identifier, Literal
from twisted.internet.defer import Deferred, gatherResults

from regiond.db import (
    MIGRATIONS,
    Database,
    Migration,
    MigrationError,
    applied_versions,
    migrate,
)

_TABLES = {
    "api_tokens",
    "cloudstack_configs",
    "clusters",
    "events",
    "infrastructure_requests",
    "infrastructures",
    "maas_syncs",
    "machines",
    "region_processes",
    "rpc_connections",
    "schema_migrations",
    "volume_jobs",
    "volumes",
    "webhook_cursors",
}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def empty_db(empty_db_dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(_reactor(), empty_db_dsn, size=2)
    try:
        yield database
    finally:
        await database.close()


async def _tables(db: Database) -> set[str]:
    rows = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {row["table_name"] for row in rows}


def test_migration_versions_start_at_1_and_increase_by_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[0].name == "initial"


@pytest_twisted.ensureDeferred
async def test_migrate_applies_all_and_records_versions(empty_db: Database) -> None:
    assert await migrate(empty_db) == [m.version for m in MIGRATIONS]
    rows = await empty_db.fetch(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    )
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in MIGRATIONS
    ]
    assert all(r["applied_at"] is not None for r in rows)
    assert await _tables(empty_db) == _TABLES


@pytest_twisted.ensureDeferred
async def test_migrate_again_applies_nothing(empty_db: Database) -> None:
    await migrate(empty_db)
    assert await migrate(empty_db) == []
    assert await applied_versions(empty_db) == {m.version for m in MIGRATIONS}


@pytest_twisted.ensureDeferred
async def test_the_db_fixture_is_already_migrated(db: Database) -> None:
    assert await applied_versions(db) == {m.version for m in MIGRATIONS}
    assert await migrate(db) == []


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
@pytest_twisted.ensureDeferred
async def test_concurrent_migrations_apply_each_exactly_once(
    empty_db_dsn: str, isolation: str
) -> None:
    # Two more migrations that would fail if run twice (the table exists).
    migrations = [
        *MIGRATIONS,
        Migration(101, "extra a", "CREATE TABLE extra_a (id integer)"),
        Migration(102, "extra b", "CREATE TABLE extra_b (id integer)"),
    ]
    # Whatever isolation the database defaults to.
    setup = await Database.connect(_reactor(), empty_db_dsn, size=1)
    try:
        name = (await setup.fetch("SELECT current_database() AS d"))[0]["d"]
        await setup.execute(
            SQL("ALTER DATABASE {} SET default_transaction_isolation = {}").format(
                Identifier(name), Literal(isolation)
            )
        )
    finally:
        await setup.close()
    # Separate pools, as separate region processes would have.
    regions = [
        await Database.connect(_reactor(), empty_db_dsn, size=1) for _ in range(3)
    ]
    try:
        results = await gatherResults(
            [Deferred.fromCoroutine(migrate(db, migrations)) for db in regions]
        )
        applied = sorted(v for result in results for v in result)
        assert applied == [m.version for m in migrations]
        rows = await regions[0].fetch(
            "SELECT version FROM schema_migrations ORDER BY version"
        )
        assert [r["version"] for r in rows] == [m.version for m in migrations]
    finally:
        for db in regions:
            await db.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_migration_is_named_and_leaves_no_trace(
    empty_db: Database,
) -> None:
    migrations = [
        *MIGRATIONS,
        Migration(
            101, "broken", "CREATE TABLE half_done (id integer); SELECT nonsense"
        ),
    ]
    with pytest.raises(MigrationError, match=r"migration 101 \(broken\)"):
        await migrate(empty_db, migrations)
    # Earlier migrations ran in their own transactions and stay applied.
    assert await applied_versions(empty_db) == {m.version for m in MIGRATIONS}
    assert "half_done" not in await _tables(empty_db)


@pytest_twisted.ensureDeferred
async def test_versions_out_of_order_are_refused(empty_db: Database) -> None:
    migrations = [Migration(2, "b", "SELECT 1"), Migration(1, "a", "SELECT 1")]
    with pytest.raises(MigrationError, match="increasing"):
        await migrate(empty_db, migrations)
    assert await applied_versions(empty_db) == set()


@pytest_twisted.ensureDeferred
async def test_deleting_a_cluster_deletes_its_rpc_connections(db: Database) -> None:
    cluster = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO clusters (uuid, name) VALUES (%s, 'site')", (cluster,)
    )
    region = await db.fetchone(
        "INSERT INTO region_processes (hostname, pid, rpc_host, rpc_port)"
        " VALUES ('r1', 42, '127.0.0.1', 5250) RETURNING id"
    )
    assert region is not None
    await db.execute(
        "INSERT INTO rpc_connections (region_process_id, cluster_uuid, peer)"
        " VALUES (%s, %s, 'peer')",
        (region["id"], cluster),
    )
    await db.execute("DELETE FROM clusters WHERE uuid = %s", (cluster,))
    assert await db.fetch("SELECT * FROM rpc_connections") == []


@pytest_twisted.ensureDeferred
async def test_token_roles_are_limited_to_admin_and_read(db: Database) -> None:
    await db.execute("INSERT INTO api_tokens (role, token_hash) VALUES ('read', 'h1')")
    with pytest.raises(psycopg2.errors.CheckViolation):
        await db.execute(
            "INSERT INTO api_tokens (role, token_hash) VALUES ('root', 'h2')"
        )

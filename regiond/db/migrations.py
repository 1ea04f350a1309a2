"""
The region's schema, as an ordered list of migrations applied at start.

Several region processes may start at once against one database, so each
migration runs in its own transaction that first takes a transaction-level
advisory lock and then re-checks whether another process applied it in the
meantime. The version table records what has been applied; a migration, once
released, is never edited: change the schema by appending a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from twisted.logger import Logger

from regiond.db.pool import Database, Transaction
from regiond.errors import MigrationError

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "Migration",
    "applied_versions",
    "migrate",
]

_log = Logger()

#: The advisory lock every region process takes to migrate ("outpost" in
#: ASCII). Advisory locks are per database, so it only needs to be constant.
MIGRATION_LOCK_KEY = 0x6F7574706F7374


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


_INITIAL = """
CREATE TABLE clusters (
    uuid uuid PRIMARY KEY,
    name text NOT NULL,
    version text NOT NULL DEFAULT '',
    capabilities jsonb NOT NULL DEFAULT '[]',
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE region_processes (
    id bigserial PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    rpc_host text NOT NULL,
    rpc_port integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rpc_connections (
    id bigserial PRIMARY KEY,
    region_process_id bigint NOT NULL
        REFERENCES region_processes (id) ON DELETE CASCADE,
    cluster_uuid uuid NOT NULL REFERENCES clusters (uuid) ON DELETE CASCADE,
    peer text NOT NULL,
    connected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rpc_connections_cluster_uuid_idx ON rpc_connections (cluster_uuid);

CREATE TABLE api_tokens (
    id bigserial PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    role text NOT NULL CHECK (role IN ('admin', 'read')),
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL,
    actor text NOT NULL DEFAULT '',
    cluster_uuid uuid,
    subject text NOT NULL DEFAULT '',
    outcome text NOT NULL DEFAULT '',
    data jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_cluster_uuid_id_idx ON events (cluster_uuid, id);
"""

#: In version order. Append only.
_MACHINES = """
CREATE TABLE machines (
    cluster_uuid uuid NOT NULL REFERENCES clusters(uuid) ON DELETE CASCADE,
    system_id text NOT NULL,
    hostname text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT '',
    status_code integer,
    power_state text NOT NULL DEFAULT 'unknown',
    power_type text NOT NULL DEFAULT '',
    architecture text NOT NULL DEFAULT '',
    cpu_count integer NOT NULL DEFAULT 0,
    memory_mb bigint NOT NULL DEFAULT 0,
    storage_mb bigint NOT NULL DEFAULT 0,
    zone text NOT NULL DEFAULT '',
    pool text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{}',
    ip_addresses text[] NOT NULL DEFAULT '{}',
    owner text NOT NULL DEFAULT '',
    osystem text NOT NULL DEFAULT '',
    distro_series text NOT NULL DEFAULT '',
    missing boolean NOT NULL DEFAULT false,
    data jsonb NOT NULL DEFAULT '{}',
    first_seen timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_uuid, system_id)
);
CREATE INDEX machines_status ON machines (status);
CREATE INDEX machines_hostname ON machines (hostname);

CREATE TABLE maas_syncs (
    cluster_uuid uuid PRIMARY KEY REFERENCES clusters(uuid) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome text NOT NULL,
    error text NOT NULL DEFAULT '',
    machines integer NOT NULL DEFAULT 0,
    changed integer NOT NULL DEFAULT 0
);

CREATE INDEX events_type ON events (type, id);
CREATE INDEX events_request ON events ((data->>'request_id')) WHERE data ? 'request_id';
"""

_VOLUMES = """
CREATE TABLE cloudstack_configs (
    cluster_uuid uuid PRIMARY KEY REFERENCES clusters(uuid) ON DELETE CASCADE,
    name text NOT NULL UNIQUE,
    api_url text NOT NULL,
    domain text NOT NULL DEFAULT '/',
    zone text NOT NULL,
    disk_offering text NOT NULL DEFAULT '',
    oma_vm_id uuid NOT NULL,
    -- api_key and secret_key, encrypted (Fernet, key derived from the region's secret)
    credentials bytea NOT NULL,
    revision integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE volume_jobs (
    job_id text PRIMARY KEY,
    cluster_uuid uuid NOT NULL REFERENCES clusters(uuid) ON DELETE CASCADE,
    state text NOT NULL,
    keep boolean NOT NULL DEFAULT false,
    error text NOT NULL DEFAULT '',
    undone jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE volumes (
    job_id text NOT NULL REFERENCES volume_jobs(job_id) ON DELETE CASCADE,
    disk_name text NOT NULL,
    size_gb integer NOT NULL,
    state text NOT NULL DEFAULT 'Pending',
    volume_id text NOT NULL DEFAULT '',
    device text NOT NULL DEFAULT '',
    mount_point text NOT NULL DEFAULT '',
    error text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, disk_name)
);
"""

_INFRASTRUCTURE = """
-- Infrastructure created through the Ignition-compatible API, per cluster
-- (a driver's ids are only unique at its location).
CREATE TABLE infrastructures (
    cluster_uuid uuid NOT NULL REFERENCES clusters(uuid) ON DELETE CASCADE,
    id text NOT NULL,
    location_name text NOT NULL,
    location_type text NOT NULL DEFAULT '',
    instance_name text NOT NULL DEFAULT '',
    template_type text NOT NULL DEFAULT '',
    template_sha256 text NOT NULL DEFAULT '',
    state text NOT NULL CHECK (state IN ('creating', 'created', 'create_failed', 'deleting', 'deleted', 'delete_failed')),
    outputs jsonb,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_uuid, id)
);

-- Each create or delete request; completions are de-duplicated by request id.
CREATE TABLE infrastructure_requests (
    cluster_uuid uuid NOT NULL,
    request_id text NOT NULL,
    infrastructure_id text NOT NULL,
    operation text NOT NULL CHECK (operation IN ('create', 'delete')),
    status text NOT NULL CHECK (status IN ('IN_PROGRESS', 'COMPLETE', 'FAILED')),
    failure_code text,
    failure_description text,
    outputs jsonb,
    actor text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (cluster_uuid, request_id),
    FOREIGN KEY (cluster_uuid, infrastructure_id) REFERENCES infrastructures (cluster_uuid, id) ON DELETE CASCADE
);
CREATE INDEX infrastructure_requests_infrastructure_idx ON infrastructure_requests (cluster_uuid, infrastructure_id);

-- GET /api/v1/events?request_id= matches Outpost's request_id and Ignition's requestId.
CREATE INDEX events_any_request_id ON events ((coalesce(data->>'request_id', data->>'requestId')));

-- Every statement that adds events wakes the event streams of every region
-- process (one notification per statement, however many rows: listeners
-- read everything after their cursor).
CREATE FUNCTION outpost_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outpost_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION outpost_events_notify();

-- How far each configured webhook has been delivered in the event log.
CREATE TABLE webhook_cursors (
    url text PRIMARY KEY,
    after_id bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""

MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _INITIAL),
    Migration(2, "machines", _MACHINES),
    Migration(3, "volumes", _VOLUMES),
    Migration(4, "infrastructure", _INFRASTRUCTURE),
]

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(
    db: Database, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """
    Apply the migrations the database lacks; return their versions, in order.

    Safe to run from several processes at once: each migration is applied by
    exactly one of them, and every call returns once all are applied.
    """
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise MigrationError(
            f"migration versions are not strictly increasing: {versions}"
        )

    # Usually everything is applied already: find out without the lock.
    known = await applied_versions(db)
    applied = []
    for migration in migrations:
        if migration.version in known:
            continue
        try:
            done = await db.transaction(lambda tx: _apply(tx, migration))
        except Exception as e:
            raise MigrationError.from_migration(
                migration.version, migration.name, e
            ) from e
        if done:
            _log.info(
                "Applied schema migration {version} ({name})",
                version=migration.version,
                name=migration.name,
            )
            applied.append(migration.version)
    return applied


async def applied_versions(db: Database) -> set[int]:
    """The versions recorded as applied (none in a database never migrated)."""
    row = await db.fetchone(
        "SELECT to_regclass('schema_migrations') IS NOT NULL AS present"
    )
    if row is None or not row["present"]:
        return set()
    return {
        r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")
    }


async def _apply(tx: Transaction, migration: Migration) -> bool:
    """Apply one migration unless another process has; say whether we did."""
    # READ COMMITTED (whatever the database default): each statement must see
    # what a process that held the lock before us committed. Under REPEATABLE
    # READ the snapshot would predate the wait for the lock.
    await tx.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    # Held until this transaction ends, so the check, the schema change and
    # the record are one step for every other migrating process.
    await tx.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    await tx.execute(_CREATE_VERSION_TABLE)
    if await tx.fetchone(
        "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
    ):
        return False
    await tx.execute(migration.sql)
    await tx.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
        (migration.version, migration.name),
    )
    return True

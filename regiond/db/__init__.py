"""
The region's PostgreSQL layer.

- `Database`: a txpostgres connection pool with rows as dicts, transactions,
  and LISTEN/NOTIFY.
- `migrate`: brings a database's schema up to `MIGRATIONS`.
- `EmbeddedPostgres`: a private server in the state directory, for a region
  with no DSN configured.
"""

from psycopg2.extras import Json

from regiond.db.embedded import EmbeddedPostgres, IEmbeddedPostgresReactor
from regiond.db.migrations import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS,
    Migration,
    applied_versions,
    migrate,
)
from regiond.db.pool import (
    Database,
    IDatabaseReactor,
    NotifyCallback,
    Params,
    Query,
    Row,
    Transaction,
)
from regiond.errors import DatabaseConnectError, DatabaseUnavailable, EmbeddedPostgresError, MigrationError

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "Database",
    "DatabaseConnectError",
    "DatabaseUnavailable",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "IDatabaseReactor",
    "IEmbeddedPostgresReactor",
    "Json",
    "Migration",
    "MigrationError",
    "NotifyCallback",
    "Params",
    "Query",
    "Row",
    "Transaction",
    "applied_versions",
    "migrate",
]

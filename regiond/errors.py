"""
Errors raised by the region daemon.

Every error regiond raises on purpose derives from `RegionError`, so a caller
at a boundary (the service tree, the HTTP API, the admin command) can tell a
known failure from a bug with one ``except``.
"""

from __future__ import annotations

from rpc.errors import Transient


class RegionError(Exception):
    """The root of every error regiond raises on purpose."""


class EmbeddedPostgresError(RegionError):
    """
    The embedded PostgreSQL server could not be set up, started or stopped.

    The message says what failed and, for a failed start, ends with the tail of
    ``postgres.log``, because that is where PostgreSQL says why.
    """


class DatabaseUnavailable(RegionError, Transient):
    """
    The region database cannot be reached just now.

    Raised for a statement whose connection was lost (PostgreSQL restarted,
    say) or could not be reopened; the psycopg2 error is the ``__cause__``.
    The pool reopens the connection on its next use, so a later call can
    succeed: the HTTP API answers 503 with ``Retry-After``. A statement that
    fails this way may or may not have been applied if it was a COMMIT.
    Other errors from individual queries are not wrapped: callers catch the
    specific ``psycopg2.errors`` class they can handle (a unique violation,
    say) and let the rest propagate. An RPC responder failing with it logs
    one line, not a traceback (`rpc.errors.Transient`); the cluster retries.
    """


class DatabaseConnectError(DatabaseUnavailable):
    """
    No connection could be opened to the region database at connect time;
    the underlying psycopg2 error is the ``__cause__``.
    """


class MigrationError(RegionError):
    """A schema migration failed; the message names its version and name."""

    @classmethod
    def from_migration(
        cls, version: int, name: str, cause: BaseException
    ) -> MigrationError:
        return cls(f"migration {version} ({name}) failed: {cause}")

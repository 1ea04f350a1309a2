"""Leadership by advisory lock: exactly one holder, and a takeover when the holder's session ends."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from regiond.db import Database
from regiond.leader import Leadership
from tests.regionstack import eventually

KEY = 0x7465737431


def make(dsn: str, log: list[str], name: str, key: int = KEY) -> Leadership:
    return Leadership(reactor, dsn, key, "test job", on_gain=lambda: log.append(f"{name}+"), on_loss=lambda: log.append(f"{name}-"), interval=3600)


@pytest_twisted.ensureDeferred
async def test_only_one_process_leads_and_another_takes_over_when_it_goes(db_dsn: str) -> None:
    log: list[str] = []
    first, second = make(db_dsn, log, "a"), make(db_dsn, log, "b")
    try:
        assert await first.check() is True
        assert await second.check() is False
        assert await first.check() is True  # still held: no second gain
        assert log == ["a+"]
        # The holder's session dies (as when its PostgreSQL connection drops).
        await first._db.close()
        assert await first.check() is False
        assert log == ["a+", "a-"]
        # PostgreSQL frees a session's locks when its backend exits, a moment
        # after the client closes; the next check (10 s later in a region) finds it free.
        await eventually(second.check, timeout=5)
        assert log == ["a+", "a-", "b+"]
    finally:
        await first._resign()
        await second._resign()
    assert log[-1] == "b-"


@pytest_twisted.ensureDeferred
async def test_a_service_stopping_releases_the_lock_for_the_next(db_dsn: str) -> None:
    log: list[str] = []
    first, second = make(db_dsn, log, "a"), make(db_dsn, log, "b")
    first.startService()
    try:
        await first.check()
        assert first.leader
        await first.stopService()
        await eventually(second.check, timeout=5)
    finally:
        await second._resign()
    assert log == ["a+", "a-", "b+", "b-"]


@pytest.mark.parametrize("key", [KEY, -0x7465737431, 0x7FFFFFFF00000001, -1])
@pytest_twisted.ensureDeferred
async def test_a_holder_whose_session_the_server_ends_gives_up_though_its_pool_reconnects(db_dsn: str, key: int) -> None:
    log: list[str] = []
    first, second = make(db_dsn, log, "a", key), make(db_dsn, log, "b", key)
    admin = await Database.connect(reactor, db_dsn, size=1)
    try:
        assert await first.check() is True
        assert await first.check() is True, "the check finds the lock held, for any bigint key"
        # As a PostgreSQL restart does: the session, and with it the lock, is gone.
        await admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert await second.check() is True
        assert await first.check() is False, "a reopened session does not hold the lock"
        assert log == ["a+", "b+", "a-"]
    finally:
        await admin.close()
        await first._resign()
        await second._resign()

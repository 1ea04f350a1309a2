"""The region's machine records: inventory application, updates, filters."""

from __future__ import annotations

import pytest_twisted

from regiond.machines.store import MachineStore
from tests.machinehelpers import add_cluster, summary

C1 = "aaaaaaaa-0000-4000-8000-000000000001"
C2 = "aaaaaaaa-0000-4000-8000-000000000002"


async def events(db, type_):
    return await db.fetch("SELECT subject, data FROM events WHERE type = %s ORDER BY id", (type_,))


@pytest_twisted.ensureDeferred
async def test_first_inventory_inserts_every_machine(db) -> None:
    await add_cluster(db, C1, "one")
    store = MachineStore(db)
    counts = await store.apply_inventory(C1, [summary("aaa111"), summary("bbb222", tags=["gpu", "big"])])
    assert counts == {"machines": 2, "new": 2, "changed": 0, "missing": 0, "returned": 0}
    machine = await store.get(C1, "bbb222")
    assert machine["tags"] == ["gpu", "big"] and machine["cluster_name"] == "one"
    assert machine["macs"] == ["52:54:00:00:00:01"] and machine["missing"] is False


@pytest_twisted.ensureDeferred
async def test_status_changes_and_vanished_machines_become_events(db) -> None:
    await add_cluster(db, C1, "one")
    store = MachineStore(db)
    await store.apply_inventory(C1, [summary("aaa111"), summary("bbb222")])
    counts = await store.apply_inventory(C1, [summary("aaa111", status="Deploying", status_code=9)])
    assert counts["changed"] == 1 and counts["missing"] == 1
    [change] = await events(db, "machine.status")
    assert change["subject"] == "aaa111" and change["data"]["from"] == "Ready" and change["data"]["to"] == "Deploying"
    [gone] = await events(db, "machine.missing")
    assert gone["subject"] == "bbb222"
    assert (await store.get(C1, "bbb222"))["missing"] is True
    items, total = await store.list()
    assert total == 1 and items[0]["system_id"] == "aaa111"
    items, total = await store.list(include_missing=True)
    assert total == 2
    # It comes back.
    counts = await store.apply_inventory(C1, [summary("aaa111", status="Deploying"), summary("bbb222")])
    assert counts["returned"] == 1 and counts["missing"] == 0


@pytest_twisted.ensureDeferred
async def test_inventories_of_clusters_do_not_touch_each_other(db) -> None:
    await add_cluster(db, C1, "one")
    await add_cluster(db, C2, "two")
    store = MachineStore(db)
    await store.apply_inventory(C1, [summary("same01")])
    await store.apply_inventory(C2, [summary("same01", hostname="other")])
    await store.apply_inventory(C1, [])
    assert (await store.get(C2, "same01"))["missing"] is False
    assert (await store.get(C1, "same01"))["missing"] is True


@pytest_twisted.ensureDeferred
async def test_filters_combine_and_paginate(db) -> None:
    await add_cluster(db, C1, "one")
    await add_cluster(db, C2, "two")
    store = MachineStore(db)
    await store.apply_inventory(C1, [summary(f"m{i:03d}", tags=["gpu"] if i % 2 else [], zone="z1" if i < 5 else "z2") for i in range(10)])
    await store.apply_inventory(C2, [summary("x001", status="Deployed")])
    assert (await store.list(tags=["gpu"]))[1] == 5
    assert (await store.list(tags=["gpu"], zone=["z1"]))[1] == 2
    assert (await store.list(status=["Deployed"]))[0][0]["system_id"] == "x001"
    assert (await store.list(cluster=["two"]))[1] == 1
    assert (await store.list(cluster=[C1]))[1] == 10
    page, total = await store.list(limit=3, offset=9)
    assert total == 11 and len(page) == 2


@pytest_twisted.ensureDeferred
async def test_updates_change_fields_and_record_status_changes(db) -> None:
    await add_cluster(db, C1, "one")
    store = MachineStore(db)
    await store.apply_inventory(C1, [summary("aaa111")])
    machine = await store.apply_update(C1, "aaa111", {"status": "Deploying", "power_state": "on", "bogus": 1}, "action", "req-1")
    assert machine["status"] == "Deploying" and machine["power_state"] == "on"
    [change] = await events(db, "machine.status")
    assert change["data"]["request_id"] == "req-1"
    assert await store.apply_update(C1, "nope", {"status": "Ready"}, "webhook") is None
    assert await store.transitional() == {C1: ["aaa111"]}
    await store.set_power_states(C1, {"aaa111": "off", "unknown1": "on"})
    assert (await store.get(C1, "aaa111"))["power_state"] == "off"

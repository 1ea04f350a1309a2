"""
Waldur resources → CSCS storage entries: the mapping rules one by one, and
properties over any resource shape (hypothesis).
"""

from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from regiond.storage import BackendSettings, Transformer, apply_filters, mock_gid, mock_uid, prepare
from regiond.storage._transform import allowed_transitions
from tests.storagehelpers import resources_strategy

OFFERING = "4f1b3c1e9d5c4c7a8e2f0a1b2c3d4e5f"
CUSTOMER_UUID = "0a0b0c0d0e0f41a2b3c4d5e6f7a8b9c0"
CUSTOMERS = {"uni-physics": {"itemId": CUSTOMER_UUID, "key": "uni-physics", "name": "University Physics", "uuid": CUSTOMER_UUID}}
GIDS = {"climate-sim": 31337, "lqcd": 31338}
SETTINGS = BackendSettings()


def ns(name: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, name))


def resource(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uuid": "9f8e7d6c5b4a4a3b8c2d1e0f9a8b7c6d",
        "slug": "climate-store",
        "state": "OK",
        "offering_uuid": OFFERING,
        "offering_slug": "capstor",
        "provider_slug": "cscs",
        "provider_name": "CSCS",
        "customer_slug": "uni-physics",
        "project_slug": "climate-sim",
        "project_name": "Climate Sim",
        "attributes": {"storage_data_type": "store", "permissions": "2770"},
        "limits": {"storage": 50},
        "options": {},
        "backend_metadata": {},
        "order_in_progress": None,
    }
    base.update(fields)
    return base


def transform(*records: dict[str, Any], settings: BackendSettings = SETTINGS, single: bool = False, gids: dict[str, int | None] | None = None) -> list[dict[str, Any]]:
    prepared = [r for r in (prepare(x) for x in records) if r is not None]
    return Transformer(settings, "https://waldur.example/api").entries(prepared, CUSTOMERS, GIDS if gids is None else gids, single=single)


def test_one_resource_gives_tenant_customer_and_project_entries_linked_by_parent_item_ids() -> None:
    tenant, customer, project = transform(resource())
    assert tenant["target"] == {"targetType": "tenant", "targetItem": {"itemId": str(uuidlib.UUID(OFFERING)), "key": "cscs", "name": "CSCS"}}
    assert tenant["itemId"] == str(uuidlib.UUID(OFFERING)) and tenant["parentItemId"] is None
    assert customer["itemId"] == CUSTOMER_UUID and customer["parentItemId"] == tenant["itemId"]
    assert project["itemId"] == "9f8e7d6c5b4a4a3b8c2d1e0f9a8b7c6d" and project["parentItemId"] == CUSTOMER_UUID
    assert [e["status"] for e in (tenant, customer, project)] == ["pending", "pending", "active"]


def test_mount_points_follow_system_data_type_tenant_customer_project() -> None:
    tenant, customer, project = transform(resource(attributes={"storage_data_type": "Archive"}))
    assert tenant["mountPoint"] == {"default": "/capstor/archive/cscs"}
    assert customer["mountPoint"] == {"default": "/capstor/archive/cscs/uni-physics"}
    assert project["mountPoint"] == {"default": "/capstor/archive/cscs/uni-physics/climate-sim"}


def test_quotas_are_terabytes_and_inodes_from_the_coefficients() -> None:
    settings = BackendSettings(inode_soft_coefficient=1.5, inode_hard_coefficient=2, inode_base_multiplier=1000)
    project = transform(resource(limits={"storage": 2.5}), settings=settings)[-1]
    assert project["quotas"] == [
        {"type": "space", "quota": 2.5, "unit": "tera", "enforcementType": "soft"},
        {"type": "space", "quota": 2.5, "unit": "tera", "enforcementType": "hard"},
        {"type": "inodes", "quota": float(int(2.5 * 1000 * 1.5)), "unit": "none", "enforcementType": "soft"},
        {"type": "inodes", "quota": 5000.0, "unit": "none", "enforcementType": "hard"},
    ]
    assert transform(resource(limits={"storage": 100}))[-1]["quotas"][2]["quota"] == float(int(100 * 1_000_000 * 1.33))


def test_no_storage_limit_means_no_quotas() -> None:
    assert transform(resource(limits={}))[-1]["quotas"] is None
    assert transform(resource(limits={"storage": 0}))[-1]["quotas"] is None


def test_options_override_permissions_space_and_inode_quotas() -> None:
    options = {"permissions": "0700", "soft_quota_space": 5, "hard_quota_space": "8", "soft_quota_indoes": "1e3", "hard_quota_indoes": 2000}
    project = transform(resource(options=options))[-1]
    assert project["permission"] == {"permissionType": "octal", "value": "0700"}
    assert [q["quota"] for q in project["quotas"]] == [5.0, 8.0, 1000.0, 2000.0]


def test_invalid_or_non_finite_overrides_are_ignored() -> None:
    project = transform(resource(options={"permissions": 700, "soft_quota_space": "lots", "hard_quota_space": "nan", "soft_quota_indoes": "x"}))[-1]
    assert project["permission"]["value"] == "2770"
    assert [q["quota"] for q in project["quotas"]][:3] == [50.0, 50.0, float(int(50 * 1_000_000 * 1.33))]


def test_data_types_map_to_project_or_user_targets() -> None:
    for data_type, target in (("store", "project"), ("archive", "project"), ("users", "user"), ("SCRATCH", "user"), ("mystery", "project")):
        assert transform(resource(attributes={"storage_data_type": data_type}))[-1]["target"]["targetType"] == target


def test_a_project_target_carries_the_projects_gid() -> None:
    project = transform(resource(state="Erred"))[-1]
    assert project["status"] == "error"
    assert project["target"]["targetItem"] == {"itemId": ns("project:climate-store"), "status": "pending", "name": "climate-store", "unixGid": 31337, "active": False}


def test_a_user_target_has_a_deterministic_uid_and_the_projects_gid() -> None:
    item = transform(resource(attributes={"storage_data_type": "users"}))[-1]["target"]["targetItem"]
    assert item == {
        "itemId": ns("user:climate-store"),
        "status": "active",
        "email": "user-climate-store@example.com",
        "unixUid": mock_uid("climate-store"),
        "primaryProject": {"name": "climate-sim", "unixGid": 31337, "active": True},
        "active": True,
    }
    assert 20000 <= mock_uid("climate-store") < 30000 and 30000 <= mock_gid("climate-sim") < 40000


def test_storage_system_file_system_and_data_type_objects_use_uuid5_item_ids() -> None:
    project = transform(resource(attributes={"storage_data_type": "Store"}))[-1]
    assert project["storageSystem"] == {"itemId": ns("storage_system:capstor"), "key": "capstor", "name": "CAPSTOR", "active": True}
    assert project["storageFileSystem"] == {"itemId": ns("storage_file_system:lustre"), "key": "lustre", "name": "LUSTRE", "active": True}
    assert project["storageDataType"] == {"itemId": ns("storage_data_type:Store"), "key": "store", "name": "STORE", "path": "store", "active": True}
    tenant = transform(resource())[0]
    assert "path" not in tenant["storageDataType"]


def test_tenant_and_customer_entries_are_made_once_per_system_and_data_type() -> None:
    entries = transform(
        resource(uuid=uuidlib.UUID(int=1).hex, slug="a", project_slug="climate-sim"),
        resource(uuid=uuidlib.UUID(int=2).hex, slug="b", project_slug="lqcd"),
        resource(uuid=uuidlib.UUID(int=3).hex, slug="c", attributes={"storage_data_type": "scratch"}),
    )
    kinds = [e["target"]["targetType"] for e in entries]
    assert kinds == ["tenant", "customer", "project", "project", "tenant", "customer", "user"]
    assert entries[3]["parentItemId"] == entries[1]["itemId"]


def test_a_customer_unknown_to_the_offering_has_no_entry_and_its_project_no_parent() -> None:
    entries = transform(resource(customer_slug="stranger"))
    assert [e["target"]["targetType"] for e in entries] == ["tenant", "project"]
    assert entries[1]["parentItemId"] is None


def test_a_project_without_a_gid_is_left_out_but_its_tenant_and_customer_stay() -> None:
    entries = transform(resource(project_slug="unknown"))
    assert [e["target"]["targetType"] for e in entries] == ["tenant", "customer"]


def test_an_order_in_progress_adds_callback_urls_and_transitions() -> None:
    order = {"uuid": "aa" * 16, "state": "pending-provider"}
    project = transform(resource(state="Creating", order_in_progress=order))[-1]
    prefix = f"https://waldur.example/api/marketplace-orders/{uuidlib.UUID('aa' * 16)}"
    assert project["approve_by_provider_url"] == f"{prefix}/approve_by_provider/"
    assert project["set_backend_id_url"] == f"{prefix}/set_backend_id/"
    assert project["allowed_transitions"] == ["approve_by_provider", "reject_by_provider", "set_state_executing", "set_backend_id"]
    assert allowed_transitions("executing") == ["set_state_done", "set_state_erred", "set_backend_id"]
    assert allowed_transitions("done") == [] and allowed_transitions(None) == []


def test_the_per_system_listing_leaves_out_creating_resources_not_yet_the_providers() -> None:
    early = resource(state="Creating", order_in_progress={"uuid": "bb" * 16, "state": "pending-consumer"})
    unordered = resource(state="Creating", order_in_progress=None)
    assert transform(early, single=True) == [] and transform(unordered, single=True) == []
    assert len(transform(early)) == 3  # the all-systems listing keeps them, as the peer's does


def test_target_items_from_backend_metadata_win_unless_mocking_is_on() -> None:
    record = resource(backend_metadata={"project_item": {"itemId": "real", "name": "from-backend"}})
    assert transform(record)[-1]["target"]["targetItem"] == {"itemId": "real", "name": "from-backend"}
    mocked = transform(record, settings=BackendSettings(use_mock_target_items=True))[-1]
    assert mocked["target"]["targetItem"]["unixGid"] == 31337


def test_malformed_records_are_skipped_alone() -> None:
    entries = transform(
        resource(uuid="not-a-uuid"),
        resource(uuid=uuidlib.UUID(int=5).hex, attributes={"storage_data_type": 7}),
        resource(uuid=uuidlib.UUID(int=6).hex, slug="fine"),
    )
    assert [e["target"]["targetType"] for e in entries] == ["tenant", "customer", "project"]
    assert entries[-1]["target"]["targetItem"]["name"] == "fine"


def test_filters_match_system_data_type_and_status_exactly() -> None:
    entries = transform(resource(), resource(uuid=uuidlib.UUID(int=9).hex, attributes={"storage_data_type": "users"}))
    assert {e["storageDataType"]["key"] for e in apply_filters(entries, None, "users", None)} == {"users"}
    assert [e["status"] for e in apply_filters(entries, "capstor", None, "active")] == ["active", "active"]
    assert apply_filters(entries, "CAPSTOR", None, None) == [] and apply_filters(entries, None, "Users", None) == []


@settings(max_examples=100, deadline=None)
@given(resources=resources_strategy(max_size=15), single=st.booleans(), dev_gids=st.booleans())
def test_any_resources_give_valid_linked_json(resources: list[dict[str, Any]], single: bool, dev_gids: bool) -> None:
    """Whatever the shapes: no exception, strict JSON (no NaN), parents listed before children, projects unique."""
    gids: dict[str, int | None] = {p: mock_gid(p) for p in ("proj-a", "proj-b", "proj-c", "proj-d")} if dev_gids else {}
    entries = transform(*resources, single=single, gids=gids)
    json.dumps(entries, allow_nan=False)
    seen: set[str] = set()
    for entry in entries:
        if entry["parentItemId"] is not None:
            assert entry["parentItemId"] in seen
        seen.add(entry["itemId"])
    projects = [e["itemId"] for e in entries if e["target"]["targetType"] in ("project", "user")]
    assert len(projects) == len(set(projects)) <= len(resources)


# Records are strict JSON: the Waldur client refuses NaN and Infinity (tests/test_storage_waldur_client.py).
_anything = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6), lambda i: st.lists(i, max_size=2) | st.dictionaries(st.text(max_size=4), i, max_size=2), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(sorted(resource())), _anything, max_size=8) | _anything, max_size=5))
def test_garbage_from_waldur_never_raises(records: list[Any]) -> None:
    """Records of any JSON shape at all are transformed or skipped, never an exception."""
    entries = transform(*[r if not isinstance(r, dict) else {**resource(), **r} for r in records])
    json.dumps(entries, allow_nan=False)

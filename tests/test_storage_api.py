"""
GET /api/storage-resources/ and GET /api/v1/storage/gid-cache through the
region's router: auth, every filter, pagination, debug, the 422 bodies and
Waldur's failures.  In memory on a Clock (`MemoryStack`), plus one run over
real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from simulators.waldur import make_resource
from tests.storagehelpers import HPC_SECRET, READ_TOKEN, WALDUR_TOKEN, MemoryStack, TcpStack, tcp_stack  # noqa: F401

STORAGE = "/api/storage-resources/"


@pytest.fixture
def stack() -> MemoryStack:
    return MemoryStack.create(resources=120, seed=3, customers=6)


def body(stack: MemoryStack, query: str = "") -> dict[str, Any]:
    result = stack.get(STORAGE + query)
    assert result.status == 200, result.raw
    return result.json()


def kinds(entries: list[dict[str, Any]]) -> set[str]:
    return {e["target"]["targetType"] for e in entries}


# -- auth -----------------------------------------------------------------------------------


def test_without_a_token_the_listing_is_refused(stack: MemoryStack) -> None:
    result = stack.get(STORAGE, token=None)
    assert result.status == 401 and result.headers["www-authenticate"] == "Bearer"
    assert stack.waldur.requests == []


def test_an_unknown_token_is_refused(stack: MemoryStack) -> None:
    assert stack.get(STORAGE, token="opt_nope").status == 401


# -- the envelope and filters -----------------------------------------------------------------


def test_the_listing_has_the_peers_envelope(stack: MemoryStack) -> None:
    got = body(stack, "?page_size=500")
    assert list(got) == ["status", "resources", "pagination", "filters_applied"]
    assert got["status"] == "success"
    assert got["pagination"] == {"current": 1, "limit": 500, "offset": 0, "pages": 1, "total": len(got["resources"]), "api_total": 120}
    assert got["filters_applied"] == {"offering_slugs": ["capstor", "vast", "iopsstor"], "storage_system": None, "data_type": None, "status": None, "state": None}
    assert kinds(got["resources"]) == {"tenant", "customer", "project", "user"}


def test_all_offerings_are_fetched_in_one_waldur_request(stack: MemoryStack) -> None:
    body(stack, "?page_size=500")
    resource_calls = [q for _, path, q in stack.waldur.requests if path == "/api/marketplace-resources/"]
    assert resource_calls == [{"offering_slug": ["capstor,vast,iopsstor"], "page": ["1"], "page_size": ["500"]}]


def test_storage_system_selects_one_offering_with_the_per_system_envelope(stack: MemoryStack) -> None:
    got = body(stack, "?storage_system=vast&page_size=500")
    assert {e["storageSystem"]["key"] for e in got["resources"]} == {"vast"}
    assert got["filters_applied"] == {"offering_slug": "vast", "data_type": None, "status": None, "state": None}
    assert set(got["pagination"]) == {"current", "limit", "offset", "pages", "total", "raw_total_from_api"}
    assert stack.waldur.requests[0][2]["offering_slug"] == ["vast"]


def test_data_type_filters_after_the_transformation(stack: MemoryStack) -> None:
    got = body(stack, "?data_type=scratch&page_size=500")
    assert got["resources"] and {e["storageDataType"]["key"] for e in got["resources"]} == {"scratch"}
    assert kinds(got["resources"]) == {"tenant", "customer", "user"}
    assert got["pagination"]["total"] == len(got["resources"])
    assert body(stack, "?data_type=Scratch")["resources"] == []


def test_status_filters_after_the_transformation(stack: MemoryStack) -> None:
    got = body(stack, "?status=pending&page_size=500")
    assert {e["status"] for e in got["resources"]} == {"pending"}
    assert kinds(got["resources"]) >= {"tenant", "customer"}
    assert {e["status"] for e in body(stack, "?status=active&page_size=500")["resources"]} == {"active"}


def test_state_is_passed_to_waldur(stack: MemoryStack) -> None:
    got = body(stack, "?state=Terminating&page_size=500")
    assert got["filters_applied"]["state"] == "Terminating"
    assert {e["status"] for e in got["resources"] if e["target"]["targetType"] in ("project", "user")} <= {"removing"}
    assert stack.waldur.requests[0][2]["state"] == ["Terminating"]


def test_page_and_page_size_page_through_waldur(stack: MemoryStack) -> None:
    first, second = body(stack, "?page_size=50"), body(stack, "?page=2&page_size=50")
    assert first["pagination"]["offset"] == 0 and second["pagination"] == {**second["pagination"], "current": 2, "offset": 50, "limit": 50}
    ids = lambda b: {e["itemId"] for e in b["resources"] if e["target"]["targetType"] in ("project", "user")}  # noqa: E731
    assert ids(first) and ids(second) and not ids(first) & ids(second)


def test_a_page_past_the_end_is_an_empty_page(stack: MemoryStack) -> None:
    got = body(stack, "?page=9&page_size=100")
    assert got["resources"] == [] and got["pagination"]["total"] == 0 and got["pagination"]["pages"] == 0


def test_filters_combine(stack: MemoryStack) -> None:
    got = body(stack, "?storage_system=capstor&data_type=store&status=active&page_size=500")
    assert got["resources"]
    for entry in got["resources"]:
        assert (entry["storageSystem"]["key"], entry["storageDataType"]["key"], entry["status"]) == ("capstor", "store", "active")


# -- 422s ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, error",
    [
        ("storage_system=", {"type": "enum", "loc": ["query", "storage_system"], "msg": "Input should be 'capstor', 'vast' or 'iopsstor'", "input": "", "ctx": {"expected": "'capstor', 'vast' or 'iopsstor'"}}),
        ("storage_system=lustre", {"type": "enum", "loc": ["query", "storage_system"], "msg": "Input should be 'capstor', 'vast' or 'iopsstor'", "input": "lustre", "ctx": {"expected": "'capstor', 'vast' or 'iopsstor'"}}),
        ("state=ok", {"type": "enum", "loc": ["query", "state"], "msg": "Input should be 'Creating', 'Erred', 'OK', 'Terminated', 'Terminating' or 'Updating'", "input": "ok", "ctx": {"expected": "'Creating', 'Erred', 'OK', 'Terminated', 'Terminating' or 'Updating'"}}),
        ("page=0", {"type": "greater_than_equal", "loc": ["query", "page"], "msg": "Input should be greater than or equal to 1", "input": "0", "ctx": {"ge": 1}}),
        ("page=two", {"type": "int_parsing", "loc": ["query", "page"], "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "two"}),
        ("page_size=501", {"type": "less_than_equal", "loc": ["query", "page_size"], "msg": "Input should be less than or equal to 500", "input": "501", "ctx": {"le": 500}}),
        ("page_size=0", {"type": "greater_than_equal", "loc": ["query", "page_size"], "msg": "Input should be greater than or equal to 1", "input": "0", "ctx": {"ge": 1}}),
        ("debug=perhaps", {"type": "bool_parsing", "loc": ["query", "debug"], "msg": "Input should be a valid boolean, unable to interpret input", "input": "perhaps"}),
    ],
)
def test_invalid_parameters_get_fastapis_422_body(stack: MemoryStack, query: str, error: dict[str, Any]) -> None:
    result = stack.get(f"{STORAGE}?{query}")
    assert (result.status, result.json()) == (422, {"detail": [error]})
    assert stack.waldur.requests == []


def test_every_invalid_parameter_is_reported_in_declaration_order(stack: MemoryStack) -> None:
    result = stack.get(f"{STORAGE}?debug=x&page_size=x&page=x&state=x&storage_system=x")
    assert [e["loc"][1] for e in result.json()["detail"]] == ["storage_system", "state", "page", "page_size", "debug"]


def test_the_storage_systems_are_the_configured_ones() -> None:
    stack = MemoryStack.create(resources=10, systems={"store1": "capstor"})
    result = stack.get(f"{STORAGE}?storage_system=vast")
    assert result.json()["detail"][0]["msg"] == "Input should be 'store1'"
    assert stack.get(f"{STORAGE}?storage_system=store1").status == 200


def test_lenient_numbers_and_booleans_are_accepted_as_pydantic_accepts_them(stack: MemoryStack) -> None:
    got = body(stack, "?page=%2B1&page_size=1_0&debug=No")
    assert (got["pagination"]["current"], got["pagination"]["limit"]) == (1, 10)


# -- other methods and paths ----------------------------------------------------------------


def test_the_path_without_its_slash_redirects(stack: MemoryStack) -> None:
    result = stack.get("/api/storage-resources?page=2&data_type=store")
    assert result.status == 307
    assert result.headers["location"] == "/api/storage-resources/?page=2&data_type=store"


def test_head_answers_without_a_body_and_post_is_not_allowed(stack: MemoryStack) -> None:
    head = stack.get(STORAGE, method="HEAD")
    assert head.status == 200 and head.raw == b""
    post = stack.get(STORAGE, method="POST")
    assert post.status == 405 and post.headers["allow"] == "GET"


# -- debug ------------------------------------------------------------------------------


def test_debug_shows_raw_waldur_data_and_the_config_without_secrets() -> None:
    stack = MemoryStack.create(resources=20, seed=1, development_mode=True)
    got = body(stack, "?debug=true&data_type=store")
    assert got["debug_mode"] is True
    assert got["agent_config"]["configured_storage_systems"] == {"capstor": "capstor", "vast": "vast", "iopsstor": "iopsstor"}
    assert got["agent_config"]["backend_settings"]["development_mode"] is True
    raw = got["raw_resources"]
    assert raw["resources"] and all(r["attributes"]["storage_data_type"] == "store" for r in raw["resources"])
    assert raw["pagination"]["api_total"] == 20
    text = json.dumps(got)
    assert WALDUR_TOKEN not in text and HPC_SECRET not in text and "client_secret" not in text


def test_debug_reports_a_waldur_failure_inside_the_body(stack: MemoryStack) -> None:
    stack.waldur.fail_next(500)
    got = body(stack, "?debug=1&storage_system=capstor")
    assert got["raw_resources"]["error"].startswith("Failed to fetch debug resources: Waldur answered HTTP 500")
    assert "offering_details" not in got["raw_resources"]


# -- Waldur failures --------------------------------------------------------------------------


def test_a_waldur_error_is_a_502_in_the_peers_error_shape(stack: MemoryStack) -> None:
    stack.waldur.token = "rotated"
    result = stack.get(STORAGE)
    assert result.status == 502
    error = result.json()
    assert error == {"status": "error", "error": error["error"], "code": 502}
    assert "Waldur answered HTTP 401 to GET http://waldur.test/api/marketplace-resources/" in error["error"]
    assert WALDUR_TOKEN not in result.raw.decode()


def test_transient_waldur_failures_are_retried(stack: MemoryStack) -> None:
    stack.waldur.fail_next(503, "drop")
    assert stack.get(STORAGE).status == 200
    assert stack.clock.seconds() >= 1.25  # the backoff ran on the clock: 0.25 s, then 1 s


def test_waldur_that_never_answers_is_a_504_after_the_retries(stack: MemoryStack) -> None:
    stack.waldur.fail_next("hang", "hang", "hang")
    result = stack.get(STORAGE)
    assert result.status == 504
    assert result.json()["error"] == "Failed to fetch storage resources: Waldur did not answer GET http://waldur.test/api/marketplace-resources/ within 5s"
    assert stack.clock.seconds() >= 15


def test_without_offering_customers_projects_have_no_customer_parent(stack: MemoryStack) -> None:
    stack.waldur.customer_lists = {o.uuid: [{"slug": "broken"}] for o in stack.waldur.data.offerings}  # no uuid/name
    got = body(stack, "?page_size=500")
    assert "customer" not in kinds(got["resources"])
    assert all(e["parentItemId"] is None for e in got["resources"])


def test_an_order_in_progress_gives_callback_urls_to_waldur(stack: MemoryStack) -> None:
    offering, project = stack.waldur.data.offerings[0], stack.waldur.data.projects[0]
    import random

    record = make_resource(random.Random(1), offering, project, index=10_000, state="Creating", order_state="pending-provider")
    stack.waldur.data.resources.clear()
    stack.waldur.add_resource(record)
    entry = body(stack)["resources"][-1]
    order = record["order_in_progress"]["uuid"]
    assert entry["approve_by_provider_url"].startswith("http://waldur.test/api/marketplace-orders/")
    assert entry["approve_by_provider_url"].replace("-", "").endswith(f"{order}/approve_by_provider/")
    assert entry["allowed_transitions"] == ["approve_by_provider", "reject_by_provider", "set_state_executing", "set_backend_id"]


# -- the GID cache ----------------------------------------------------------------------------


def test_gids_are_looked_up_once_and_the_cache_is_reported(stack: MemoryStack) -> None:
    body(stack, "?page_size=500")
    body(stack, "?page_size=500")
    assert stack.hpc.project_requests == 1 and stack.hpc.token_requests == 1
    stats = stack.get("/api/v1/storage/gid-cache").json()
    projects = {r["project_slug"] for r in stack.waldur.data.resources}
    assert stats["total_entries"] == len(projects) and stats["cache_policy"] == "Persists until server restart"
    assert stats["misses"] == len(projects) and stats["hits"] >= len(projects)
    assert stats["hpc_user_api"] == "configured" and stats["mock_entries"] == 0
    assert [p["project"] for p in stats["projects"]] == sorted(projects)[:100]
    assert {p["source"] for p in stats["projects"]} == {"hpc_user_api"}


def test_the_gid_cache_listing_pages_and_needs_a_token(stack: MemoryStack) -> None:
    body(stack, "?page_size=500")
    page = stack.get("/api/v1/storage/gid-cache?page=2&page_size=3").json()
    assert (page["page"], page["page_size"], len(page["projects"])) == (2, 3, 3)
    assert stack.get("/api/v1/storage/gid-cache?page_size=0").status == 400
    assert stack.get("/api/v1/storage/gid-cache", token=None).status == 401


def test_in_production_mode_projects_without_a_gid_are_left_out() -> None:
    stack = MemoryStack.create(resources=60, seed=3)
    missing = stack.waldur.data.resources[0]["project_slug"]
    stack.hpc.missing = {missing}
    got = body(stack, "?page_size=500")
    projects = [e for e in got["resources"] if e["target"]["targetType"] in ("project", "user")]
    assert projects and all(not e["mountPoint"]["default"].endswith("/" + missing) for e in projects)
    stats = stack.get("/api/v1/storage/gid-cache").json()
    assert stats["not_found"] == 1 and missing not in [p["project"] for p in stats["projects"]]


def test_an_hpc_api_that_never_answers_leaves_projects_out_but_the_listing_stands(stack: MemoryStack) -> None:
    stack.hpc.fail_next("hang", "hang")
    got = body(stack, "?page_size=500")
    assert kinds(got["resources"]) == {"tenant", "customer"}
    assert stack.get("/api/v1/storage/gid-cache").json()["lookup_failures"] == 1
    assert kinds(body(stack, "?page_size=500")["resources"]) >= {"project", "user"}  # asked again, and found


def test_in_development_mode_without_an_hpc_api_gids_are_deterministic_mocks() -> None:
    stack = MemoryStack.create(resources=30, seed=3, hpc=False, development_mode=True)
    got = body(stack, "?page_size=500")
    gids = [e["target"]["targetItem"]["unixGid"] for e in got["resources"] if e["target"]["targetType"] == "project"]
    assert gids and all(30000 <= g < 40000 for g in gids)
    assert body(stack, "?page_size=500") == got
    stats = stack.get("/api/v1/storage/gid-cache").json()
    assert stats["hpc_user_api"] == "not configured" and stats["mock_entries"] == stats["total_entries"] > 0


# -- over real sockets ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_over_tcp_the_listing_comes_from_the_simulators(tcp_stack: TcpStack) -> None:  # noqa: F811
    result = await tcp_stack.get(STORAGE + "?page_size=500")
    assert result.status == 200
    got = result.json()
    assert got["pagination"]["api_total"] == 80 and kinds(got["resources"]) >= {"tenant", "customer", "project"}
    assert (await tcp_stack.get(STORAGE, token=None)).status == 401
    assert (await tcp_stack.get("/api/v1/storage/gid-cache")).json()["total_entries"] > 0
    assert tcp_stack.hpc.token_requests == 1 and READ_TOKEN


def test_waldur_and_hpc_user_api_calls_are_counted_by_operation_and_outcome() -> None:
    from prometheus_client import CollectorRegistry

    from outpost.metrics import ExternalCallMetrics

    registry = CollectorRegistry()
    stack = MemoryStack.create(resources=20, seed=1)
    stack = MemoryStack(stack.waldur, stack.hpc, stack.config, stack.clock, metrics=ExternalCallMetrics(registry))
    body(stack)

    def calls(service: str, operation: str, outcome: str = "ok") -> float:
        return registry.get_sample_value(
            "outpost_external_calls_total", {"service": service, "operation": operation, "outcome": outcome}) or 0

    assert calls("waldur", "marketplace-resources") >= 1
    assert calls("hpc_user_api", "token") == 1 and calls("hpc_user_api", "projects") >= 1


# -- the OpenAPI document describes the peer's error bodies ---------------------------------


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` fits the subset of JSON Schema the storage error schemas use."""
    if "oneOf" in schema:
        return sum(conforms(value, s) for s in schema["oneOf"]) == 1
    kind = schema.get("type")
    if kind == "object":
        return (isinstance(value, dict) and set(schema.get("required", ())) <= set(value)
                and set(value) <= set(schema.get("properties", value))
                and all(conforms(v, schema["properties"][k]) for k, v in value.items() if k in schema.get("properties", {})))
    if kind == "array":
        return isinstance(value, list) and all(conforms(v, schema.get("items", {})) for v in value)
    if kind == "string":
        return isinstance(value, str) and value in schema.get("enum", [value])
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return kind is None


def documented_error(stack: MemoryStack, status: int) -> dict[str, Any]:
    from regiond.api.openapi import openapi_document

    document = openapi_document(stack.service.routes(), "test")
    return document["paths"][STORAGE]["get"]["responses"][str(status)]["content"]["application/json"]["schema"]


def test_the_document_describes_the_422_and_502_bodies_actually_served(stack: MemoryStack) -> None:
    invalid = stack.get(f"{STORAGE}?debug=x&page_size=x&page=0&state=x&storage_system=x")
    assert invalid.status == 422 and conforms(invalid.json(), documented_error(stack, 422))
    stack.waldur.token = "rotated"
    failed = stack.get(STORAGE)
    assert failed.status == 502 and conforms(failed.json(), documented_error(stack, 502))
    # ...and not Outpost's own envelope, which these routes never answer.
    assert not conforms({"error": {"code": "x", "message": "y", "details": {}}}, documented_error(stack, 502))
    assert not conforms(failed.json(), documented_error(stack, 422))

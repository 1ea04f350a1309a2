"""The region's /api/v1 over a real socket: auth, clusters, ping, errors, and what it stores."""

from __future__ import annotations

import json
import uuid as uuidlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_twisted

from regiond.tokens import hash_token
from rpc.errors import AuthenticationFailed, ConnectionClosed, RegistrationRejected
from tests.regionstack import HTTPResult, RegionStack, eventually, region_stack  # noqa: F401

C1 = "9d2f1c4e-3b5a-4c6d-8e7f-0a1b2c3d4e5f"
C2 = "1c0ffee0-0000-4000-8000-000000000002"
UNKNOWN = "00000000-0000-4000-8000-0000000000ff"


def assert_error(result: HTTPResult, status: int, code: str | None = None, field: str | None = None) -> dict[str, Any]:
    """`result` is a `status` error with the API's envelope (naming `field` in details, if given)."""
    assert result.status == status, (result.status, result.raw)
    assert result.headers["content-type"] == "application/json"
    body = result.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert field in error["details"], error
    return error


async def add_clusters(stack: RegionStack, names: list[str]) -> list[str]:
    """Known clusters with no connection (as if they had connected once and gone); their uuids."""
    uuids = [str(uuidlib.uuid4()) for _ in names]
    for uuid, name in zip(uuids, names):
        await stack.db.execute("INSERT INTO clusters (uuid, name) VALUES (%s, %s)", (uuid, name))
    return uuids


async def get_cluster(stack: RegionStack, uuid: str) -> dict[str, Any]:
    result = await stack.request("GET", f"/api/v1/clusters/{uuid}", token=stack.read_token)
    assert result.status == 200, result.raw
    return result.json()


def ping(stack: RegionStack, uuid: str, body: Any = None, token: str | None = None, **kwargs: Any) -> Any:
    if body is not None:
        kwargs["json"] = body
    return stack.request("POST", f"/api/v1/clusters/{uuid}/ping", token=token or stack.admin_token, **kwargs)


# -- open endpoints -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_health_is_open_and_reports_the_database_and_this_region(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    result = await region_stack.request("GET", "/api/v1/health")
    assert result.status == 200
    assert result.headers["content-type"] == "application/json"
    body = result.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["region"]["id"] == region_stack.process_id
    assert isinstance(body["region"]["hostname"], str) and isinstance(body["region"]["pid"], int)
    assert body["clusters_connected_here"] == 1


@pytest_twisted.ensureDeferred
async def test_rpc_endpoints_is_open_and_lists_this_process_rpc_address(region_stack: RegionStack) -> None:
    result = await region_stack.request("GET", "/api/v1/rpc-endpoints")
    assert result.status == 200
    assert result.json() == {"endpoints": [{"host": "127.0.0.1", "port": region_stack.rpc_port}]}


# -- authentication -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_request_without_a_token_is_401_with_www_authenticate(region_stack: RegionStack) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer   "}):
        result = await region_stack.request("GET", "/api/v1/clusters", headers=headers)
        assert_error(result, 401, "unauthorized")
        assert result.headers["www-authenticate"].startswith("Bearer")


@pytest_twisted.ensureDeferred
async def test_an_unknown_token_is_401_invalid_token(region_stack: RegionStack) -> None:
    for token in ("opt_not-a-real-token", "nonsense", region_stack.admin_token + "x"):
        result = await region_stack.request("GET", "/api/v1/clusters", token=token)
        assert_error(result, 401, "unauthorized")
        assert 'error="invalid_token"' in result.headers["www-authenticate"]


@pytest_twisted.ensureDeferred
async def test_a_read_token_can_list_clusters_but_gets_403_on_ping(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    listed = await region_stack.request("GET", "/api/v1/clusters", token=region_stack.read_token)
    assert listed.status == 200
    refused = await ping(region_stack, C1, token=region_stack.read_token)
    assert_error(refused, 403, "forbidden")
    allowed = await ping(region_stack, C1, token=region_stack.admin_token)
    assert allowed.status == 200


@pytest_twisted.ensureDeferred
async def test_a_revoked_token_is_401(region_stack: RegionStack) -> None:
    before = await region_stack.request("GET", "/api/v1/clusters", token=region_stack.read_token)
    assert before.status == 200
    assert await region_stack.tokens.revoke(region_stack.read_token_id)
    after = await region_stack.request("GET", "/api/v1/clusters", token=region_stack.read_token)
    assert_error(after, 401, "unauthorized")


@pytest_twisted.ensureDeferred
async def test_tokens_are_stored_hashed_never_in_plaintext(region_stack: RegionStack) -> None:
    rows = await region_stack.db.fetch("SELECT t::text AS row, token_hash FROM api_tokens t ORDER BY id")
    assert len(rows) == 2
    for token in (region_stack.admin_token, region_stack.read_token):
        assert not any(token in r["row"] or token[4:] in r["row"] for r in rows)
        assert hash_token(token) in {r["token_hash"] for r in rows}
    events = await region_stack.db.fetch("SELECT e::text AS row FROM events e")
    assert not any(region_stack.admin_token[4:] in r["row"] for r in events)


# -- listing clusters -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_clusters_list_paginates_in_name_order_with_the_total(region_stack: RegionStack) -> None:
    await add_clusters(region_stack, ["e", "b", "d", "a", "c"])
    pages = []
    for page in (1, 2, 3, 4):
        result = await region_stack.request(
            "GET", f"/api/v1/clusters?page={page}&page_size=2", token=region_stack.read_token
        )
        assert result.status == 200
        body = result.json()
        assert (body["page"], body["page_size"], body["total"]) == (page, 2, 5)
        pages.append([c["name"] for c in body["items"]])
    assert pages == [["a", "b"], ["c", "d"], ["e"], []]
    default = (await region_stack.request("GET", "/api/v1/clusters", token=region_stack.read_token)).json()
    assert (default["page"], default["page_size"], default["total"]) == (1, 100, 5)
    assert len(default["items"]) == 5


@pytest_twisted.ensureDeferred
async def test_clusters_list_filters_by_connected_and_name(region_stack: RegionStack) -> None:
    await add_clusters(region_stack, ["gone-1", "gone-2"])
    await region_stack.connect_cluster(C1, "live-1")
    await region_stack.connect_cluster(C2, "live-2")

    async def names(query: str) -> tuple[list[str], int]:
        result = await region_stack.request("GET", f"/api/v1/clusters?{query}", token=region_stack.read_token)
        assert result.status == 200, result.raw
        body = result.json()
        return [c["name"] for c in body["items"]], body["total"]

    assert await names("connected=true") == (["live-1", "live-2"], 2)
    assert await names("connected=false") == (["gone-1", "gone-2"], 2)
    assert await names("connected=yes&page_size=1") == (["live-1"], 2)
    assert await names("name=gone-2") == (["gone-2"], 1)
    assert await names("name=live-2&connected=false") == ([], 0)
    assert await names("name=nothing-called-this") == ([], 0)
    assert await names("connected=0&page=2&page_size=1") == (["gone-2"], 2)


@pytest_twisted.ensureDeferred
async def test_clusters_list_rejects_a_bad_query_parameter_with_400_naming_it(region_stack: RegionStack) -> None:
    cases = [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=one", "page"),
        ("page=", "page"),
        ("page=1.5", "page"),
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
        ("page_size=ten", "page_size"),
        ("connected=maybe", "connected"),
        ("connected=", "connected"),
        ("page=1&page_size=10&connected=2", "connected"),
    ]
    for query, field in cases:
        result = await region_stack.request("GET", f"/api/v1/clusters?{query}", token=region_stack.read_token)
        assert_error(result, 400, "bad_request", field=field)


@pytest_twisted.ensureDeferred
async def test_clusters_list_name_filter_with_a_nul_is_bad_input_not_a_500(region_stack: RegionStack) -> None:
    result = await region_stack.request("GET", "/api/v1/clusters?name=a%00b", token=region_stack.read_token)
    assert result.status in (200, 400), result.raw


@pytest_twisted.ensureDeferred
async def test_a_cluster_path_segment_with_a_nul_is_bad_input_not_a_500(region_stack: RegionStack) -> None:
    for path, field in (("/api/v1/clusters/a%00b", "uuid"), ("/api/v1/machines/a%00b/x", "cluster")):
        result = await region_stack.request("GET", path, token=region_stack.read_token)
        assert_error(result, 400, "bad_request", field=field)


@pytest_twisted.ensureDeferred
async def test_clusters_list_with_a_huge_page_number_is_not_a_500(region_stack: RegionStack) -> None:
    result = await region_stack.request(
        "GET", "/api/v1/clusters?page=100000000000000000&page_size=100", token=region_stack.read_token
    )
    assert result.status in (200, 400), result.raw


# -- one cluster -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cluster_get_reports_connected_connection_count_and_last_seen(region_stack: RegionStack) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    await region_stack.connect_cluster(C1, "site-1", version="1.2.3", capabilities=["maas", "cloudstack"])
    one = await get_cluster(region_stack, C1)
    assert one["uuid"] == C1 and one["name"] == "site-1" and one["version"] == "1.2.3"
    assert one["capabilities"] == ["maas", "cloudstack"]
    assert one["connected"] is True and one["connections"] == 1
    last_seen = datetime.fromisoformat(one["last_seen"])
    assert before <= datetime.fromisoformat(one["first_seen"]) <= last_seen
    await region_stack.connect_cluster(C1, "site-1")
    two = await get_cluster(region_stack, C1)
    assert two["connected"] is True and two["connections"] == 2
    assert datetime.fromisoformat(two["last_seen"]) >= last_seen
    # Upper case names the same cluster.
    again = await get_cluster(region_stack, C1.upper())
    assert again["uuid"] == C1


@pytest_twisted.ensureDeferred
async def test_cluster_get_of_an_unknown_uuid_is_404(region_stack: RegionStack) -> None:
    result = await region_stack.request("GET", f"/api/v1/clusters/{UNKNOWN}", token=region_stack.read_token)
    error = assert_error(result, 404, "not_found")
    assert error["details"] == {"uuid": UNKNOWN}


@pytest_twisted.ensureDeferred
async def test_cluster_get_of_a_malformed_uuid_is_400(region_stack: RegionStack) -> None:
    for bad in ["not-a-uuid", "1234", "9d2f1c4e-3b5a-4c6d-8e7f-0a1b2c3d4e5", "%00", "%E2%98%83", C1 + "0"]:
        result = await region_stack.request("GET", f"/api/v1/clusters/{bad}", token=region_stack.read_token)
        assert_error(result, 400, "bad_request", field="uuid")


@pytest_twisted.ensureDeferred
async def test_a_cluster_that_disconnects_shows_connected_false(region_stack: RegionStack) -> None:
    cluster = await region_stack.connect_cluster(C1, "site-1")
    connected = await get_cluster(region_stack, C1)
    assert connected["connected"] is True
    cluster.transport.loseConnection()

    async def shows_disconnected() -> bool:
        return (await get_cluster(region_stack, C1))["connected"] is False

    await eventually(shows_disconnected)
    gone = await get_cluster(region_stack, C1)
    assert gone["connections"] == 0
    assert datetime.fromisoformat(gone["last_seen"]) >= datetime.fromisoformat(connected["last_seen"])
    assert region_stack.registry.connection_count(C1) == 0


# -- ping -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_of_a_connected_cluster_is_200_with_its_latency(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    for body in (None, {}, {"timeout": 5}, {"timeout": 0.5}):
        result = await ping(region_stack, C1, body)
        assert result.status == 200, result.raw
        answer = result.json()
        assert answer["uuid"] == C1 and answer["region"] == region_stack.process_id
        assert isinstance(answer["latency_ms"], (int, float)) and answer["latency_ms"] >= 0


@pytest_twisted.ensureDeferred
async def test_ping_of_a_known_but_disconnected_cluster_is_503_with_retry_after(region_stack: RegionStack) -> None:
    cluster = await region_stack.connect_cluster(C1, "site-1")
    cluster.transport.loseConnection()

    async def gone() -> bool:
        return region_stack.registry.connection_count(C1) == 0

    await eventually(gone)
    result = await ping(region_stack, C1)
    error = assert_error(result, 503, "unavailable")
    assert int(result.headers["retry-after"]) > 0
    assert error["details"]["cluster"] == C1
    [never] = await add_clusters(region_stack, ["never-connected"])
    assert_error(await ping(region_stack, never), 503, "unavailable")


@pytest_twisted.ensureDeferred
async def test_ping_of_an_unknown_cluster_is_404(region_stack: RegionStack) -> None:
    assert_error(await ping(region_stack, UNKNOWN), 404, "not_found")
    assert_error(await ping(region_stack, "not-a-uuid"), 400, "bad_request", field="uuid")


@pytest_twisted.ensureDeferred
async def test_ping_with_a_bad_timeout_is_400_naming_it(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    for timeout in [0, -1, 120.5, 1000, "5", True, None, [1], {"s": 1}]:
        result = await ping(region_stack, C1, {"timeout": timeout})
        assert_error(result, 400, "bad_request", field="timeout")
    for raw in (b'{"timeout": NaN}', b'{"timeout": Infinity}', b'{"timeout": 1e999}'):
        result = await ping(region_stack, C1, data=raw, headers={"Content-Type": "application/json"})
        assert assert_error(result, 400, "bad_request")["message"].startswith("body is not valid JSON: ")


@pytest_twisted.ensureDeferred
async def test_ping_with_a_body_that_is_not_a_json_object_is_400(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    for raw in [b"[]", b"[1, 2]", b'"text"', b"12", b"null", b"{", b"\xff\xfe", b"{'timeout': 1}"]:
        result = await ping(region_stack, C1, data=raw, headers={"Content-Type": "application/json"})
        assert_error(result, 400, "bad_request")


@pytest_twisted.ensureDeferred
async def test_ping_with_a_non_json_content_type_is_415(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml; charset=utf-8"):
        result = await ping(region_stack, C1, data=b'{"timeout": 1}', headers={"Content-Type": content_type})
        assert_error(result, 415, "unsupported_media_type")
    charset = await ping(region_stack, C1, data=b'{"timeout": 1}', headers={"Content-Type": "application/json; charset=utf-8"})
    assert charset.status == 200


@pytest_twisted.ensureDeferred
async def test_ping_with_deeply_nested_json_is_400_not_500(region_stack: RegionStack) -> None:
    await region_stack.connect_cluster(C1, "site-1")
    result = await ping(region_stack, C1, data=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert_error(result, 400)


@pytest_twisted.ensureDeferred
async def test_ping_of_a_cluster_that_never_answers_is_504(region_stack: RegionStack) -> None:
    cluster = await region_stack.connect_cluster(C1, "site-1")
    cluster.transport.pauseProducing()  # the cluster stops reading: the Ping is never answered
    started = region_stack.registry.clock.seconds()
    result = await ping(region_stack, C1, {"timeout": 0.3})
    error = assert_error(result, 504, "timeout")
    assert error["details"] == {"cluster": C1}
    assert region_stack.registry.clock.seconds() - started < 5
    # Timing out does not drop the connection.
    assert region_stack.registry.connection_count(C1) == 1


# -- routing -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_unknown_path_is_a_404_json_error_whatever_the_token(region_stack: RegionStack) -> None:
    paths = ["/", "/api", "/api/v1", "/api/v2/health", "/api/v1/health/", "/api/v1/clusters/", "/api/v1/nothing",
             f"/api/v1/clusters/{C1}/pong", "/api/v1/clusters/a/b/c", "/api/v1/%2e%2e/health"]
    for path in paths:
        for token in (region_stack.admin_token, None):
            result = await region_stack.request("GET", path, token=token)
            assert_error(result, 404, "not_found")


@pytest_twisted.ensureDeferred
async def test_a_wrong_method_is_405_with_allow(region_stack: RegionStack) -> None:
    cases = [
        ("POST", "/api/v1/health", "GET"),
        ("DELETE", "/api/v1/clusters", "GET"),
        ("PUT", f"/api/v1/clusters/{C1}", "GET"),
        ("GET", f"/api/v1/clusters/{C1}/ping", "POST"),
        ("PATCH", "/api/openapi.json", "GET"),
    ]
    for method, path, allow in cases:
        result = await region_stack.request(method, path, token=region_stack.admin_token)
        assert_error(result, 405, "method_not_allowed")
        assert result.headers["allow"] == allow


# -- what is recorded --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cluster_connect_and_disconnect_are_written_to_events(region_stack: RegionStack) -> None:
    cluster = await region_stack.connect_cluster(C1, "site-1", version="9.9")
    connected = await region_stack.db.fetch(
        "SELECT type, actor, subject, outcome, data FROM events WHERE cluster_uuid = %s ORDER BY id", (C1,)
    )
    assert [e["type"] for e in connected] == ["cluster.connected"]
    assert connected[0]["actor"] == f"cluster:{C1}" and connected[0]["subject"] == "site-1"
    assert connected[0]["data"]["version"] == "9.9"
    assert connected[0]["data"]["region_process"] == region_stack.process_id
    cluster.transport.loseConnection()
    await cluster.when_closed()

    async def recorded() -> bool:
        rows = await region_stack.db.fetch("SELECT type FROM events WHERE cluster_uuid = %s ORDER BY id", (C1,))
        return [r["type"] for r in rows] == ["cluster.connected", "cluster.disconnected"]

    await eventually(recorded)
    remaining = await region_stack.db.fetchone("SELECT count(*) AS n FROM rpc_connections")
    assert remaining["n"] == 0


@pytest_twisted.ensureDeferred
async def test_a_cluster_with_the_wrong_secret_is_never_registered(region_stack: RegionStack) -> None:
    with pytest.raises((AuthenticationFailed, ConnectionClosed)):
        await region_stack.connect_cluster(C1, "site-1", secret=b"w" * 32)
    result = await region_stack.request("GET", f"/api/v1/clusters/{C1}", token=region_stack.read_token)
    assert_error(result, 404)
    assert region_stack.registry.connection_count(C1) == 0


@pytest_twisted.ensureDeferred
async def test_a_cluster_name_with_a_trailing_newline_is_rejected_at_registration(region_stack: RegionStack) -> None:
    with pytest.raises(RegistrationRejected):
        await region_stack.connect_cluster(C1, "site-1\n")


def test_assert_error_rejects_a_body_without_the_envelope() -> None:
    """The helper the tests above lean on does check the envelope."""
    bad = HTTPResult(400, {"content-type": "application/json"}, json.dumps({"message": "x"}).encode())
    with pytest.raises(AssertionError):
        assert_error(bad, 400)


@pytest_twisted.ensureDeferred
async def test_token_use_is_recorded_but_not_written_on_every_request(region_stack: RegionStack) -> None:
    first = await region_stack.request("GET", "/api/v1/clusters", token=region_stack.read_token)
    assert first.status == 200
    row = await region_stack.db.fetchone("SELECT last_used_at FROM api_tokens WHERE id = %s", (region_stack.read_token_id,))
    assert row["last_used_at"] is not None
    await region_stack.request("GET", "/api/v1/clusters", token=region_stack.read_token)
    again = await region_stack.db.fetchone("SELECT last_used_at FROM api_tokens WHERE id = %s", (region_stack.read_token_id,))
    assert again["last_used_at"] == row["last_used_at"]

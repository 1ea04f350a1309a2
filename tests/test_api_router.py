"""
The router's answers when a handler fails: a bug is a 500 with a reference
to the logged traceback; an unavailable database is a 503 the client can
retry, logged in one line. Both in the route's own error shape.  And what
it refuses before any handler runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.logger import LogLevel, formatEvent

from regiond.api.router import DATABASE_RETRY_AFTER, ApiRequest, ApiResource, Route
from regiond.errors import DatabaseUnavailable
from regiond.infrastructure.api import IGNITION_ERROR_SCHEMA, ignition_error_body

TOKEN = "good-token"


async def authenticate(token: str) -> dict[str, Any] | None:
    if token == "while-the-database-is-down":
        raise DatabaseUnavailable("cannot reach PostgreSQL (host=/run): connection refused")
    return {"id": 1, "name": "t", "role": "admin"} if token == TOKEN else None


async def outage(request: ApiRequest) -> Any:
    raise DatabaseUnavailable("lost the connection to PostgreSQL: terminating connection due to administrator command")


async def bug(request: ApiRequest) -> Any:
    raise KeyError("oops")


seen: list[dict[str, str]] = []


async def echo(request: ApiRequest) -> Any:
    seen.append(request.params)
    return request.params


async def echo_body(request: ApiRequest) -> Any:
    return request.json()


def client() -> StubTreq:
    routes = [
        Route("POST", "/api/v1/things", echo_body, "ours", role="read"),
        Route("GET", "/api/v1/things/{name}", echo, "ours", role="read"),
        Route("GET", "/api/v1/outage", outage, "ours", role="read"),
        Route("GET", "/api/v1/bug", bug, "ours", role=None),
        Route("POST", "/api/infrastructure/query", outage, "a peer's", role="read",
              error_body=ignition_error_body, error_schema=IGNITION_ERROR_SCHEMA),
    ]
    return StubTreq(ApiResource(routes, authenticate))


async def call(method: str, path: str, token: str = TOKEN, body: bytes | None = None) -> tuple[int, dict[str, Any], Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = await client().request(method, "http://region" + path, headers=headers, data=body)
    return response.code, json.loads(await response.content()), response.headers


def tracebacks(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events if "log_failure" in e]


@pytest_twisted.ensureDeferred
async def test_an_unavailable_database_is_a_503_to_retry_logged_in_one_line(logged: list[dict[str, Any]]) -> None:
    status, body, headers = await call("GET", "/api/v1/outage")
    assert status == 503
    assert body == {"error": {"code": "unavailable", "message": "the region database is unavailable; try again shortly", "details": {}}}
    assert headers.getRawHeaders("retry-after") == [str(DATABASE_RETRY_AFTER)]
    assert tracebacks(logged) == []
    [warning] = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]
    assert "GET /api/v1/outage" in warning and "terminating connection" in warning


@pytest_twisted.ensureDeferred
async def test_an_outage_while_checking_the_token_is_a_503_not_a_401(logged: list[dict[str, Any]]) -> None:
    status, body, headers = await call("GET", "/api/v1/outage", token="while-the-database-is-down")
    assert status == 503 and body["error"]["code"] == "unavailable"
    assert headers.getRawHeaders("retry-after") == [str(DATABASE_RETRY_AFTER)]
    assert tracebacks(logged) == []


@pytest_twisted.ensureDeferred
async def test_a_peer_compatible_route_answers_an_outage_in_its_peer_s_shape() -> None:
    status, body, headers = await call("POST", "/api/infrastructure/query")
    assert status == 503
    assert body == {"localizedMessage": "the region database is unavailable; try again shortly", "status": 503}
    assert headers.getRawHeaders("retry-after") == [str(DATABASE_RETRY_AFTER)]


@pytest_twisted.ensureDeferred
async def test_a_bug_is_a_500_whose_reference_finds_the_logged_traceback(logged: list[dict[str, Any]]) -> None:
    status, body, _ = await call("GET", "/api/v1/bug")
    assert status == 500 and body["error"]["code"] == "internal_error"
    reference = body["error"]["message"].removeprefix("internal error, reference ")
    assert "oops" not in body["error"]["message"], "no internals in the answer"
    [logged_failure] = tracebacks(logged)
    assert reference in logged_failure
    [failure] = [e["log_failure"] for e in logged if "log_failure" in e]
    assert failure.check(KeyError)



@pytest.mark.parametrize("segment", ["%00", "a%00b", "%00%00", "x%00"])
@pytest_twisted.ensureDeferred
async def test_a_nul_in_a_path_parameter_is_refused_before_the_handler(segment: str) -> None:
    """
    PostgreSQL text cannot hold NUL, so a handler passing it to a query
    would fail with a 500; the router answers 400 for every route instead.
    """
    seen.clear()
    status, body, _ = await call("GET", "/api/v1/things/" + segment)
    assert status == 400
    assert body == {"error": {
        "code": "bad_request", "message": "path parameter 'name' must not contain NUL", "details": {"name": "must not contain NUL"},
    }}
    assert seen == []


@pytest_twisted.ensureDeferred
async def test_path_parameters_reach_the_handler_percent_decoded() -> None:
    seen.clear()
    status, body, _ = await call("GET", "/api/v1/things/r%C3%A4ck%201")
    assert (status, body) == (200, {"name": "räck 1"})


@pytest.mark.parametrize("constant, why", [
    ("NaN", "NaN is not a JSON number"),
    ("Infinity", "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"),
    ("1e999", "1e999 is out of range"),
])
@pytest_twisted.ensureDeferred
async def test_a_body_with_nan_or_infinity_is_not_json(constant: str, why: str) -> None:
    """Python's parser takes them; JSON, PostgreSQL's jsonb and our own encoders do not."""
    status, body, _ = await call("POST", "/api/v1/things", body=b'{"timeout": [1, %s]}' % constant.encode())
    assert status == 400
    assert body["error"]["message"] == f"body is not valid JSON: {why}"
    status, body, _ = await call("POST", "/api/v1/things", body=b'{"timeout": [1, 1e308, "NaN"]}')
    assert (status, body) == (200, {"timeout": [1, 1e308, "NaN"]})

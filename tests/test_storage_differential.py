"""
Differential tests: the peer (waldur-site-agent-cscs-hpc-storage 0.7.9,
installed for tests only) and our storage API, fed the same Waldur data by
the same simulator state, give the same JSON.

The peer runs unmodified: its own Waldur API client over an
``httpx.MockTransport`` to `WaldurSimulator.handle`, its backend, and its
FastAPI app through ``TestClient``.  Ours runs through the region's router.
Only what the peer leaves to chance is normalised (`normalise`):
``allowed_transitions`` order (a ``set``) and ``hash()``-based mock UIDs and
GIDs.  Types count: ``10.0`` is not ``10``.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from simulators.waldur import WaldurData
from tests.storagehelpers import (
    PEER_SKIP,
    PROJECTS,
    SYSTEMS,
    WALDUR_TOKEN,
    MemoryStack,
    config_data,
    customers_for,
    normalise,
    peer_app,
    peer_backend,
    peer_client,
    resources_strategy,
)

pytestmark = pytest.mark.skipif(PEER_SKIP is not None, reason=PEER_SKIP or "")

GID_BASE = 41000


def _gids(known: set[str]) -> dict[str, int]:
    return {p: GID_BASE + i for i, p in enumerate(PROJECTS) if p in known}


def _stack(resources: list[dict[str, Any]], known: set[str], **backend: Any) -> MemoryStack:
    stack = MemoryStack.create(resources=0, data=WaldurData([], [], [], resources), **backend)
    stack.waldur.customer_lists = customers_for(resources)
    stack.hpc.auto_assign = False
    stack.hpc.gids = _gids(known)
    return stack


def _peer_body(stack: MemoryStack, known: set[str], backend: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
    peer = peer_backend({"storage_file_system": "lustre", **backend}, _gids(known))
    client = peer_client(stack.waldur)
    args = dict(page=query.get("page", 1), page_size=query.get("page_size", 100), data_type=query.get("data_type"), status=query.get("status"))
    if query.get("storage_system"):
        return peer.generate_all_resources_json_by_slug(SYSTEMS[query["storage_system"]], client, None, **args)
    return peer.generate_all_resources_json_by_slugs(list(SYSTEMS.values()), client, None, **args)


def _paired(resources: int, seed: int = 0, customers: int | None = None, **backend: Any) -> tuple[MemoryStack, Any]:
    """A stack and the peer's app on the same simulator, knowing the same GIDs (one for every project)."""
    stack = MemoryStack.create(resources=resources, seed=seed, customers=customers, **backend)
    projects = sorted({r["project_slug"] for r in stack.waldur.data.resources})
    gids = {p: 42000 + i for i, p in enumerate(projects)}
    stack.hpc.gids, stack.hpc.auto_assign = gids, False
    return stack, peer_app(stack.waldur, config_data(**backend), gids)


def _ours(stack: MemoryStack, query: dict[str, Any]) -> dict[str, Any]:
    result = stack.get("/api/storage-resources/?" + urlencode({k: v for k, v in query.items() if v is not None}))
    assert result.status == 200, result.raw
    return result.json()


_queries = st.fixed_dictionaries(
    {
        "storage_system": st.sampled_from([None, None, None, "capstor", "vast", "iopsstor"]),
        "data_type": st.sampled_from([None] * 18 + ["store", "users", "scratch", "archive", "Store", ""]),
        "status": st.sampled_from([None] * 15 + ["active", "pending", "error", "removing", "removed"]),
        "page": st.sampled_from([1] * 5 + [2]),
        "page_size": st.sampled_from([100, 100, 100, 3, 1]),
    }
)
_backend = st.fixed_dictionaries(
    {
        "development_mode": st.sampled_from([True, True, False]),
        "use_mock_target_items": st.booleans(),
        "inode_soft_coefficient": st.sampled_from([1.33, 1, 1.5]),
        "inode_hard_coefficient": st.sampled_from([2.0, 2, 3.25]),
        "inode_base_multiplier": st.sampled_from([1_000_000, 1000, 2.5]),
        "storage_file_system": st.sampled_from(["lustre", "GPFS"]),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=resources_strategy(), known=st.sets(st.sampled_from(PROJECTS), min_size=2), backend=_backend, query=_queries)
def test_any_waldur_page_gives_the_peers_json(resources: list[dict[str, Any]], known: set[str], backend: dict[str, Any], query: dict[str, Any]) -> None:
    """For any resource shapes, settings, filters and page, our body is the peer's (normalised only where it is random)."""
    stack = _stack(resources, known, **backend)
    mocked = set(PROJECTS) - known if backend["development_mode"] else set()
    theirs, ours = _peer_body(stack, known, backend, query), _ours(stack, query)
    if _non_finite_override(resources):
        # An override such as "nan" or "1e999": the peer puts NaN/Infinity in
        # the quotas, which its JSONResponse cannot encode (a 500 for the whole
        # listing), or, beside a zero soft quota, drops the quotas (nan > 0 is
        # false); we ignore the override, and stay valid JSON.
        event("non-finite quota override")
        json.dumps(ours, allow_nan=False)
    elif _past_the_end(theirs):
        event("page past the end")
        assert ours["status"] == "success" and ours["resources"] == [] and ours["pagination"]["total"] == 0
    else:
        kinds = {e["target"]["targetType"] for e in ours["resources"]}
        event(f"entries: {', '.join(sorted(kinds)) or 'none'}")
        assert normalise(ours, mocked) == normalise(theirs, mocked)


def _non_finite_override(resources: list[dict[str, Any]]) -> bool:
    """Whether a resource's quota override reads, as the peer reads it (float()), as NaN or infinity."""
    for resource in resources:
        options = resource.get("options")
        if not isinstance(options, dict):
            continue
        for key in ("soft_quota_space", "hard_quota_space", "soft_quota_indoes", "hard_quota_indoes"):
            try:
                if not math.isfinite(float(options.get(key) or 0)):
                    return True
            except (TypeError, ValueError):
                pass
    return False


def _past_the_end(peer_body: dict[str, Any]) -> bool:
    """
    The peer answers a page past the end with a 500 (its Waldur client
    raises on Waldur's 404 "Invalid page."); we answer an empty page.
    """
    return peer_body.get("status") == "error" and "Unexpected status code: 404" in peer_body.get("error", "") and "Invalid page" in peer_body["error"]


@pytest.mark.parametrize(
    "query",
    [
        {"page_size": 500},
        {"page": 2, "page_size": 50},
        {"data_type": "users"},
        {"status": "active", "page_size": 300},
        {"data_type": "store", "status": "pending", "page_size": 500},
        {"storage_system": "capstor", "page_size": 500},
        {"storage_system": "vast", "page": 2, "page_size": 20, "data_type": "store"},
        {"storage_system": "iopsstor", "status": "error"},
    ],
    ids=lambda q: urlencode(q),
)
def test_the_peers_fastapi_app_and_our_route_answer_alike_on_realistic_data(query: dict[str, Any]) -> None:
    """Whole HTTP answers from the peer's FastAPI app and from our region route match on generated Waldur data."""
    stack, app = _paired(resources=400, seed=11, customers=8)
    theirs = app.get("/api/storage-resources/", params=query)
    ours = stack.get("/api/storage-resources/?" + urlencode(query))
    assert (ours.status, normalise(ours.json())) == (theirs.status_code, normalise(theirs.json()))
    assert theirs.json()["resources"], "the data set should give entries"


def test_with_more_than_ten_customers_we_keep_the_customer_entries_the_peer_loses() -> None:
    """
    The peer reads only the first page (10) of an offering's customers; we
    read them all.  Our output is the peer's plus the customer entries of
    the rest, and their projects gain a parentItemId.
    """
    stack, app = _paired(resources=300, seed=4, customers=40)
    theirs = app.get("/api/storage-resources/", params={"page_size": 300}).json()
    ours = stack.get("/api/storage-resources/?page_size=300").json()
    their_ids = {e["itemId"] for e in theirs["resources"]}
    extra = [e for e in ours["resources"] if e["itemId"] not in their_ids]
    assert extra and all(e["target"]["targetType"] == "customer" for e in extra)
    extra_ids = {e["itemId"] for e in extra}
    stripped = [e for e in ours["resources"] if e["itemId"] not in extra_ids]
    for e in stripped:
        if e["parentItemId"] in extra_ids:
            e["parentItemId"] = None
    assert normalise({**ours, "resources": stripped}) == normalise({**theirs, "pagination": ours["pagination"]})
    assert ours["pagination"]["total"] == theirs["pagination"]["total"] + len(extra)


_ERROR_QUERIES = [
    "storage_system=",
    "storage_system=foo",
    "storage_system=CAPSTOR",
    "state=bad",
    "state=ok",
    "page=0",
    "page=-1",
    "page=abc",
    "page=1.5",
    "page=1e3",
    "page=",
    "page_size=0",
    "page_size=501",
    "page_size=x",
    "debug=maybe",
    "debug=",
    "debug=2",
    "page=0&page_size=0&state=x&storage_system=y&debug=z",
    "page=" + "9" * 4400,
    "storage_system=%C3%A9",
]


@pytest.mark.parametrize("query", _ERROR_QUERIES)
def test_invalid_parameters_get_the_peers_422_bodies(query: str) -> None:
    """Every invalid value gets the status and body FastAPI gives in the peer, entry for entry."""
    stack, app = _paired(resources=5)
    theirs = app.get("/api/storage-resources/?" + query)
    ours = stack.get("/api/storage-resources/?" + query)
    assert theirs.status_code == 422
    assert (ours.status, ours.json()) == (theirs.status_code, theirs.json())


_VALUE = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["1", " 2 ", "+3", "-0", "1_0", "1__0", "1.0", "1.00", "1.", "٣", "1\u3000", "\xa07", "0x1", "500", "501", "TRUE", "No", "oN"]),
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(["page", "page_size", "debug", "state", "storage_system"]), value=_VALUE)
def test_any_value_is_accepted_or_refused_as_the_peer_does(name: str, value: str) -> None:
    """Hypothesis over raw parameter values: the same status, and the same 422 body when refused."""
    stack, app = _paired(resources=3)
    theirs = app.get("/api/storage-resources/", params={name: value})
    ours = stack.get("/api/storage-resources/?" + urlencode({name: value}))
    if "\x00" in value:
        # The region's router refuses NUL in any query parameter (400, its own shape).
        assert ours.status == 400
        return
    if theirs.status_code == 500:
        # The peer's two 500s for valid input: any valid state (see the next
        # test) and a page past the end; we answer 200 to both.
        assert name in ("state", "page") and ours.status == 200
        return
    assert ours.status == theirs.status_code
    if ours.status == 422:
        assert ours.json() == theirs.json()
    elif name != "debug":
        assert normalise(ours.json()) == normalise(theirs.json())


def test_the_peers_state_filter_is_broken_and_ours_filters() -> None:
    """
    The peer passes a ResourceState where its Waldur client (7.8.5) wants a
    list, and answers 500 for any valid state; we pass it to Waldur.
    """
    stack, app = _paired(resources=200, seed=2)
    theirs = app.get("/api/storage-resources/?state=Erred")
    assert theirs.status_code == 500
    ours = stack.get("/api/storage-resources/?state=Erred&page_size=500")
    assert ours.status == 200
    body = ours.json()
    assert body["filters_applied"]["state"] == "Erred"
    projects = [e for e in body["resources"] if e["target"]["targetType"] not in ("tenant", "customer")]
    assert projects and {e["status"] for e in projects} == {"error"}
    assert stack.waldur.requests[0][2]["state"] == ["Erred"]


def test_debug_mode_has_the_peers_shape_with_the_raw_resources() -> None:
    """
    Debug bodies have the peer's keys and agent config.  Resources are
    Waldur's JSON (the peer's are ``{"serialized": "Resource(...)"}``), and
    without storage_system they cover every configured offering: the peer
    sends the slugs as repeated ``offering_slug`` parameters, of which
    Waldur's filter keeps the last, so it shows only the last offering's.
    """
    stack, app = _paired(resources=30, seed=8, development_mode=True)
    by_system = {s: [r["uuid"] for r in stack.waldur.data.resources if r["offering_slug"] == s] for s in SYSTEMS}
    for query, theirs_cover, ours_cover in (
        ({"debug": "true"}, ["iopsstor"], list(SYSTEMS)),
        ({"debug": "1", "storage_system": "vast"}, ["vast"], ["vast"]),
    ):
        theirs = app.get("/api/storage-resources/", params=query).json()
        ours = stack.get("/api/storage-resources/?" + urlencode(query)).json()
        assert ours.keys() == theirs.keys() == {"status", "debug_mode", "agent_config", "raw_resources"}
        # The peer echoes backend_settings as written; we show them with the defaults applied.
        mine, its = dict(ours["agent_config"]), dict(theirs["agent_config"])
        assert mine.pop("backend_settings").items() >= its.pop("backend_settings").items()
        assert mine == its
        assert ours["raw_resources"].keys() == theirs["raw_resources"].keys()
        assert all(list(r) == ["serialized"] for r in theirs["raw_resources"]["resources"])
        assert len(theirs["raw_resources"]["resources"]) == sum(len(by_system[s]) for s in theirs_cover)
        assert sorted(r["uuid"] for r in ours["raw_resources"]["resources"]) == sorted(u for s in ours_cover for u in by_system[s])
        assert WALDUR_TOKEN not in json.dumps(ours)

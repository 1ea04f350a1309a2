"""
Helpers for the storage resources tests.

- `MemoryStack`: the whole storage API in memory and synchronous — the
  Waldur and HPC User API simulators' twisted.web resources behind a
  ``StubTreq``, a `StorageService` on a ``task.Clock``, and the region's
  `ApiResource` (with an in-memory token check) behind another ``StubTreq``.
- `tcp_stack`: the same over real sockets on the reactor pytest-twisted runs.
- The peer: ``waldur-site-agent-cscs-hpc-storage`` 0.7.9 driven on the same
  simulator state (`peer_backend`, `peer_app`), and `normalise` for what it
  leaves unordered or process-random.
- Hypothesis strategies for Waldur resource shapes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid as uuidlib
from typing import Any, AsyncIterator, Iterable
from urllib.parse import parse_qs

import attrs
import pytest_twisted
import treq
import yaml
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from regiond.api.router import ApiResource
from regiond.storage import StorageConfig, StorageService, parse_storage_config
from simulators.hpcuser import HpcUserResource, HpcUserSimulator, start_hpcuser_simulator, stop_hpcuser_simulator
from simulators.hpcuser import simulator_urls as hpc_urls
from simulators.waldur import (
    WaldurData,
    WaldurResource,
    WaldurSimulator,
    simulator_url,
    start_waldur_simulator,
    stop_waldur_simulator,
)

__all__ = [
    "WALDUR_TOKEN",
    "READ_TOKEN",
    "SYSTEMS",
    "config_data",
    "make_config",
    "authenticate",
    "MemoryStack",
    "TcpStack",
    "tcp_stack",
    "Result",
    "PEER_SKIP",
    "peer_backend",
    "peer_client",
    "peer_app",
    "normalise",
    "resources_strategy",
    "customers_for",
]

WALDUR_TOKEN = "waldur-test-token-0123456789"
HPC_SECRET = "hpc-test-client-secret"
READ_TOKEN = "opt_read-token"
SYSTEMS = {"capstor": "capstor", "vast": "vast", "iopsstor": "iopsstor"}
WALDUR_URL = "http://waldur.test/api/"
HPC_URL = "http://hpc.test"


def config_data(
    waldur_url: str = WALDUR_URL,
    *,
    hpc: tuple[str, str] | None = None,
    systems: dict[str, str] | None = None,
    **backend: Any,
) -> dict[str, Any]:
    """A valid ``storage:`` mapping; `hpc` is (api_url, token_url)."""
    data: dict[str, Any] = {
        "waldur_api_url": waldur_url,
        "waldur_api_token": WALDUR_TOKEN,
        "storage_systems": dict(systems or SYSTEMS),
        "backend_settings": {"storage_file_system": "lustre", **backend},
        "backend_components": {"storage": {"measured_unit": "TB", "accounting_type": "limit", "label": "Storage", "unit_factor": 1}},
        "waldur_timeout": 5.0,
        "waldur_retries": 2,
    }
    if hpc is not None:
        data["hpc_user_api"] = {
            "api_url": hpc[0],
            "client_id": "outpost",
            "client_secret": HPC_SECRET,
            "oidc_token_url": hpc[1],
            "oidc_scope": "openid",
            "timeout": 5.0,
        }
    return data


def make_config(*args: Any, **kwargs: Any) -> StorageConfig:
    problems: list[str] = []
    config = parse_storage_config(config_data(*args, **kwargs), problems)
    assert config is not None and not problems, problems
    return config


async def authenticate(token: str) -> dict[str, Any] | None:
    """The region's token check, in memory: one read token."""
    return {"id": 7, "name": "storage-test", "role": "read"} if token == READ_TOKEN else None


@attrs.frozen
class Result:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


class _Upstreams(Resource):
    """Waldur and the HPC User API on one resource (StubTreq ignores the host)."""

    isLeaf = True

    def __init__(self, waldur: WaldurResource, hpc: HpcUserResource) -> None:
        super().__init__()
        self.waldur, self.hpc = waldur, hpc

    def render(self, request: Any) -> Any:
        path = request.path.decode()
        if path.startswith("/oauth2/") or path.startswith("/api/v1/export/"):
            return self.hpc.render(request)
        return self.waldur.render(request)


@attrs.define
class MemoryStack:
    """The storage API, its upstreams and the router, in memory on a `Clock`."""

    waldur: WaldurSimulator
    hpc: HpcUserSimulator
    config: StorageConfig
    clock: Clock = attrs.field(factory=Clock)
    #: `outpost.metrics.ExternalCallMetrics` given to the service, or None.
    metrics: Any = None
    service: StorageService = attrs.field(init=False)
    upstream: StubTreq = attrs.field(init=False)
    api: StubTreq = attrs.field(init=False)

    @classmethod
    def create(
        cls,
        *,
        resources: int = 60,
        seed: int = 0,
        customers: int | None = None,
        data: WaldurData | None = None,
        hpc: bool = True,
        **config: Any,
    ) -> MemoryStack:
        clock = Clock()
        waldur = WaldurSimulator.create(token=WALDUR_TOKEN, resources=resources, seed=seed, customers=customers)
        if data is not None:
            waldur.data = data
        hpc_sim = HpcUserSimulator(clock, client_id="outpost", client_secret=HPC_SECRET)
        storage = make_config(WALDUR_URL, hpc=(HPC_URL, HPC_URL + "/oauth2/token") if hpc else None, **config)
        return cls(waldur, hpc_sim, storage, clock)

    def __attrs_post_init__(self) -> None:
        self.upstream = StubTreq(_Upstreams(WaldurResource(self.waldur, self.clock), HpcUserResource(self.hpc, self.clock)))
        self.service = StorageService(self.clock, self.config, http=self.upstream, metrics=self.metrics)
        self.api = StubTreq(ApiResource(self.service.routes(), authenticate))

    def settle(self, d: Deferred[Any], max_seconds: float = 600.0) -> Any:
        """
        Run `d` to its end, flushing both fake networks and, while nothing
        else moves, advancing the clock a second at a time (so timeouts and
        backoffs happen in simulated time); its result, or raise its failure.
        """
        results: list[Any] = []
        d.addBoth(results.append)
        waited = 0.0
        while not results and waited <= max_seconds:
            for _ in range(5):
                self.upstream.flush()
                self.api.flush()
            if not results:
                self.clock.advance(1.0)
                waited += 1.0
        assert results, f"still waiting after {max_seconds}s of simulated time"
        outcome = results[0]
        if hasattr(outcome, "raiseException"):
            outcome.raiseException()
        return outcome

    def run(self, coroutine: Any) -> Any:
        return self.settle(Deferred.fromCoroutine(coroutine))

    def get(self, path: str, *, token: str | None = READ_TOKEN, method: str = "GET") -> Result:
        """`method` `path` through the router; the whole answer."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}

        async def go() -> Result:
            response = await self.api.request(method, "http://region.test" + path, headers=headers, allow_redirects=False)
            raw = await self.api.content(response)
            found = {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}
            return Result(response.code, found, raw)

        return self.run(go())


@attrs.define
class TcpStack:
    waldur: WaldurSimulator
    hpc: HpcUserSimulator
    service: StorageService
    origin: str

    async def get(self, path: str, token: str | None = READ_TOKEN) -> Result:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response = await treq.get(self.origin + path, headers=headers, timeout=15)
        raw = await treq.content(response)
        return Result(response.code, {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}, raw)


@pytest_twisted.async_yield_fixture
async def tcp_stack() -> AsyncIterator[TcpStack]:
    """Simulators and the storage API on 127.0.0.1, the real reactor, real treq."""
    from twisted.internet import reactor

    waldur_port, waldur = await start_waldur_simulator(reactor, token=WALDUR_TOKEN, resources=80, seed=5)
    hpc_port, hpc = await start_hpcuser_simulator(reactor, client_id="outpost", client_secret=HPC_SECRET)
    service = StorageService(reactor, make_config(simulator_url(waldur_port), hpc=hpc_urls(hpc_port)))
    site = Site(ApiResource(service.routes(), authenticate))
    site.noisy = False
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    try:
        yield TcpStack(waldur, hpc, service, f"http://127.0.0.1:{port.getHost().port}")
    finally:
        await port.stopListening()
        await service.close()
        await stop_hpcuser_simulator(hpc_port, hpc)
        await stop_waldur_simulator(waldur_port, waldur)


# -- the peer -------------------------------------------------------------------------

def _peer_skip() -> str | None:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import waldur_site_agent_cscs_hpc_storage.backend  # noqa: F401
    except ImportError as e:
        return f"the peer (waldur-site-agent-cscs-hpc-storage 0.7.9 and its deps) is not installed: {e}"
    return None


PEER_SKIP = _peer_skip()


def _quiet_peer() -> None:
    # The peer logs every skipped resource with a traceback to stdout; it changes nothing it returns.
    for name in ("waldur_site_agent.backend", "waldur_site_agent_cscs_hpc_storage", "fastapi", "httpx"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _transport(sim: WaldurSimulator, origin: str) -> Any:
    import httpx

    def handle(request: Any) -> Any:
        query = parse_qs(request.url.query.decode(), keep_blank_values=True)
        answer = sim.handle(request.method, request.url.path, query, {k.lower(): v for k, v in request.headers.items()}, origin)
        return httpx.Response(answer.status, headers=list(answer.headers), content=answer.body)

    return httpx.MockTransport(handle)


def peer_client(sim: WaldurSimulator, waldur_url: str = WALDUR_URL) -> Any:
    """The peer's Waldur client (as its ``get_client`` makes it) talking to `sim` without sockets."""
    from waldur_api_client import AuthenticatedClient

    base = waldur_url.rstrip("/api")  # sic: the peer's own way
    origin = base.split("/api")[0]
    return AuthenticatedClient(base_url=base, token=WALDUR_TOKEN, timeout=600, httpx_args={"transport": _transport(sim, origin)})


def peer_backend(backend_settings: dict[str, Any], gids: dict[str, int]) -> Any:
    """The peer's backend with no HPC User API and `gids` already in its cache (so: found for those, not for others)."""
    from waldur_site_agent_cscs_hpc_storage.backend import CscsHpcStorageBackend

    _quiet_peer()
    backend = CscsHpcStorageBackend(dict(backend_settings), {"storage": {"measured_unit": "TB"}}, None)
    backend._gid_cache.update(gids)
    return backend


_PEER_MAIN: Any = None


def peer_app(sim: WaldurSimulator, storage: dict[str, Any], gids: dict[str, int]) -> Any:
    """The peer's FastAPI app (auth disabled) on `sim`, as a ``TestClient``."""
    global _PEER_MAIN
    from fastapi.testclient import TestClient

    if _PEER_MAIN is None:
        saved = {k: os.environ.get(k) for k in ("WALDUR_CSCS_STORAGE_PROXY_CONFIG_PATH", "DISABLE_AUTH")}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(storage, f)
        os.environ["WALDUR_CSCS_STORAGE_PROXY_CONFIG_PATH"] = f.name
        os.environ["DISABLE_AUTH"] = "true"
        try:
            from waldur_site_agent_cscs_hpc_storage.waldur_storage_proxy import main
        finally:
            os.unlink(f.name)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _PEER_MAIN = main
    main = _PEER_MAIN
    from waldur_site_agent_cscs_hpc_storage.waldur_storage_proxy.config import StorageProxyConfig

    main.config = StorageProxyConfig(
        waldur_api_url=storage["waldur_api_url"],
        waldur_api_token=storage["waldur_api_token"],
        backend_settings=dict(storage.get("backend_settings", {})),
        backend_components=dict(storage.get("backend_components", {})),
        storage_systems=dict(storage["storage_systems"]),
    )
    main.cscs_storage_backend = peer_backend(storage.get("backend_settings", {}), gids)
    main.waldur_client = peer_client(sim, storage["waldur_api_url"])
    _quiet_peer()
    return TestClient(main.app)


def normalise(body: Any, mock_projects: Iterable[str] = ()) -> str:
    """
    Canonical JSON text of a storage-resources body, with what the peer
    leaves to chance made fixed: ``allowed_transitions`` (a ``set``) sorted,
    user targets' ``unixUid`` and development-mode GIDs (``hash()``-based)
    replaced.  Types are kept (``10.0`` is not ``10``).
    """
    mocked = set(mock_projects)
    body = json.loads(json.dumps(body))
    for entry in body.get("resources", []) if isinstance(body, dict) else []:
        if isinstance(entry.get("allowed_transitions"), list):
            entry["allowed_transitions"].sort()
        target = entry.get("target") or {}
        item = target.get("targetItem")
        if not isinstance(item, dict):
            continue
        if target.get("targetType") == "user" and "unixUid" in item and "primaryProject" in item:
            item["unixUid"] = "<mock uid>"
            if item["primaryProject"].get("name") in mocked:
                item["primaryProject"]["unixGid"] = "<mock gid>"
        elif target.get("targetType") == "project" and "unixGid" in item and entry.get("mountPoint", {}).get("default", "").rsplit("/", 1)[-1] in mocked:
            item["unixGid"] = "<mock gid>"
    return json.dumps(body, sort_keys=True)


# -- hypothesis strategies ----------------------------------------------------------

OFFERINGS = {
    "capstor": uuidlib.UUID(int=0xC4B5702).hex,
    "vast": uuidlib.UUID(int=0x7A57).hex,
    "iopsstor": uuidlib.UUID(int=0x1095).hex,
}
_CUSTOMERS = [(f"cust-{i}", uuidlib.UUID(int=0xC0FFEE00 + i).hex, f"Customer {i}") for i in range(6)]
PROJECTS = ["proj-a", "proj-b", "proj-c", "proj-d"]

_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC-_.0123456789 ", min_size=0, max_size=12)
_missing = st.just(None)  # "leave the key out"


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(_missing.map(lambda _: _MISSING), strategy)


class _MissingKey:
    pass


_MISSING = _MissingKey()

_data_types = st.sampled_from(["store", "archive", "users", "scratch", "Store", "SCRATCH", "", "project-x"])
_numbers = st.one_of(
    st.integers(-5, 10**6),
    st.floats(-2, 1e4, allow_nan=False, allow_infinity=False),
    st.sampled_from(["10", "2.5", "abc", "", "1e2", "nan"]),
    st.none(),
    st.booleans(),
)


@st.composite
def _attributes(draw: Any) -> Any:
    out: dict[str, Any] = {}
    data_type = draw(_maybe(st.one_of(_data_types, st.none(), st.just(5))))
    if data_type is not _MISSING:
        out["storage_data_type"] = data_type
    permissions = draw(_maybe(st.one_of(st.sampled_from(["2770", "755", ""]), st.none(), st.just(775))))
    if permissions is not _MISSING:
        out["permissions"] = permissions
    return out


@st.composite
def _options(draw: Any) -> Any:
    kind = draw(st.sampled_from(["dict", "dict", "dict", "none", "empty", "list"]))
    if kind == "none":
        return None
    if kind == "empty":
        return {}
    if kind == "list":
        return ["not", "a", "mapping"]
    out: dict[str, Any] = {}
    for key in ("soft_quota_space", "hard_quota_space", "soft_quota_indoes", "hard_quota_indoes"):
        value = draw(_maybe(_numbers))
        if value is not _MISSING:
            out[key] = value
    permissions = draw(_maybe(st.one_of(st.sampled_from(["2750", ""]), st.just(7), st.none())))
    if permissions is not _MISSING:
        out["permissions"] = permissions
    return out


@st.composite
def _order(draw: Any) -> Any:
    kind = draw(st.sampled_from(["none", "full", "full", "no-uuid", "no-state"]))
    if kind == "none":
        return None
    states = st.sampled_from(["pending-consumer", "pending-provider", "pending-project", "pending-start-date", "executing", "done", "erred", "canceled", "rejected"])
    out: dict[str, Any] = {}
    if kind != "no-uuid":
        out["uuid"] = uuidlib.UUID(int=draw(st.integers(1, 2**64))).hex
    if kind != "no-state":
        out["state"] = draw(states)
    return out


@st.composite
def _resource(draw: Any, index: int) -> dict[str, Any]:
    system = draw(st.sampled_from(sorted(OFFERINGS)))
    customer = draw(st.sampled_from(_CUSTOMERS + [("stranger", uuidlib.UUID(int=99).hex, "Stranger")]))
    project = draw(st.sampled_from(PROJECTS))
    record: dict[str, Any] = {
        "uuid": uuidlib.UUID(int=(index + 1) << 64 | draw(st.integers(0, 2**32))).hex,  # unique, as in Waldur
        "offering_uuid": OFFERINGS[system],
        "offering_slug": system,
        "provider_slug": draw(st.sampled_from(["cscs", "CSCS", "psi"])),
        "customer_slug": customer[0],
        "customer_name": customer[2],
        "customer_uuid": customer[1],
        "project_slug": project,
        "project_name": project.upper(),
        "name": f"resource {index}",
        "slug": draw(st.sampled_from([f"res-{index}", f"Res_{index}"])),
        "created": f"2024-01-01T00:{index // 60:02d}:{index % 60:02d}Z",
    }
    optional = {
        "provider_name": st.one_of(st.sampled_from(["CSCS", "Paul Scherrer"]), st.none()),
        "state": st.sampled_from(["Creating", "OK", "Erred", "Updating", "Terminating", "Terminated"]),
        "attributes": _attributes(),
        "limits": st.one_of(st.just({}), st.fixed_dictionaries({"storage": _numbers}), st.fixed_dictionaries({"cpu": st.integers(0, 9)})),
        "options": _options(),
        "backend_metadata": st.one_of(
            st.just({}),
            st.just({"project_item": {"itemId": "from-metadata", "name": "p"}}),
            st.just({"user_item": {"itemId": "user-from-metadata"}}),
            st.just({"state": "ok", "project_item": ""}),
        ),
        "order_in_progress": _order(),
    }
    for key, strategy in optional.items():
        value = draw(_maybe(strategy))
        if value is not _MISSING:
            record[key] = value
    return record


@st.composite
def resources_strategy(draw: Any, max_size: int = 12) -> list[dict[str, Any]]:
    """Lists of Waldur resources in the shapes Waldur's API (and the peer's client) accept."""
    count = draw(st.integers(0, max_size))
    return [draw(_resource(i)) for i in range(count)]


def customers_for(resources: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each offering's customer list: every known customer (not "stranger") with a resource in it (≤ 10)."""
    out: dict[str, dict[str, dict[str, Any]]] = {hex_: {} for hex_ in OFFERINGS.values()}
    known = {slug: (uuid, name) for slug, uuid, name in _CUSTOMERS}
    for record in resources:
        slug = record["customer_slug"]
        if slug in known:
            uuid, name = known[slug]
            out[record["offering_uuid"]][slug] = {"uuid": uuid, "name": name, "slug": slug, "abbreviation": "", "phone_number": "", "email": ""}
    return {hex_: sorted(found.values(), key=lambda c: c["name"]) for hex_, found in out.items()}

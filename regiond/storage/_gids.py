"""
Project GIDs: the HPC User API behind OAuth2 client credentials, and a
cache in front of it that lasts until the region restarts.

`HpcUserClient` gets a token (``grant_type=client_credentials``) and keeps
it until shortly before it expires, fetching a new one at once if the API
refuses it; it asks for many projects in one request
(``?projects=a&projects=b``).  `GidResolver` applies the CSCS proxy's rules
per project:

- a cached GID is used (hits are counted);
- a GID the API returns is cached;
- a project the API does not know, or an API failure: in development mode a
  deterministic mock GID (30000–39999), cached; otherwise no GID, and the
  resource is left out of the listing (not cached, so the next request asks
  again);
- no HPC User API configured: mock GIDs in development mode, none otherwise.

Concurrent requests for the same project share one lookup.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from regiond.storage._config import HpcUserApiConfig
from regiond.storage._http import HTTPClient, Upstream
from regiond.storage._transform import mock_gid
from regiond.storage.errors import HpcUserApiError, HpcUserApiTimeout
from regiond.storage.interfaces import IGidSource

__all__ = ["HpcUserClient", "GidResolver", "CACHE_POLICY", "BATCH"]

log = Logger()

CACHE_POLICY = "Persists until server restart"
#: Projects asked for in one HPC User API request.
BATCH = 100
_PROJECTS_PATH = "/api/v1/export/waldur/projects"


@implementer(IGidSource)
@attrs.define
class HpcUserClient:
    reactor: IReactorTime
    http: HTTPClient
    config: HpcUserApiConfig
    retries: int = 1
    _token: str | None = attrs.field(init=False, default=None, repr=False)
    _token_until: float = attrs.field(init=False, default=0.0)
    _waiters: list[Deferred[str]] | None = attrs.field(init=False, default=None, repr=False)
    _upstream: Upstream = attrs.field(init=False, repr=False)
    token_fetches: int = attrs.field(init=False, default=0)
    #: `outpost.metrics.ExternalCallMetrics` (``service="hpc_user_api"``), or None.
    metrics: Any = attrs.field(default=None, kw_only=True, repr=False)

    def __attrs_post_init__(self) -> None:
        self._upstream = Upstream(
            self.reactor, self.http, "HPC User API", self.config.timeout, self.retries, error=HpcUserApiError, timeout_error=HpcUserApiTimeout,
            metrics=self.metrics, service="hpc_user_api",
        )

    @property
    def upstream(self) -> Upstream:
        return self._upstream

    async def _fetch_token(self) -> str:
        url = self.config.oidc_token_url
        form = {
            "grant_type": "client_credentials",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "scope": self.config.oidc_scope,
        }
        answer = await self._upstream.call("POST", url, headers={"Accept": "application/json"}, data=form, operation="token")
        if answer.status != 200:
            raise HpcUserApiError.from_status("The OIDC token endpoint", "POST", url, answer.status)
        try:
            body = answer.json()
            token = body["access_token"]
            expires_in = body.get("expires_in", 3600)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HpcUserApiError.bad_body("The OIDC token endpoint", "POST", url, "no access_token") from None
        if not isinstance(token, str) or not token:
            raise HpcUserApiError.bad_body("The OIDC token endpoint", "POST", url, "no access_token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
            expires_in = 60
        # Renew a little early: 10% of the lifetime, at most 5 minutes.
        self._token_until = self.reactor.seconds() + expires_in - min(300.0, expires_in * 0.1)
        self._token = token
        self.token_fetches += 1
        log.info("Got an HPC User API token valid for {expires_in}s", expires_in=expires_in)
        return token

    async def token(self) -> str:
        """A valid access token; concurrent callers share one fetch."""
        if self._token is not None and self.reactor.seconds() < self._token_until:
            return self._token
        if self._waiters is not None:
            waiting: Deferred[str] = Deferred()
            self._waiters.append(waiting)
            return await waiting
        self._waiters = []
        try:
            token = await self._fetch_token()
        except Exception:
            waiters, self._waiters = self._waiters, None
            failure = Failure()
            for waiter in waiters:
                waiter.errback(failure)
            raise
        waiters, self._waiters = self._waiters, None
        for waiter in waiters:
            waiter.callback(token)
        return token

    def forget_token(self) -> None:
        self._token = None

    async def project_gids(self, names: list[str]) -> dict[str, int | None]:
        """The GID of each project in `names` (None: unknown to the API, or not unique); one request."""
        url = self.config.api_url.rstrip("/") + _PROJECTS_PATH
        for attempt in (1, 2):
            token = await self.token()
            answer, body = await self._upstream.get_json(
                url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}, params=[("projects", n) for n in names],
                operation="projects",
            )
            if answer.status == 401 and attempt == 1:
                self.forget_token()  # revoked or expired early: one more try with a new token
                continue
            if answer.status != 200:
                raise HpcUserApiError.from_status("The HPC User API", "GET", url, answer.status)
            break
        try:
            projects = body["projects"]
            by_name: dict[str, list[Any]] = {}
            for project in projects:
                by_name.setdefault(project.get("posixName"), []).append(project.get("unixGid"))
        except (TypeError, KeyError, AttributeError):
            raise HpcUserApiError.bad_body("The HPC User API", "GET", url, "expected {\"projects\": [...]}") from None
        out: dict[str, int | None] = {}
        for name in names:
            found = by_name.get(name, [])
            gid = found[0] if len(found) == 1 else None
            if len(found) > 1:
                log.error("The HPC User API has {n} projects named {name}", n=len(found), name=name)
            out[name] = gid if isinstance(gid, int) and not isinstance(gid, bool) else None
        return out


def _follow(shared: Deferred[Any]) -> Deferred[Any]:
    """A Deferred with `shared`'s value, leaving that value to the others (`shared` never fails)."""
    out: Deferred[Any] = Deferred()

    def deliver(value: Any) -> Any:
        out.callback(value)
        return value

    shared.addCallback(deliver)
    return out


@attrs.define
class GidResolver:
    client: IGidSource | None
    development_mode: bool
    #: project → (GID, "hpc_user_api" or "mock")
    _cache: dict[str, tuple[int, str]] = attrs.field(factory=dict)
    _pending: dict[str, Deferred[int | None]] = attrs.field(factory=dict, repr=False)
    hits: int = 0
    misses: int = 0
    lookup_failures: int = 0
    not_found: int = 0

    def cached(self, name: str) -> int | None:
        entry = self._cache.get(name)
        return None if entry is None else entry[0]

    async def resolve(self, names: Iterable[str]) -> dict[str, int | None]:
        """The GID to use for each project (None: leave its resources out)."""
        wanted = list(dict.fromkeys(names))
        out: dict[str, int | None] = {}
        mine: list[str] = []
        theirs: list[tuple[str, Deferred[int | None]]] = []
        for name in wanted:
            entry = self._cache.get(name)
            if entry is not None:
                self.hits += 1
                out[name] = entry[0]
            elif name in self._pending:
                theirs.append((name, _follow(self._pending[name])))
            else:
                self.misses += 1
                self._pending[name] = Deferred()
                mine.append(name)
        try:
            for start in range(0, len(mine), BATCH):
                chunk = mine[start : start + BATCH]
                results = await self._lookup(chunk)
                for name in chunk:
                    out[name] = results[name]
                    self._pending.pop(name).callback(results[name])
        finally:
            for name in mine:  # on an unexpected error, release the waiters
                pending = self._pending.pop(name, None)
                if pending is not None:
                    pending.callback(None)
        for name, waiting in theirs:
            out[name] = await waiting
        return out

    async def _lookup(self, names: list[str]) -> dict[str, int | None]:
        found: dict[str, int | None] = {name: None for name in names}
        failed = False
        if self.client is not None:
            try:
                found = await self.client.project_gids(names)
            except HpcUserApiError as e:
                failed = True
                self.lookup_failures += 1
                log.error("GID lookup for {n} project(s) failed: {error}", n=len(names), error=str(e))
        out: dict[str, int | None] = {}
        for name in names:
            gid = found.get(name)
            if gid is not None:
                self._cache[name] = (gid, "hpc_user_api")
                out[name] = gid
                continue
            if self.client is not None and not failed:
                self.not_found += 1
            if self.development_mode:
                mock = mock_gid(name)
                self._cache[name] = (mock, "mock")
                out[name] = mock
            else:
                out[name] = None
        if not self.development_mode and any(v is None for v in out.values()):
            log.warn(
                "No GID for {n} project(s) (e.g. {example}); their resources are left out (production mode)",
                n=sum(v is None for v in out.values()),
                example=next(k for k, v in out.items() if v is None),
            )
        return out

    def stats(self, limit: int = 10) -> dict[str, Any]:
        """Cache statistics; lists at most `limit` projects (sorted)."""
        names = sorted(self._cache)
        return {
            "total_entries": len(self._cache),
            "cache_policy": CACHE_POLICY,
            "projects": [
                {"project": name, "unix_gid": self._cache[name][0], "source": self._cache[name][1]} for name in names[:limit]
            ],
            "projects_listed": min(limit, len(names)),
            "mock_entries": sum(1 for gid, source in self._cache.values() if source == "mock"),
            "hits": self.hits,
            "misses": self.misses,
            "not_found": self.not_found,
            "lookup_failures": self.lookup_failures,
            "hpc_user_api": "configured" if self.client is not None else "not configured",
            "development_mode": self.development_mode,
        }

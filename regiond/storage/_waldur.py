"""
A Waldur Mastermind client for the two calls the storage API needs.

- one page of marketplace resources for any number of offering slugs in
  one request (``offering_slug=a,b,c``, Waldur's ``CharInFilter``), with its
  ``X-Result-Count``; or every page of them (`all_resources`);
- every page of an offering's customers.

Token auth (``Authorization: Token …``); timeouts and retries come from
`Upstream`.  A page past the end (Waldur's 404 "Invalid page.") is an empty
page, as the CSCS proxy treats it; any other error status is a
`WaldurError`, where the proxy silently answered "no resources".
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from regiond.storage._http import HTTPClient, Upstream
from regiond.storage.errors import WaldurError, WaldurTimeout
from regiond.storage.interfaces import IWaldurClient

__all__ = ["WaldurClient", "WaldurPage", "waldur_root", "WALDUR_MAX_PAGE_SIZE"]

#: Waldur's ``LinkHeaderPagination.max_page_size``: it never sends more a page.
WALDUR_MAX_PAGE_SIZE = 300
_MAX_PAGES = 100_000


def waldur_root(api_url: str) -> str:
    """``https://host[/prefix]`` of a Waldur API URL (``…/api/`` or without ``/api``)."""
    root = api_url.rstrip("/")
    if root.endswith("/api"):
        root = root[: -len("/api")]
    return root


@attrs.frozen
class WaldurPage:
    items: list[Any]
    #: ``X-Result-Count`` (None when Waldur did not send one).
    result_count: int | None
    has_next: bool


@implementer(IWaldurClient)
@attrs.define
class WaldurClient:
    reactor: IReactorTime
    http: HTTPClient
    api_url: str
    token: str = attrs.field(repr=False)
    timeout: float = 30.0
    retries: int = 2
    user_agent: str = "outpost-region"
    #: `outpost.metrics.ExternalCallMetrics` (``service="waldur"``), or None.
    metrics: Any = attrs.field(default=None, kw_only=True, repr=False)
    _upstream: Upstream = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._upstream = Upstream(
            self.reactor, self.http, "Waldur", self.timeout, self.retries, error=WaldurError, timeout_error=WaldurTimeout,
            metrics=self.metrics, service="waldur",
        )

    @property
    def root(self) -> str:
        return waldur_root(self.api_url)

    @property
    def upstream(self) -> Upstream:
        return self._upstream

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", "Accept": "application/json", "User-Agent": self.user_agent}

    async def _page(self, path: str, params: list[tuple[str, str]]) -> WaldurPage:
        url = f"{self.root}/api/{path}"
        answer, body = await self._upstream.get_json(url, headers=self._headers(), params=params, operation=path.split("/")[0])
        if answer.status == 404 and path.startswith("marketplace-resources/"):
            # Waldur's "Invalid page.": past the last page.
            return WaldurPage([], None, False)
        if answer.status != 200:
            raise WaldurError.from_status("Waldur", "GET", url, answer.status)
        if not isinstance(body, list):
            raise WaldurError.bad_body("Waldur", "GET", url, "expected a JSON list")
        count_header = answer.headers.get("x-result-count")
        try:
            count = int(count_header) if count_header is not None else None
        except ValueError:
            raise WaldurError.bad_body("Waldur", "GET", url, f"X-Result-Count is {count_header!r}") from None
        link = answer.headers.get("link", "")
        return WaldurPage(body, count, 'rel="next"' in link)

    async def resources_page(
        self, offering_slugs: str, page: int, page_size: int, state: str | None = None
    ) -> WaldurPage:
        """One page of marketplace resources of the offerings (`offering_slugs`: comma separated)."""
        params = [("offering_slug", offering_slugs), ("page", str(page)), ("page_size", str(page_size))]
        if state:
            params.append(("state", state))
        return await self._page("marketplace-resources/", params)

    async def _all(self, path: str, params: list[tuple[str, str]], page_size: int) -> AsyncIterator[list[Any]]:
        for page in range(1, _MAX_PAGES):
            result = await self._page(path, [*params, ("page", str(page)), ("page_size", str(page_size))])
            yield result.items
            if not result.items or not result.has_next and (result.result_count is None or page * page_size >= result.result_count):
                return

    async def all_resources(self, offering_slugs: Sequence[str], state: str | None = None) -> list[Any]:
        """Every marketplace resource of the offerings, through all pages."""
        params = [("offering_slug", ",".join(offering_slugs))]
        if state:
            params.append(("state", state))
        out: list[Any] = []
        async for items in self._all("marketplace-resources/", params, WALDUR_MAX_PAGE_SIZE):
            out.extend(items)
        return out

    async def offering_customers(self, offering_uuid: str) -> list[Any]:
        """Every customer of the offering, through all pages (the proxy read only the first 10)."""
        out: list[Any] = []
        async for items in self._all(f"marketplace-provider-offerings/{offering_uuid}/customers/", [], WALDUR_MAX_PAGE_SIZE):
            out.extend(items)
        return out

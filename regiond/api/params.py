"""Query parameters and path references every part of the region API reads the same way."""

from __future__ import annotations

from typing import Any

from regiond.api import errors
from regiond.api.router import ApiRequest, parse_query

__all__ = ["MAX_PAGE", "MAX_PAGE_SIZE", "true_or_false", "page_number", "page_size", "pagination", "resolve_cluster"]

#: Far beyond any real listing; keeps OFFSET well inside PostgreSQL's bigint.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000


def true_or_false(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def page_number(value: str) -> int:
    n = int(value)
    if not 1 <= n <= MAX_PAGE:
        raise ValueError(f"must be between 1 and {MAX_PAGE}")
    return n


def page_size(value: str) -> int:
    n = int(value)
    if not 1 <= n <= MAX_PAGE_SIZE:
        raise ValueError(f"must be between 1 and {MAX_PAGE_SIZE}")
    return n


def pagination(request: ApiRequest, default_size: int = 100) -> tuple[int, int]:
    """(page, page_size) from the query, each checked (a 400 naming the parameter)."""
    return parse_query(request, "page", page_number, 1), parse_query(request, "page_size", page_size, default_size)


async def resolve_cluster(clusters: Any, ref: Any) -> str:
    """The uuid of the cluster whose uuid or name is `ref`: 400 if malformed or ambiguous, 404 if unknown."""
    if not isinstance(ref, str) or not 0 < len(ref) <= 255 or "\x00" in ref:
        raise errors.BadRequest("invalid cluster", details={"cluster": "give the cluster's uuid or name"})
    found = await clusters.resolve(ref)
    if not found:
        raise errors.NotFound(f"no cluster {ref}", details={"cluster": ref})
    if len(found) > 1:
        raise errors.BadRequest(f"cluster name {ref} is ambiguous; use its uuid", details={"cluster": found})
    return str(found[0])

"""
The query parameters of ``GET /api/storage-resources/``, validated as the
CSCS proxy (FastAPI and pydantic 2) validates them, with the same 422 bodies:
``{"detail": [{"type", "loc", "msg", "input", "ctx"?}, ...]}``, one entry per
bad parameter, in the order the proxy declares them.

Integers follow pydantic's lax rules (surrounding whitespace, a sign,
single underscores between digits and a zero fraction are accepted:
``" 2"``, ``"+3"``, ``"1_0"``, ``"1.0"``); booleans accept 0/1, true/false,
t/f, yes/no, y/n and on/off in any case.  ``storage_system`` is an enum of
the configured systems; ``state`` one of Waldur's resource states.

One deliberate difference: the proxy's enum was hard-coded
(capstor/vast/iopsstor) and a valid but unconfigured name gave an empty
success; ours is the configured names, so that cannot happen.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import attrs

__all__ = ["StorageQuery", "parse_storage_query", "RESOURCE_STATES", "MAX_PAGE_SIZE", "expected_list"]

#: Waldur's ResourceState values, in the order its API client (and so the proxy's error message) lists them.
RESOURCE_STATES = ("Creating", "Erred", "OK", "Terminated", "Terminating", "Updating")
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100

#: What pydantic-core (Rust's ``str::trim``) strips: Unicode White_Space.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_INT = re.compile(r"[+-]?[0-9](?:_?[0-9])*(?:\.0+)?", re.ASCII)
#: pydantic's limit on digits; we stop a little short so offsets stay printable.
_MAX_DIGITS = 4290
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


@attrs.frozen
class StorageQuery:
    storage_system: str | None
    state: str | None
    page: int
    page_size: int
    data_type: str | None
    status: str | None
    debug: bool


def expected_list(values: Sequence[str]) -> str:
    """pydantic's ``'a', 'b' or 'c'``."""
    quoted = [repr(v) for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _error(kind: str, name: str, msg: str, raw: str, ctx: Mapping[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "loc": ["query", name], "msg": msg, "input": raw}
    if ctx is not None:
        entry["ctx"] = dict(ctx)
    return entry


def _int(name: str, raw: str, low: int, high: int | None) -> int | dict[str, Any]:
    text = raw.strip(_WHITESPACE)
    if not _INT.fullmatch(text):
        return _error("int_parsing", name, "Input should be a valid integer, unable to parse string as an integer", raw)
    whole = text.split(".", 1)[0]
    if len(whole.lstrip("+-").replace("_", "")) > _MAX_DIGITS:
        return _error("int_parsing_size", name, "Unable to parse input string as an integer, exceeded maximum size", raw)
    value = int(whole)
    if value < low:
        return _error("greater_than_equal", name, f"Input should be greater than or equal to {low}", raw, {"ge": low})
    if high is not None and value > high:
        return _error("less_than_equal", name, f"Input should be less than or equal to {high}", raw, {"le": high})
    return value


def _enum(name: str, raw: str, allowed: Sequence[str]) -> str | dict[str, Any]:
    if raw in allowed:
        return raw
    expected = expected_list(allowed)
    return _error("enum", name, f"Input should be {expected}", raw, {"expected": expected})


def _bool(name: str, raw: str) -> bool | dict[str, Any]:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return _error("bool_parsing", name, "Input should be a valid boolean, unable to interpret input", raw)


def parse_storage_query(
    arg: Any, storage_systems: Sequence[str]
) -> StorageQuery | list[dict[str, Any]]:
    """
    The query, or the list of errors for a 422 ``{"detail": [...]}``.
    `arg(name)` gives the last value of a parameter or None.
    """
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}

    def take(name: str, result: Any) -> None:
        if isinstance(result, dict):
            errors.append(result)
        else:
            values[name] = result

    raw = arg("storage_system")
    take("storage_system", None if raw is None else _enum("storage_system", raw, storage_systems))
    raw = arg("state")
    take("state", None if raw is None else _enum("state", raw, RESOURCE_STATES))
    raw = arg("page")
    take("page", 1 if raw is None else _int("page", raw, 1, None))
    raw = arg("page_size")
    take("page_size", DEFAULT_PAGE_SIZE if raw is None else _int("page_size", raw, 1, MAX_PAGE_SIZE))
    values["data_type"] = arg("data_type")
    values["status"] = arg("status")
    raw = arg("debug")
    take("debug", False if raw is None else _bool("debug", raw))
    if errors:
        return errors
    return StorageQuery(**values)

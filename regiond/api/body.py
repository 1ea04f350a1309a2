"""Checking JSON request bodies: every problem reported at once, by field."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from regiond.api import errors
from regiond.api.router import ApiRequest

__all__ = ["Check", "read_body", "boolean", "text", "number", "one_of", "string_list"]

Check = Callable[[Any], Any]


def read_body(request: ApiRequest, fields: Mapping[str, tuple[Check, Any]], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """
    The request's JSON object checked against `fields` (name → (check,
    default)); unknown, missing or invalid fields are one 400 listing each.
    """
    body = request.json()
    if not isinstance(body, dict):
        raise errors.BadRequest("body must be a JSON object")
    problems: dict[str, str] = {}
    for key in body:
        if key not in fields:
            problems[key] = "unknown field"
    values: dict[str, Any] = {}
    for name, (check, default) in fields.items():
        if name not in body:
            if name in required:
                problems[name] = "required"
            values[name] = default
            continue
        try:
            values[name] = check(body[name])
        except ValueError as e:
            problems[name] = str(e)
    if problems:
        raise errors.BadRequest("invalid request body", details=problems)
    return values


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def text(max_length: int = 255) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value or len(value) > max_length:
            raise ValueError(f"must be a string of 1 to {max_length} characters")
        return value

    return check


def number(low: float, high: float) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
            raise ValueError(f"must be a number in ({low:g}, {high:g}]")
        return float(value)

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return check


def string_list(max_items: int = 100, max_length: int = 255) -> Check:
    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or len(value) > max_items or not all(
            isinstance(v, str) and 0 < len(v) <= max_length for v in value
        ):
            raise ValueError(f"must be a list of at most {max_items} non-empty strings")
        return list(value)

    return check

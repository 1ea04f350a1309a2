"""
The simulator's answers that are errors, as MAAS gives them.

Each carries the HTTP status, the body and its content type: 400 is a JSON
dict of field errors; the rest are short plain-text messages, as MAAS's
Django/Piston stack sends them.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SimError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "Unavailable", "MethodNotAllowed", "PlainBadRequest"]


class SimError(Exception):
    status = 500
    content_type = "text/plain; charset=utf-8"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> bytes:
        return self.message.encode("utf-8")


class BadRequest(SimError):
    """400 with MAAS's dict of field errors (``{"field": ["message", ...]}``)."""

    status = 400
    content_type = "application/json"

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))
        self.fields = fields

    @classmethod
    def field(cls, name: str, message: str) -> "BadRequest":
        return cls({name: [message]})

    def body(self) -> bytes:
        return json.dumps(self.fields).encode("utf-8")


class PlainBadRequest(SimError):
    """400 with a plain-text message (MAAS's MAASAPIBadRequest, e.g. an unknown op)."""

    status = 400


class Unauthorized(SimError):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(f"Authorization Error: {message}", {"WWW-Authenticate": 'OAuth realm="OAuth"'})


class Forbidden(SimError):
    status = 403


class NotFound(SimError):
    status = 404

    @classmethod
    def machine(cls) -> "NotFound":
        return cls("No Machine matches the given query.")

    @classmethod
    def of(cls, kind: str) -> "NotFound":
        return cls(f"No {kind} matches the given query.")


class MethodNotAllowed(SimError):
    status = 405


class Conflict(SimError):
    """409: MAAS's NodeStateViolation."""

    status = 409


class Unavailable(SimError):
    status = 503


def is_error(value: Any) -> bool:
    return isinstance(value, SimError)

"""The simulated VIM's error answers: an HTTP status and a machine-readable code the driver maps to Ignition's errors."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BAD_REQUEST",
    "INVALID_TEMPLATE",
    "INFRASTRUCTURE_NOT_FOUND",
    "REQUEST_NOT_FOUND",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_ERROR",
]

#: The body is not a JSON object of the documented shape (400).
BAD_REQUEST = "BadRequest"
#: The template (or its type, or the parameter values) cannot be used (400).
INVALID_TEMPLATE = "InvalidTemplate"
#: No infrastructure with that id (404).
INFRASTRUCTURE_NOT_FOUND = "InfrastructureNotFound"
#: The infrastructure exists, the request id is not one of its requests (404).
REQUEST_NOT_FOUND = "RequestNotFound"
#: No such path (404).
NOT_FOUND = "NotFound"
METHOD_NOT_ALLOWED = "MethodNotAllowed"
#: An injected fault (503 by default).
SERVICE_UNAVAILABLE = "ServiceUnavailable"
INTERNAL_ERROR = "InternalError"


class ApiError(Exception):
    """An error answer: ``status`` and the body ``{"code": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"

"""
Errors of the MAAS integration.

Every error carries the HTTP ``status`` (None when there was no HTTP answer)
and a short message naming the call; never the API key.  `error_for_status`
turns a MAAS error response into the right class.
"""

from __future__ import annotations

import json
from typing import Any

from clusterd.errors import ClusterError

__all__ = [
    "MAASError",
    "MAASAuthError",
    "MAASValidationError",
    "MAASNotFound",
    "MAASConflict",
    "MAASUnavailable",
    "PowerActionAlreadyInProgress",
    "PowerActionFailed",
    "error_for_status",
]

#: How much of a MAAS error body goes into a message.
MAX_DETAIL = 200


def _detail(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


class MAASError(ClusterError):
    """Root of the MAAS integration's errors."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class MAASAuthError(MAASError):
    """MAAS refused the credentials (401) or the action for this user (403)."""


class MAASValidationError(MAASError):
    """MAAS rejected the parameters (400); `fields` is MAAS's dict of field errors."""

    def __init__(self, message: str, *, status: int | None = 400, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message, status=status)
        self.fields: dict[str, Any] = fields or {}

    @classmethod
    def from_body(cls, call: str, body: bytes) -> "MAASValidationError":
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        fields = parsed if isinstance(parsed, dict) else {"__all__": [_detail(body)]}
        names = ", ".join(sorted(fields)) or "request"
        return cls(f"{call}: MAAS rejected {names}: {_detail(body)}", fields=fields)


class MAASNotFound(MAASError):
    """The machine (or other object) does not exist in MAAS (404)."""

    @classmethod
    def from_call(cls, call: str, body: bytes = b"") -> "MAASNotFound":
        return cls(f"{call}: not found: {_detail(body) or 'no such object'}", status=404)


class MAASConflict(MAASError):
    """The machine is in a state that does not allow the action (409)."""


class MAASUnavailable(MAASError):
    """MAAS could not be reached or answered 5xx, or the call timed out."""

    @classmethod
    def timed_out(cls, call: str, timeout: float) -> "MAASUnavailable":
        return cls(f"{call}: no answer within {timeout:g}s")

    @classmethod
    def from_failure(cls, call: str, reason: BaseException) -> "MAASUnavailable":
        name = type(reason).__name__
        text = str(reason).strip()
        return cls(f"{call}: {name}: {text}"[: MAX_DETAIL + 80] if text else f"{call}: {name}")


class PowerActionAlreadyInProgress(MAASError):
    """A different power action is already running for the machine."""

    def __init__(self, message: str, *, system_id: str, running: str, requested: str) -> None:
        super().__init__(message, status=None)
        self.system_id = system_id
        self.running = running
        self.requested = requested

    @classmethod
    def from_actions(cls, system_id: str, running: str, requested: str) -> "PowerActionAlreadyInProgress":
        return cls(
            f"cannot power {requested} {system_id}: power {running} is already in progress",
            system_id=system_id,
            running=running,
            requested=requested,
        )


class PowerActionFailed(MAASError):
    """The machine did not reach the wanted power state in time (or MAAS refused the action)."""

    def __init__(self, message: str, *, system_id: str, action: str, state: str | None) -> None:
        super().__init__(message, status=None)
        self.system_id = system_id
        self.action = action
        self.state = state

    @classmethod
    def backstop(cls, system_id: str, action: str, backstop: float, state: str | None) -> "PowerActionFailed":
        seen = f"last seen {state}" if state else "its state was never read"
        return cls(
            f"power {action} of {system_id} not confirmed within {backstop:g}s ({seen})",
            system_id=system_id,
            action=action,
            state=state,
        )


def error_for_status(status: int, call: str, body: bytes) -> MAASError:
    """The error for a MAAS answer with a non-2xx `status` to `call` ("POST machines/abc/?op=deploy")."""
    if status == 400:
        return MAASValidationError.from_body(call, body)
    if status in (401, 403):
        return MAASAuthError(f"{call}: HTTP {status}: {_detail(body)}", status=status)
    if status == 404:
        return MAASNotFound.from_call(call, body)
    if status == 409:
        return MAASConflict(f"{call}: conflict: {_detail(body)}", status=409)
    if status >= 500 or status == 429:
        return MAASUnavailable(f"{call}: HTTP {status}: {_detail(body)}", status=status)
    return MAASError(f"{call}: HTTP {status}: {_detail(body)}", status=status)

"""
Structured logs: ``--log-format json`` writes one JSON object per line.

Each line has ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message``
(the formatted text) and every structured field the event carried
(``uuid``, ``system_id``, ``job_id``, ``request_id``, ``reference``, ``peer``
...), plus ``traceback`` when a failure was logged.  Fields whose names
say they hold a secret (secret, token, password, key, credential) are
written as ``"********"``, whatever code logged them: secrets stay out of
logs by construction, and this is the second line of defence.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

__all__ = ["JSONLineObserver", "json_observer", "event_as_dict", "REDACTED", "LOG_FORMATS"]

REDACTED = "********"
LOG_FORMATS = ("text", "json")
_SECRET_NAME = re.compile(r"(secret|token|password|passwd|api_?key|credential|authorization)", re.IGNORECASE)
#: twisted.logger's own bookkeeping keys, not the event's fields.
_INTERNAL = {"log_format", "log_time", "log_level", "log_namespace", "log_source", "log_logger", "log_failure",
             "log_io", "log_system", "log_text", "log_trace", "log_flattened", "log_legacy", "message", "format",
             "isError", "time", "system", "failure", "why", "log_observer", "log_instance"}


def _plain(value: Any) -> Any:
    """`value` if it serialises as JSON, else its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): (REDACTED if _SECRET_NAME.search(str(k)) else _plain(v)) for k, v in value.items()}
    return str(value)


def event_as_dict(event: dict[str, Any]) -> dict[str, Any]:
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), tz=timezone.utc).isoformat(),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key in _INTERNAL or key.startswith("log_") or key in out:
            continue
        out[key] = REDACTED if _SECRET_NAME.search(key) else _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        out["traceback"] = failure.getTraceback()
        out["error"] = failure.getErrorMessage()
    return out


@implementer(ILogObserver)
class JSONLineObserver:
    """Writes each event as one line of JSON to `out`."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            line = json.dumps(event_as_dict(event), separators=(",", ":"), default=str)
        except Exception as e:  # a log line must never take the process down
            line = json.dumps({"level": "error", "message": f"unloggable event: {type(e).__name__}"})
        self._out.write(line + "\n")
        self._out.flush()


def json_observer() -> JSONLineObserver:
    """twistd's ``--logger`` factory: JSON lines on standard output (journald, docker logs...)."""
    return JSONLineObserver(sys.stdout)


def use_log_format(options: Any, log_format: str) -> None:
    """Make twistd log in `log_format`; called from a plugin's postOptions."""
    if log_format not in LOG_FORMATS:
        from twisted.python import usage

        raise usage.UsageError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
    parent = getattr(options, "parent", None)
    if log_format == "json" and parent is not None:
        parent["logger"] = "outpost.logs.json_observer"

"""
JSON as RFC 8259 has it: Python's parser also takes ``NaN``, ``Infinity``
and ``-Infinity``, and reads a number too large for a double (``1e999``) as
infinity.  No JSON peer sends the constants, PostgreSQL's ``jsonb`` refuses
them and our own encoders (``allow_nan=False``) cannot write them back out.
Parsing strictly at the door keeps them from reaching either.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads"]


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def loads(data: str | bytes) -> Any:
    """
    `data` parsed as JSON; ValueError for anything that is not JSON,
    ``NaN`` and ``Infinity`` included, and for a number out of a double's range.
    """
    return json.loads(data, parse_constant=_refuse, parse_float=_finite)

"""
JSON as RFC 8259 has it: Python's parser also takes ``NaN``, ``Infinity``
and ``-Infinity``, which no JSON peer sends, PostgreSQL's ``jsonb`` refuses
and our own encoders (``allow_nan=False``) cannot write back out.  Parsing
strictly at the door keeps them from reaching either.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(data: str | bytes) -> Any:
    """`data` parsed as JSON; ValueError for anything that is not JSON, ``NaN`` and ``Infinity`` included."""
    return json.loads(data, parse_constant=_refuse)

"""
Custom AMP argument types.

AMP caps every value at 65,535 bytes (`amp.MAX_VALUE_LENGTH`).  Inventories,
templates and other structures are bigger than that, so `Structure` spreads
one JSON value over as many AMP keys as it needs, compressing it first when it
is large.  Nothing above this module sees the chunking.
"""

from __future__ import annotations

import json
import uuid
import zlib
from typing import Any, TypeVar

from twisted.protocols import amp

__all__ = ["Structure", "UUID", "CHUNK"]

#: The largest value AMP accepts under one key.
CHUNK = amp.MAX_VALUE_LENGTH

#: Values whose JSON is at least this long are zlib-compressed.  Below it the
#: CPU spent compressing costs more than the bytes saved on loopback.
COMPRESS_AT = 16 * 1024

_RAW = b"J"
_ZLIB = b"Z"

_K = TypeVar("_K")
_V = TypeVar("_V")


def _chunk_key(name: bytes, index: int) -> bytes:
    return name if index == 0 else b"%s.%d" % (name, index)


class Structure(amp.Argument):
    """
    Any JSON-serialisable value, of any size.

    On the wire: the first key holds a one-byte format marker and the start of
    the payload; keys ``name.1``, ``name.2``... hold the rest, 65,535 bytes
    each.  The receiver reads keys until one is missing.
    """

    def __init__(self, optional: bool = False) -> None:
        # Twisted's Argument.__init__ is unannotated; this gives callers a typed constructor.
        super().__init__(optional)  # type: ignore[no-untyped-call]

    def retrieve(self, d: dict[_K, _V], name: _K, proto: object) -> _V | None:
        """Take `name` out of `d` (None if it is optional and absent)."""
        # Twisted's Argument.retrieve is unannotated; this override only adds the types.
        value: _V | None = super().retrieve(d, name, proto)  # type: ignore[no-untyped-call]
        return value

    def toBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: object) -> None:  # noqa: N802
        value = self.retrieve(objects, amp._wireNameToPythonIdentifier(name), proto)
        if self.optional and value is None:
            return
        data = json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(data) >= COMPRESS_AT:
            data = _ZLIB + zlib.compress(data, 1)
        else:
            data = _RAW + data
        for index, start in enumerate(range(0, len(data), CHUNK)):
            strings[_chunk_key(name, index)] = data[start : start + CHUNK]

    def fromBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: object) -> None:  # noqa: N802
        key = amp._wireNameToPythonIdentifier(name)
        first = self.retrieve(strings, name, proto)
        if first is None:  # optional and absent
            objects[key] = None
            return
        parts = [first]
        index = 1
        while (chunk := strings.pop(_chunk_key(name, index), None)) is not None:
            parts.append(chunk)
            index += 1
        data = b"".join(parts)
        marker, payload = data[:1], data[1:]
        if marker == _ZLIB:
            payload = zlib.decompress(payload)
        elif marker != _RAW:
            raise amp.InvalidSignature(f"{name!r}: unknown structure format {marker!r}")
        objects[key] = json.loads(payload)


class UUID(amp.Unicode):
    """A UUID, sent as its canonical text and checked on arrival."""

    def __init__(self, optional: bool = False) -> None:
        # Twisted's Argument.__init__ is unannotated; this gives callers a typed constructor.
        super().__init__(optional)  # type: ignore[no-untyped-call]

    def fromString(self, inString: bytes) -> str:  # noqa: N802
        # Twisted's Unicode.fromString is unannotated.
        text: str = super().fromString(inString)  # type: ignore[no-untyped-call]
        return str(uuid.UUID(text))

    def toString(self, inObject: str) -> bytes:  # noqa: N802
        # Twisted's Unicode.toString is unannotated.
        data: bytes = super().toString(str(uuid.UUID(str(inObject))))  # type: ignore[no-untyped-call]
        return data

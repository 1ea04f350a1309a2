"""The Structure argument: any JSON value of any size survives AMP."""

from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st
from twisted.protocols import amp

from rpc.arguments import CHUNK, UUID, Structure

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=50,
)


def round_trip(value: object) -> object:
    strings: dict = {}
    Structure().toBox(b"v", strings, {"v": value}, None)
    assert all(len(s) <= CHUNK for s in strings.values())
    # Through AMP's own serialisation of a box, and back.
    wire = amp.AmpBox(strings).serialize()
    box = _parse_box(wire)
    objects: dict = {}
    Structure().fromBox(b"v", box, objects, None)
    assert not box, "chunk keys must all be consumed"
    return objects["v"]


def _parse_box(data: bytes) -> dict:
    box = {}
    i = 0
    while True:
        n = int.from_bytes(data[i : i + 2], "big")
        i += 2
        if n == 0:
            return box
        key = data[i : i + n]
        i += n
        m = int.from_bytes(data[i : i + 2], "big")
        i += 2
        box[key] = data[i : i + m]
        i += m


@given(json_values)
def test_any_json_value_round_trips(value: object) -> None:
    assert round_trip(value) == value


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=CHUNK - 40, max_value=3 * CHUNK + 40))
def test_incompressible_strings_round_trip_at_every_chunk_boundary(size: int) -> None:
    value = os.urandom(size // 2).hex()[:size]
    assert round_trip(value) == value


def test_values_over_the_amp_limit_are_split_across_keys() -> None:
    strings: dict = {}
    Structure().toBox(b"v", strings, {"v": os.urandom(200_000).hex()}, None)
    assert len(strings) > 1 and set(strings) >= {b"v", b"v.1"}


def test_optional_structure_may_be_absent() -> None:
    objects: dict = {}
    Structure(optional=True).fromBox(b"v", {}, objects, None)
    assert objects == {"v": None}


@given(st.uuids())
def test_uuid_argument_round_trips_canonically(u) -> None:
    arg = UUID()
    assert arg.fromString(arg.toString(str(u).upper())) == str(u)

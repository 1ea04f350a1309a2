"""outpost.jsonstrict: Python's JSON parser, less the three constants JSON does not have."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, strategies as st

from outpost import jsonstrict

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_reads_as_the_standard_parser_reads_it(value: Any) -> None:
    text = json.dumps(value, allow_nan=False)
    assert jsonstrict.loads(text) == json.loads(text) == value
    assert jsonstrict.loads(text.encode("utf-8")) == value


@given(json_values, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_a_non_finite_constant_anywhere_is_refused(value: Any, constant: str) -> None:
    text = f'[{json.dumps(value, allow_nan=False)}, {{"x": [{constant}]}}]'
    with pytest.raises(ValueError, match=f"^{constant} is not a JSON number$"):
        jsonstrict.loads(text)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1.5e400", "1" + "0" * 400 + ".0"])
def test_a_number_out_of_a_double_s_range_is_refused(number: str) -> None:
    """Python would read it as infinity."""
    assert json.loads(number) in (float("inf"), float("-inf"))
    with pytest.raises(ValueError, match="is out of range$"):
        jsonstrict.loads(f'{{"timeout": {number}}}')


def test_a_large_integer_is_still_an_integer() -> None:
    """Integers are not floats: ``10**400`` is exact in Python (the handlers bound it)."""
    assert jsonstrict.loads("1" + "0" * 400) == 10**400

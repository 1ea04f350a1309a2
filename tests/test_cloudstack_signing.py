"""Request signing matches the `cs` package (the reference client) for any parameters."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.cloudstack import flatten, sign, string_to_sign
from simulators.cloudstack.auth import expected_signature

cs_client = pytest.importorskip("cs.client", reason="the cs package is not installed (pip install cs)")

names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12).filter(
    lambda name: name != "signature"
)
values = st.text(max_size=40)
param_dicts = st.dictionaries(names, values, max_size=8)
secrets = st.text(min_size=1, max_size=40)


def cs_signature(params: dict[str, str], secret: str) -> str:
    data = dict(params)
    cs_client.CloudStack("http://cs.test/client/api", "key", secret)._sign(data)
    return data["signature"]


@settings(max_examples=300, deadline=None)
@given(param_dicts, secrets)
def test_sign_equals_the_cs_packages_signature_for_any_parameters(params: dict[str, str], secret: str) -> None:
    assert sign(params, secret) == cs_signature(params, secret)


@settings(max_examples=200, deadline=None)
@given(param_dicts, secrets)
def test_the_simulator_checks_signatures_with_the_same_algorithm(params: dict[str, str], secret: str) -> None:
    assert expected_signature(params, secret) == sign(params, secret)


def test_the_string_to_sign_is_sorted_quoted_and_lowercased_without_the_signature() -> None:
    params = {"command": "listZones", "apiKey": "AbC", "response": "json", "name": "a b/c*", "signature": "x"}
    assert string_to_sign(params) == "apikey=abc&command=listzones&name=a%20b%2fc*&response=json"


_typed = st.dictionaries(
    st.sampled_from(["a", "b", "size", "flag", "ids"]),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10**6),
        st.text(max_size=10),
        st.lists(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=5), max_size=3),
    ),
) | st.builds(lambda d: {"tags": d}, st.dictionaries(st.sampled_from(["key", "value"]), st.text(max_size=5), min_size=1))


@settings(max_examples=200, deadline=None)
@given(_typed)
def test_flatten_gives_the_same_wire_parameters_as_cs(params: dict) -> None:  # type: ignore[type-arg]
    theirs = copy.deepcopy(params)
    cs_client.transform(theirs)
    assert flatten(params) == theirs


def test_flatten_turns_a_list_of_tag_maps_into_indexed_parameters() -> None:
    assert flatten({"tags": [{"key": "job", "value": "42"}, {"key": "disk", "value": "0"}], "ids": ["a", "b"]}) == {
        "tags[0].key": "job",
        "tags[0].value": "42",
        "tags[1].key": "disk",
        "tags[1].value": "0",
        "ids": "a,b",
    }

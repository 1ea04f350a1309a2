"""The ``maas:`` configuration section: every problem reported, key sources and their precedence, secrets kept out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, strategies as st

from clusterd.maas import ENV_API_KEY, MAASConfig, RetryPolicy, parse_maas_config

KEY = "ck:tk:v3ry-s3cret"


def parse(data: Any, environ: dict[str, str] | None = None) -> tuple[MAASConfig | None, list[str]]:
    problems: list[str] = []
    return parse_maas_config(data, problems, environ=environ or {}), problems


def test_a_full_section_is_parsed() -> None:
    config, problems = parse(
        {"url": "https://maas.example/MAAS/", "api_key": KEY, "timeout": 12, "retry": {"attempts": 6, "base": 1, "cap": 8}}
    )
    assert problems == []
    assert config == MAASConfig("https://maas.example/MAAS/", KEY, 12.0, RetryPolicy(6, 1.0, 8.0), "api_key")


def test_no_section_means_no_maas() -> None:
    assert parse(None) == (None, [])


def test_defaults() -> None:
    config, _ = parse({"url": "http://m:5240/MAAS/", "api_key": KEY})
    assert config is not None and config.timeout == 30.0 and config.retry == RetryPolicy()


def test_every_problem_is_reported_with_its_key() -> None:
    config, problems = parse({"url": "maas", "timeout": 0, "retry": {"attempts": 0, "base": 5, "cap": 1, "jitter": 1}, "extra": 1})
    assert config is None
    joined = "\n".join(problems)
    for key in ("maas.url", "maas.timeout", "maas.retry.attempts", "maas.retry.cap", "maas.retry.jitter", "maas.extra", "maas.api_key"):
        assert key in joined


def test_api_key_and_api_key_file_together_are_refused(tmp_path: Path) -> None:
    _, problems = parse({"url": "http://m/", "api_key": KEY, "api_key_file": str(tmp_path / "k")})
    assert problems == ["maas: give api_key or api_key_file, not both"]


def test_the_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "maas.key"
    path.write_text(KEY + "\n")
    path.chmod(0o644)
    _, problems = parse({"url": "http://m/", "api_key_file": str(path)})
    assert len(problems) == 1 and "chmod 600" in problems[0]
    path.chmod(0o600)
    config, problems = parse({"url": "http://m/", "api_key_file": str(path)})
    assert problems == [] and config is not None
    assert config.api_key == KEY and config.api_key_source == f"api_key_file {path}"


def test_a_missing_key_file_is_a_problem(tmp_path: Path) -> None:
    _, problems = parse({"url": "http://m/", "api_key_file": str(tmp_path / "nope")})
    assert "does not exist" in problems[0]


def test_the_environment_is_a_fallback_the_file_wins() -> None:
    env = {ENV_API_KEY: "e:e:env-secret"}
    config, _ = parse({"url": "http://m/"}, env)
    assert config is not None and config.api_key == "e:e:env-secret" and config.api_key_source == ENV_API_KEY
    config, _ = parse({"url": "http://m/", "api_key": KEY}, env)
    assert config is not None and config.api_key == KEY


def test_no_key_anywhere_is_a_problem() -> None:
    _, problems = parse({"url": "http://m/"})
    assert problems == [f"maas.api_key: required (or api_key_file, or the environment variable {ENV_API_KEY})"]


def test_a_malformed_key_is_reported_without_quoting_it() -> None:
    _, problems = parse({"url": "http://m/", "api_key": "only:v3ry-s3cret"})
    assert len(problems) == 1 and "s3cret" not in problems[0]


def test_the_key_is_not_in_the_repr() -> None:
    config, _ = parse({"url": "http://m/", "api_key": KEY})
    assert "s3cret" not in repr(config)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["url", "api_key", "api_key_file", "timeout", "retry", "other"]), _values) | _values)
def test_any_input_gives_a_config_or_problems_never_an_exception(data: Any) -> None:
    config, problems = parse(data)
    assert (config is None) == bool(problems) or data is None
    for problem in problems:
        assert problem.startswith(("maas", "environment variable"))

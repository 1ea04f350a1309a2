"""The ``cloudstack:`` configuration section: every problem reported, secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterd.cloudstack import CloudStackConfig, parse_cloudstack_config

SECRET = "uTCroKUkHZaNybhBXkcQsCb-s3cr3t"
BASE = {
    "url": "http://cs.example:8080/client/api",
    "api_key": "GdsWBVHco0OO",
    "zone": "OSSEA-Zone",
    "disk_offering": "Custom",
    "oma_vm_id": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
}


def test_a_full_section_parses_with_defaults() -> None:
    problems: list[str] = []
    config = parse_cloudstack_config({**BASE, "secret_key": SECRET}, problems)
    assert problems == [] and isinstance(config, CloudStackConfig)
    assert (config.timeout, config.job_timeout, config.domain, config.secret_key) == (30.0, 600.0, None, SECRET)
    assert SECRET not in repr(config) and BASE["api_key"] not in repr(config)


def test_no_section_means_cloudstack_is_not_used() -> None:
    problems: list[str] = []
    assert parse_cloudstack_config(None, problems) is None and problems == []


def test_the_secret_key_is_read_from_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "cs.secret"
    path.write_text(SECRET + "\n")
    os.chmod(path, 0o600)
    problems: list[str] = []
    config = parse_cloudstack_config({**BASE, "secret_key_file": str(path), "domain": "/", "job_timeout": 60}, problems)
    assert config is not None and config.secret_key == SECRET and config.secret_key_source == f"secret_key_file {path}"
    os.chmod(path, 0o644)
    problems = []
    assert parse_cloudstack_config({**BASE, "secret_key_file": str(path)}, problems) is None
    assert "readable by others" in problems[0] and SECRET not in problems[0]


def test_every_problem_is_reported_with_its_key() -> None:
    problems: list[str] = []
    data = {"url": "ftp://x", "api_key": "", "secret_key": SECRET, "secret_key_file": "/x", "timeout": 0, "colour": 1}
    assert parse_cloudstack_config(data, problems) is None
    joined = "\n".join(problems)
    for key in ("cloudstack.url", "cloudstack.api_key", "cloudstack.zone", "cloudstack.disk_offering",
                "cloudstack.oma_vm_id", "cloudstack.timeout", "cloudstack.colour", "not both"):
        assert key in joined
    assert SECRET not in joined


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(sorted(BASE) + ["timeout", "job_timeout", "domain", "other"]), _values | st.sampled_from(list(BASE.values()))),
    st.one_of(st.none(), st.just(SECRET), st.just(" "), st.integers()),
)
def test_any_section_gives_a_config_or_problems_and_never_shows_the_secret(data: dict[str, Any], secret: Any) -> None:
    if secret is not None:
        data = {**data, "secret_key": secret}
    problems: list[str] = []
    config = parse_cloudstack_config(data, problems)
    assert (config is None) == bool(problems)
    assert all(SECRET not in p for p in problems)
    if config is not None:
        assert SECRET not in repr(config)

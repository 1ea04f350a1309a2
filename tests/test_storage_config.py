"""The ``storage:`` configuration section: the peer's keys, every problem reported with its dotted key, secrets kept out."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from regiond.storage import BackendSettings, StorageConfig, parse_storage_config
from tests.storagehelpers import HPC_SECRET, WALDUR_TOKEN, config_data


def parse(data: Any) -> tuple[StorageConfig | None, list[str]]:
    problems: list[str] = []
    return parse_storage_config(data, problems), problems


def test_an_absent_section_is_none_without_problems() -> None:
    assert parse(None) == (None, [])


def test_a_minimal_section_gets_the_peers_defaults() -> None:
    config, problems = parse({"waldur_api_url": "https://w.example/api/", "waldur_api_token": "t0k", "storage_systems": {"capstor": "capstor"}})
    assert problems == []
    assert config is not None
    assert config.backend_settings == BackendSettings()
    assert (config.backend_settings.storage_file_system, config.backend_settings.inode_soft_coefficient) == ("lustre", 1.33)
    assert (config.backend_settings.inode_hard_coefficient, config.backend_settings.inode_base_multiplier) == (2.0, 1_000_000)
    assert config.backend_components["storage"]["measured_unit"] == "TB"
    assert config.hpc_user_api is None
    assert (config.waldur_timeout, config.waldur_retries) == (30.0, 2)
    assert config.offering_slugs == ["capstor"]


def test_a_full_section_is_read_as_written() -> None:
    config, problems = parse(config_data(hpc=("https://hpc.example", "https://auth.example/token"), development_mode=True, inode_base_multiplier=1000))
    assert problems == [] and config is not None
    assert config.backend_settings.development_mode is True
    assert config.backend_settings.inode_base_multiplier == 1000
    assert isinstance(config.backend_settings.inode_base_multiplier, int)
    assert config.hpc_user_api is not None and config.hpc_user_api.oidc_scope == "openid"
    assert config.storage_systems == {"capstor": "capstor", "vast": "vast", "iopsstor": "iopsstor"}


def test_every_problem_is_reported_with_its_dotted_key() -> None:
    _, problems = parse(
        {
            "waldur_api_url": "ftp://nowhere",
            "storage_systems": {"capstor": "cap,stor", "": "x"},
            "backend_settings": {"inode_soft_coefficient": 0, "inode_hard_coefficient": "2", "development_mode": "yes", "colour": "red"},
            "backend_components": {"cpu": {}},
            "hpc_user_api": {"api_url": "https://hpc.example", "socks_proxy": "socks5://localhost:1"},
            "waldur_retries": 11,
            "auth": {"disable_auth": True},
        }
    )
    keys = sorted(p.split(":")[0] for p in problems)
    assert keys == sorted(
        [
            "storage.auth",
            "storage.waldur_api_url",
            "storage.waldur_api_token",
            "storage.storage_systems",
            "storage.backend_components",
            "storage.waldur_retries",
            "storage.backend_settings.colour",
            "storage.backend_settings.inode_soft_coefficient",
            "storage.backend_settings.inode_hard_coefficient",
            "storage.backend_settings.development_mode",
            "storage.hpc_user_api.socks_proxy",
            "storage.hpc_user_api.client_id",
            "storage.hpc_user_api.client_secret",
            "storage.hpc_user_api.oidc_token_url",
        ]
    ), problems


def test_a_hard_coefficient_below_the_soft_one_is_a_problem() -> None:
    _, problems = parse(config_data(inode_soft_coefficient=3, inode_hard_coefficient=2))
    assert problems == ["storage.backend_settings.inode_hard_coefficient: must be at least inode_soft_coefficient (2 < 3)"]


def test_the_peers_legacy_hpc_keys_are_pointed_to_their_new_place() -> None:
    _, problems = parse(config_data(hpc_user_api_url="https://hpc", hpc_user_client_secret="s3cret-legacy"))
    assert "storage.backend_settings.hpc_user_api_url: the legacy location; move it to storage.hpc_user_api.api_url" in problems
    assert any(p.startswith("storage.backend_settings.hpc_user_client_secret:") for p in problems)
    assert not any("s3cret-legacy" in p for p in problems)


def test_refused_peer_keys_say_why() -> None:
    data = config_data()
    data.update(waldur_verify_ssl=False, waldur_socks_proxy="socks5://x:1")
    _, problems = parse(data)
    assert problems == [
        "storage.waldur_socks_proxy: SOCKS proxies are not supported; reach Waldur directly",
        "storage.waldur_verify_ssl: not supported: HTTPS certificates are always verified",
    ]


def test_secrets_are_kept_out_of_repr_and_of_problems() -> None:
    config, _ = parse(config_data(hpc=("https://hpc.example", "https://auth.example/token")))
    assert WALDUR_TOKEN not in repr(config) and HPC_SECRET not in repr(config)
    _, problems = parse({**config_data(), "waldur_api_token": 123456789})
    assert problems == ["storage.waldur_api_token: must be a non-empty string (a int was given; its value is not shown)"]


def test_a_section_that_is_not_a_mapping_is_a_problem() -> None:
    config, problems = parse(["waldur"])
    assert config is None
    assert problems[0] == "storage: must be a mapping, not list"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["waldur_api_url", "waldur_api_token", "storage_systems", "backend_settings", "backend_components", "hpc_user_api", "waldur_timeout", "waldur_retries", "auth"]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, st.dictionaries(_keys, _json, max_size=9)))
def test_any_yaml_value_gives_a_config_or_problems_never_an_exception(data: Any) -> None:
    """Fed anything YAML can hold, the parser returns a config with no problems, or None with at least one."""
    config, problems = parse(data)
    if data is None:
        assert (config, problems) == (None, [])
    else:
        assert (config is None) == bool(problems)
        assert all(isinstance(p, str) and p.startswith("storage") for p in problems)

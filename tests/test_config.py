"""Region and cluster configuration: defaults, every problem at once with its key, and no other exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from clusterd import config as cluster_config
from outpost.config import ConfigError
from regiond import config as region_config


def problems_of(load: Callable[[], Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load()
    assert info.value.problems, "a ConfigError always says what is wrong"
    return info.value.problems


def keys(problems: list[str]) -> set[str]:
    """The dotted key each problem is reported under (the text before the first ': ')."""
    return {p.split(": ", 1)[0] for p in problems}


# -- region ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n", "# nothing set\n", "{}", "null", "~"])
def test_region_defaults_apply_when_nothing_is_set(text: str) -> None:
    config = region_config.load_config(text)
    assert config == region_config.RegionConfig()
    assert config.state_dir == Path("/var/lib/outpost/region")
    assert config.secret_path == Path("/var/lib/outpost/region/secret")
    assert config.postgres_dir == Path("/var/lib/outpost/region/postgres")
    assert config.database.dsn is None and config.database.pool_size == 8
    assert config.rpc.listen == "tcp:5250:interface=127.0.0.1" and config.rpc.advertise is None
    assert config.http.listen == "tcp:5240:interface=127.0.0.1"


def test_region_sections_present_but_empty_take_their_defaults() -> None:
    config = region_config.load_config("database:\nrpc: {}\nhttp: null\n")
    assert config == region_config.RegionConfig()


def test_region_every_key_is_read() -> None:
    config = region_config.load_config(
        """
state_dir: /srv/region
secret_file: /etc/outpost/secret
database:
  dsn: postgresql://outpost@db/outpost
  pool_size: 3
rpc:
  listen: tcp:6250:interface=0.0.0.0
  advertise: region-1.example
http:
  listen: tcp:6240
"""
    )
    assert config.state_dir == Path("/srv/region")
    assert config.secret_path == Path("/etc/outpost/secret")
    assert config.database == region_config.DatabaseConfig("postgresql://outpost@db/outpost", 3)
    assert config.rpc == region_config.RPCConfig("tcp:6250:interface=0.0.0.0", "region-1.example")
    assert config.http == region_config.HTTPConfig("tcp:6240")


def test_region_relative_paths_are_made_absolute() -> None:
    config = region_config.load_config("state_dir: relative/dir\nsecret_file: s\n")
    assert config.state_dir.is_absolute() and config.state_dir.parts[-2:] == ("relative", "dir")
    assert config.secret_path.is_absolute()


def test_region_reports_every_problem_at_once_with_its_dotted_key() -> None:
    text = """
state_dir: 5
secret_file: []
colour: blue
database:
  dsn: 7
  pool_size: 0
  pool: 3
rpc:
  listen: "nonsense:endpoint"
  advertise: ""
http: [1, 2]
"""
    problems = problems_of(lambda: region_config.load_config(text))
    assert keys(problems) == {
        "state_dir",
        "secret_file",
        "colour",
        "database.dsn",
        "database.pool_size",
        "database.pool",
        "rpc.listen",
        "rpc.advertise",
        "http",
    }
    assert len(problems) == 9
    assert any(p.startswith("colour: unknown key") for p in problems)


@pytest.mark.parametrize("value", [True, 1.5, "8", -1, 0, None, [8]])
def test_region_pool_size_must_be_a_whole_number_of_at_least_one(value: Any) -> None:
    problems = problems_of(lambda: region_config.load_config(yaml.safe_dump({"database": {"pool_size": value}})))
    assert keys(problems) == {"database.pool_size"}


@pytest.mark.parametrize(
    "endpoint", ["tcp:notaport", "nonsense:1234", "", "   ", "tcp:5250:interface=::1", "unix", 5240, ["tcp:5240"]]
)
def test_region_bad_listen_endpoints_are_reported_under_their_key(endpoint: Any) -> None:
    text = yaml.safe_dump({"rpc": {"listen": endpoint}, "http": {"listen": endpoint}})
    assert keys(problems_of(lambda: region_config.load_config(text))) == {"rpc.listen", "http.listen"}


@pytest.mark.parametrize("endpoint", ["tcp:0", r"tcp:5250:interface=\:\:1", "unix:/run/outpost/region.sock", "tcp6:port=80"])
def test_region_good_listen_endpoints_are_kept_as_written(endpoint: str) -> None:
    assert region_config.load_config(yaml.safe_dump({"http": {"listen": endpoint}})).http.listen == endpoint


@pytest.mark.parametrize("section", ["database", "rpc", "http"])
@pytest.mark.parametrize("value", ["text", 3, [1], True])
def test_region_a_section_that_is_not_a_mapping_is_reported_under_its_name(section: str, value: Any) -> None:
    assert keys(problems_of(lambda: region_config.load_config(yaml.safe_dump({section: value})))) == {section}


# -- region: webhooks ---------------------------------------------------------------------


def test_region_webhooks_are_read_with_types_defaulting_to_infrastructure_tasks() -> None:
    config = region_config.load_config(
        """
webhooks:
  - url: https://hooks.example/outpost
    secret_file: /etc/outpost/hook.secret
  - url: http://10.0.0.5:8080/events?src=outpost
    secret_file: relative.secret
    types: [infrastructure., machine.power, machine.power]
"""
    )
    first, second = config.webhooks
    assert first == region_config.WebhookConfig(
        "https://hooks.example/outpost", Path("/etc/outpost/hook.secret"), ("infrastructure.task",)
    )
    assert second.url == "http://10.0.0.5:8080/events?src=outpost"
    assert second.secret_file.is_absolute() and second.secret_file.name == "relative.secret"
    assert second.types == ("infrastructure.", "machine.power")
    assert region_config.load_config("").webhooks == () == region_config.load_config("webhooks: []").webhooks


def test_region_webhook_problems_are_all_reported_under_their_keys() -> None:
    text = """
webhooks:
  - url: ftp://hooks.example/x
    secret_file: 5
  - url: https://ok.example/
    secret_file: /s
    types: []
  - url: https://ok.example/
    secret_file: /s
    types: [infrastructure task]
  - {secret_file: /s, colour: blue}
  - url: https://ok.example/
    secret_file: /s
  - url: https://ok.example/
    secret_file: /other
"""
    problems = problems_of(lambda: region_config.load_config(text))
    assert keys(problems) == {
        "webhooks[0].url", "webhooks[0].secret_file", "webhooks[1].types", "webhooks[2].types", "webhooks[3].url",
        "webhooks[3].colour", "webhooks[5].url",
    }
    assert any("configured more than once" in p for p in problems)
    assert keys(problems_of(lambda: region_config.load_config("webhooks: {url: https://a/}"))) == {"webhooks"}
    assert keys(problems_of(lambda: region_config.load_config("webhooks: [3]"))) == {"webhooks[0]"}


@settings(max_examples=150, deadline=None)
@given(hooks=st.lists(
    st.dictionaries(st.sampled_from(["url", "secret_file", "types", "other"]),
                    st.one_of(st.sampled_from(["https://h.example/", "http://h:1/x", "/abs", "rel", "ftp://h/", ""]),
                              st.lists(st.text(max_size=12), max_size=3), st.integers(), st.none()),
                    max_size=4),
    max_size=4,
))
def test_any_webhooks_section_gives_a_config_or_config_error(hooks: list[dict[str, Any]]) -> None:
    outcome = config_or_problems(lambda: region_config.load_config(yaml.safe_dump({"webhooks": hooks})))
    if isinstance(outcome, region_config.RegionConfig):
        urls = [hook.url for hook in outcome.webhooks]
        assert len(urls) == len(set(urls)) == len(hooks)
        for hook in outcome.webhooks:
            assert hook.url.startswith(("http://", "https://")) and hook.secret_file.is_absolute()
            assert hook.types and all(t and not any(c.isspace() for c in t) for t in hook.types)


# -- cluster ----------------------------------------------------------------------------


def test_cluster_defaults_apply_to_everything_but_regions() -> None:
    config = cluster_config.load_config("regions: [http://region.example:5240/]\n")
    assert config.regions == ("http://region.example:5240/",)
    assert config.name == cluster_config.default_name()
    assert config.state_dir == Path("/var/lib/outpost/cluster")
    assert config.secret_file is None
    assert config.secret_path == Path("/var/lib/outpost/cluster/secret")


def test_cluster_regions_are_required() -> None:
    for text in ("", "name: site-1\n", "regions: []\n", "regions: null\n"):
        assert keys(problems_of(lambda: cluster_config.load_config(text))) == {"regions"}, text


def test_cluster_every_key_is_read() -> None:
    config = cluster_config.load_config(
        "name: site-1\nstate_dir: /srv/cluster\nsecret_file: /etc/outpost/secret\n"
        "regions:\n  - http://r1:5240/\n  - https://r2.example/api/\n"
    )
    assert config == cluster_config.ClusterConfig(
        regions=("http://r1:5240/", "https://r2.example/api/"),
        name="site-1",
        state_dir=Path("/srv/cluster"),
        secret_file=Path("/etc/outpost/secret"),
    )


def test_cluster_reports_every_problem_at_once_with_its_key() -> None:
    text = 'name: "-bad"\nstate_dir: 3\nsecret_file: {a: 1}\nregions: [ftp://x]\nextra: 1\n'
    problems = problems_of(lambda: cluster_config.load_config(text))
    assert keys(problems) == {"name", "state_dir", "secret_file", "regions", "extra"}
    assert len(problems) == 5


@pytest.mark.parametrize(
    "url",
    ["ftp://region/", "http://", "http:///api", "region:5240", "", "   ", "http://h:99999/", "http://h:port/",
     "http://[::1", "//region:5240/", 5240, None, ["http://r/"], {"url": "http://r/"}],
)
def test_cluster_bad_region_urls_are_reported_under_regions(url: Any) -> None:
    problems = problems_of(lambda: cluster_config.load_config(yaml.safe_dump({"regions": ["http://good/", url]})))
    assert keys(problems) == {"regions"}
    assert "item 1" in problems[0]


@pytest.mark.parametrize("url", ["http://r", "https://r.example:1/api/", "http://[::1]:5240/", "http://10.0.0.1:5240"])
def test_cluster_good_region_urls_are_kept_as_written(url: str) -> None:
    assert cluster_config.load_config(yaml.safe_dump({"regions": [url]})).regions == (url,)


def test_cluster_regions_must_be_a_list() -> None:
    assert keys(problems_of(lambda: cluster_config.load_config("regions: http://r/\n"))) == {"regions"}


@pytest.mark.parametrize("name", ["-site", ".site", "x" * 64, "with space", "a/b", "", "   ", "ünïcode", 5, True, ["a"]])
def test_cluster_bad_names_are_reported_under_name(name: Any) -> None:
    text = yaml.safe_dump({"regions": ["http://r/"], "name": name})
    assert keys(problems_of(lambda: cluster_config.load_config(text))) == {"name"}


@pytest.mark.parametrize("name", ["a", "site-1", "A.b_c-d", "9lives", "x" * 63])
def test_cluster_good_names_are_kept(name: str) -> None:
    assert cluster_config.load_config(yaml.safe_dump({"regions": ["http://r/"], "name": name})).name == name


def test_cluster_a_name_with_a_trailing_newline_is_rejected() -> None:
    problems_of(lambda: cluster_config.load_config('regions: [http://r/]\nname: "site-1\\n"\n'))


def test_cluster_every_bad_region_url_is_reported() -> None:
    problems = problems_of(lambda: cluster_config.load_config("regions: [ftp://a, http://ok/, 'http://h:99999/']\n"))
    text = "\n".join(problems)
    assert "item 0" in text and "item 2" in text


def test_cluster_overrides_take_precedence_and_none_means_not_given() -> None:
    text = "regions: [http://from-file/]\nname: from-file\n"
    config = cluster_config.load_config(text, {"name": "from-flag", "regions": None, "state_dir": None})
    assert config.name == "from-flag"
    assert config.regions == ("http://from-file/",)
    assert config.state_dir == Path("/var/lib/outpost/cluster")
    only_flags = cluster_config.load_config("", {"regions": ["http://from-flag/"]})
    assert only_flags.regions == ("http://from-flag/",)


def test_cluster_bad_overrides_are_reported_like_file_values() -> None:
    problems = problems_of(lambda: cluster_config.load_config("regions: [http://r/]\n", {"name": "-bad", "colour": "x"}))
    assert keys(problems) == {"name", "colour"}


# -- cluster: infrastructure -------------------------------------------------------------


def test_cluster_infrastructure_defaults_to_no_driver_settings_and_the_usual_backoff() -> None:
    config = cluster_config.load_config("regions: [http://r/]\ninfrastructure:\nsimulate: {}\n")
    assert config.infrastructure == cluster_config.InfrastructureConfig(drivers={}, interval=1.0, max_interval=30.0)
    assert config.simulate_vim is None


def test_cluster_infrastructure_every_key_is_read() -> None:
    config = cluster_config.load_config(
        "regions: [http://r/]\n"
        "infrastructure:\n"
        "  drivers:\n"
        "    simulated: {url: 'http://127.0.0.1:8092/'}\n"
        "    maas:\n"
        "    acme.vim_2: {region: north, retries: 3}\n"
        "  monitor: {interval: 0.5, max_interval: 10}\n"
    )
    assert config.infrastructure.drivers == {
        "simulated": {"url": "http://127.0.0.1:8092/"}, "maas": {}, "acme.vim_2": {"region": "north", "retries": 3}}
    assert (config.infrastructure.interval, config.infrastructure.max_interval) == (0.5, 10.0)


def test_cluster_simulate_vim_is_read_and_true_means_the_defaults() -> None:
    config = cluster_config.load_config(
        "regions: [http://r/]\nsimulate:\n  vim: {listen: 'tcp:8092:interface=127.0.0.1', create_duration: 0, "
        "delete_duration: 0.5, capacity: 3}\n"
    )
    assert config.simulate_vim == cluster_config.SimulatedVIM("tcp:8092:interface=127.0.0.1", 0.0, 0.5, 3)
    defaults = cluster_config.load_config("regions: [http://r/]\nsimulate: {vim: true}\n")
    assert defaults.simulate_vim == cluster_config.SimulatedVIM()
    assert cluster_config.load_config("regions: [http://r/]\nsimulate: {vim: false}\n").simulate_vim is None


def test_cluster_infrastructure_problems_are_all_reported_under_their_keys() -> None:
    text = (
        "regions: [http://r/]\n"
        "infrastructure:\n"
        "  drivers: {simulated: {url: 'http://x/'}, 'has space': {}, maas: [1]}\n"
        "  monitor: {interval: 0, max_interval: .inf, jitter: 1}\n"
        "  colour: blue\n"
        "simulate:\n"
        "  vim: {listen: nowhere, create_duration: -1, delete_duration: x, capacity: -2, seed: 1}\n"
    )
    problems = problems_of(lambda: cluster_config.load_config(text))
    assert keys(problems) == {
        "infrastructure.drivers", "infrastructure.monitor.interval", "infrastructure.monitor.max_interval",
        "infrastructure.monitor.jitter", "infrastructure.colour", "simulate.vim.listen", "simulate.vim.create_duration",
        "simulate.vim.delete_duration", "simulate.vim.capacity", "simulate.vim.seed",
    }
    drivers = next(p for p in problems if p.startswith("infrastructure.drivers"))
    assert "'has space' is not a location type" in drivers and "maas: settings must be a mapping" in drivers


def test_cluster_the_first_poll_interval_must_not_exceed_the_cap() -> None:
    problems = problems_of(lambda: cluster_config.load_config(
        "regions: [http://r/]\ninfrastructure: {monitor: {interval: 60, max_interval: 30}}\n"))
    assert problems == ["infrastructure.monitor.interval: must not be above max_interval (30)"]


def test_cluster_a_simulated_vim_and_a_simulated_driver_url_do_not_go_together() -> None:
    text = "regions: [http://r/]\nsimulate: {vim: true}\ninfrastructure: {drivers: {simulated: {url: 'http://x/'}}}\n"
    assert keys(problems_of(lambda: cluster_config.load_config(text))) == {"simulate.vim"}
    other = "regions: [http://r/]\nsimulate: {vim: true}\ninfrastructure: {drivers: {simulated: {timeout: 5}}}\n"
    assert cluster_config.load_config(other).infrastructure.drivers == {"simulated": {"timeout": 5}}


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.just("http://vim/"))


@settings(max_examples=150, deadline=None)
@given(drivers=st.dictionaries(st.text(max_size=12) | st.integers(), st.none() | st.dictionaries(st.text(max_size=5), _values, max_size=3)
                               | _values, max_size=4),
       monitor=st.dictionaries(st.sampled_from(["interval", "max_interval", "x"]), _values, max_size=3))
def test_any_infrastructure_section_gives_a_config_or_config_error(drivers: dict[Any, Any], monitor: dict[str, Any]) -> None:
    data = {"regions": ["http://r/"], "infrastructure": {"drivers": drivers, "monitor": monitor}}
    outcome = config_or_problems(lambda: cluster_config.load_config(yaml.safe_dump(data)))
    if isinstance(outcome, cluster_config.ClusterConfig):
        infrastructure = outcome.infrastructure
        assert all(isinstance(name, str) and isinstance(settings_, dict) for name, settings_ in infrastructure.drivers.items())
        assert 0 < infrastructure.interval <= infrastructure.max_interval <= 3600
    else:
        assert keys(outcome) <= {"infrastructure.drivers", "infrastructure.monitor.interval", "infrastructure.monitor.max_interval",
                                 "infrastructure.monitor.x"}


# -- YAML itself --------------------------------------------------------------------------

LOADERS = {
    "region": region_config.load_config,
    "cluster": cluster_config.load_config,
}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize(
    "text",
    ["a: [1, 2", "a: b: c", "key: 'unterminated", "{", "- a\nb: c", "a:\n\t- tab", "x: !!python/object:os.system ls", "? [a]\n: 1"],
)
def test_invalid_yaml_is_a_config_error(loader: Callable[[str], Any], text: str) -> None:
    problems = problems_of(lambda: loader(text))
    assert len(problems) == 1 and problems[0].startswith("not valid YAML")


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", "42", "true", "[]"])
def test_a_top_level_that_is_not_a_mapping_is_a_config_error(loader: Callable[[str], Any], text: str) -> None:
    assert problems_of(lambda: loader(text))[0].startswith("the top level must be a mapping")


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("text", ["state_dir: 2001-13-40\n", "name: !!float abc\n", "a: !!int 0b2\n", "[" * 1000])
def test_yaml_the_parser_cannot_construct_is_a_config_error(loader: Callable[[str], Any], text: str) -> None:
    problems_of(lambda: loader(text))


# -- anything at all -------------------------------------------------------------------------

_REGION_KEYS = ["state_dir", "secret_file", "database", "rpc", "http", "dsn", "pool_size", "listen", "advertise"]
_CLUSTER_KEYS = ["regions", "name", "state_dir", "secret_file"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["tcp:0", "tcp:5240:interface=127.0.0.1", "http://r/", "https://r:1/x", "site-1", "/abs/path", "rel"]),
)
keys_ = st.one_of(st.sampled_from(_REGION_KEYS + _CLUSTER_KEYS), st.text(max_size=10), st.integers(-3, 3))
yamlish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys_, inner, max_size=5),
    max_leaves=20,
)
documents = st.dictionaries(keys_, yamlish, max_size=6)


def config_or_problems(load: Callable[[], Any]) -> Any:
    """`load()`'s config, or its ConfigError's problems (never empty, each a sentence)."""
    try:
        return load()
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p.strip() for p in e.problems), e.problems
        return e.problems


@settings(max_examples=150, deadline=None)
@given(data=documents)
def test_any_yaml_mapping_gives_a_region_config_or_config_error(data: dict[Any, Any]) -> None:
    outcome = config_or_problems(lambda: region_config.load_config(yaml.safe_dump(data)))
    if isinstance(outcome, region_config.RegionConfig):
        assert outcome.state_dir.is_absolute()
        assert isinstance(outcome.database.pool_size, int) and outcome.database.pool_size >= 1
        assert isinstance(outcome.rpc.listen, str) and isinstance(outcome.http.listen, str)


@settings(max_examples=150, deadline=None)
@given(data=documents, overrides=st.dictionaries(st.sampled_from(_CLUSTER_KEYS), yamlish, max_size=3))
def test_any_yaml_mapping_and_overrides_give_a_cluster_config_or_config_error(
    data: dict[Any, Any], overrides: dict[str, Any]
) -> None:
    outcome = config_or_problems(lambda: cluster_config.load_config(yaml.safe_dump(data), overrides))
    if isinstance(outcome, cluster_config.ClusterConfig):
        assert outcome.regions and all(isinstance(r, str) for r in outcome.regions)
        assert isinstance(outcome.name, str) and outcome.name
        assert outcome.state_dir.is_absolute()


yaml_ish_text = st.text(alphabet=st.sampled_from(list("[]{}:,-?&*!|>'\"#%@` \n\tax1.")), max_size=80)


@settings(max_examples=150, deadline=None)
@given(text=yaml_ish_text)
def test_any_text_gives_a_config_or_config_error(text: str) -> None:
    config_or_problems(lambda: region_config.load_config(text))
    config_or_problems(lambda: cluster_config.load_config(text))

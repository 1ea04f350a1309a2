"""
GIDs from the HPC User API: OAuth2 client credentials with the token kept
until it expires, batched lookups, the cache until restart, and the
CSCS proxy's fallbacks (skip, or mock GIDs in development mode).
"""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from regiond.storage import GidResolver, HpcUserApiConfig, HpcUserApiError, HpcUserClient, mock_gid
from regiond.storage.interfaces import IGidSource
from simulators.hpcuser import HpcUserResource, HpcUserSimulator, auto_gid

SECRET = "gid-test-client-secret"


class Harness:
    def __init__(self, lifetime: int = 3600, development_mode: bool = False, configured: bool = True) -> None:
        self.clock = Clock()
        self.sim = HpcUserSimulator(self.clock, client_id="outpost", client_secret=SECRET, token_lifetime=lifetime)
        self.stub = StubTreq(HpcUserResource(self.sim, self.clock))
        config = HpcUserApiConfig("http://hpc.test/", "outpost", SECRET, "http://hpc.test/oauth2/token", timeout=5)
        self.client = HpcUserClient(self.clock, self.stub, config)
        self.resolver = GidResolver(self.client if configured else None, development_mode)

    def run(self, *coroutines: Any) -> Any:
        results: list[Any] = []
        gatherResults([Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True).addBoth(results.append)
        for _ in range(200):
            self.stub.flush()
            if results:
                break
            self.clock.advance(0.5)
        outcome = results[0]
        if isinstance(outcome, Failure):
            if isinstance(outcome.value, FirstError):
                outcome.value.subFailure.raiseException()
            outcome.raiseException()
        return outcome if len(coroutines) > 1 else outcome[0]


def test_the_client_provides_the_interface() -> None:
    assert verifyObject(IGidSource, Harness().client)


def test_many_projects_are_looked_up_in_one_request_with_one_token() -> None:
    h = Harness()
    h.sim.missing = {"ghost"}
    found = h.run(h.client.project_gids(["alpha", "beta", "ghost"]))
    assert found == {"alpha": auto_gid("alpha"), "beta": auto_gid("beta"), "ghost": None}
    assert (h.sim.token_requests, h.sim.project_requests) == (1, 1)
    assert h.sim.asked == [["alpha", "beta", "ghost"]]


def test_the_token_is_kept_until_shortly_before_it_expires() -> None:
    h = Harness(lifetime=600)
    h.run(h.client.project_gids(["a"]))
    h.clock.advance(500)  # 600 - 10% margin = 540
    h.run(h.client.project_gids(["b"]))
    assert h.sim.token_requests == 1
    h.clock.advance(60)
    h.run(h.client.project_gids(["c"]))
    assert h.sim.token_requests == 2


def test_concurrent_callers_share_one_token_request() -> None:
    h = Harness()
    h.run(h.client.project_gids(["a"]), h.client.project_gids(["b"]), h.client.project_gids(["c"]))
    assert h.sim.token_requests == 1 and h.sim.project_requests == 3


def test_a_refused_token_is_replaced_once() -> None:
    h = Harness()
    h.run(h.client.project_gids(["a"]))
    h.sim.expire_tokens()
    assert h.run(h.client.project_gids(["b"])) == {"b": auto_gid("b")}
    assert h.sim.token_requests == 2


def test_wrong_client_credentials_are_an_error_that_does_not_show_the_secret() -> None:
    h = Harness()
    h.sim.client_secret = "something-else"
    with pytest.raises(HpcUserApiError, match="token endpoint answered HTTP 401") as caught:
        h.run(h.client.project_gids(["a"]))
    assert SECRET not in str(caught.value) and SECRET not in repr(h.client)


def test_duplicate_or_malformed_answers_give_no_gid() -> None:
    h = Harness()
    h.sim.gids = {"dup": 5}
    h.sim.auto_assign = False
    assert h.run(h.client.project_gids(["dup", "nothing"])) == {"dup": 5, "nothing": None}


def test_found_gids_are_cached_until_restart_and_counted() -> None:
    h = Harness()
    first = h.run(h.resolver.resolve(["a", "b"]))
    second = h.run(h.resolver.resolve(["a", "b", "a"]))
    assert first == second == {"a": auto_gid("a"), "b": auto_gid("b")}
    assert h.sim.project_requests == 1
    stats = h.resolver.stats()
    assert (stats["total_entries"], stats["hits"], stats["misses"]) == (2, 2, 2)
    assert stats["projects"] == [{"project": "a", "unix_gid": auto_gid("a"), "source": "hpc_user_api"}, {"project": "b", "unix_gid": auto_gid("b"), "source": "hpc_user_api"}]


def test_in_production_an_unknown_project_has_no_gid_and_is_asked_again_next_time() -> None:
    h = Harness()
    h.sim.missing = {"ghost"}
    assert h.run(h.resolver.resolve(["ghost"])) == {"ghost": None}
    h.sim.missing = set()
    assert h.run(h.resolver.resolve(["ghost"])) == {"ghost": auto_gid("ghost")}
    assert h.resolver.stats()["not_found"] == 1


@pytest.mark.parametrize("failure", [(500,), ("hang", "hang"), ("drop", "drop")], ids=["error", "timeout", "dropped"])
def test_in_production_an_api_failure_gives_no_gid(failure: tuple[Any, ...]) -> None:
    h = Harness()
    h.run(h.client.token())
    h.sim.fail_next(*failure)
    assert h.run(h.resolver.resolve(["a"])) == {"a": None}
    assert h.resolver.stats()["lookup_failures"] == 1 and h.resolver.stats()["total_entries"] == 0


@pytest.mark.parametrize("cause", ["missing", "failure", "unconfigured"])
def test_in_development_mode_a_deterministic_mock_gid_is_used_and_cached(cause: str) -> None:
    h = Harness(development_mode=True, configured=cause != "unconfigured")
    if cause == "missing":
        h.sim.missing = {"a"}
    elif cause == "failure":
        h.sim.fail_next(503, 503)
    assert h.run(h.resolver.resolve(["a"])) == {"a": mock_gid("a")}
    assert h.resolver.stats()["mock_entries"] == 1
    assert h.run(h.resolver.resolve(["a"])) == {"a": mock_gid("a")}


def test_without_an_hpc_api_in_production_there_are_no_gids() -> None:
    h = Harness(configured=False)
    assert h.run(h.resolver.resolve(["a", "b"])) == {"a": None, "b": None}
    assert h.sim.project_requests == 0


def test_concurrent_resolves_of_one_project_share_one_lookup() -> None:
    h = Harness()
    h.sim.faults.latency = 2.0
    first, second = h.run(h.resolver.resolve(["a", "b"]), h.resolver.resolve(["b", "c"]))
    assert first == {"a": auto_gid("a"), "b": auto_gid("b")} and second == {"b": auto_gid("b"), "c": auto_gid("c")}
    assert sorted(map(sorted, h.sim.asked)) == [["a", "b"], ["c"]]


def test_lookups_are_batched() -> None:
    h = Harness()
    names = [f"p{i}" for i in range(250)]
    h.run(h.resolver.resolve(names))
    assert [len(a) for a in h.sim.asked] == [100, 100, 50]


def test_secrets_never_reach_the_log() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = Harness()
        h.sim.client_secret = "other"
        h.run(h.resolver.resolve(["a"]))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert events and SECRET not in repr(events)

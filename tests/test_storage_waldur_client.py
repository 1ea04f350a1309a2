"""The Waldur client: token auth, one request for many offerings, all pages, retries and timeouts on the clock."""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from regiond.storage import WaldurClient, WaldurError, WaldurTimeout, waldur_root
from regiond.storage.interfaces import IWaldurClient
from simulators.waldur import WaldurResource, WaldurSimulator

TOKEN = "client-test-token"


class Harness:
    def __init__(self, resources: int = 50, customers: int | None = None, retries: int = 2) -> None:
        self.clock = Clock()
        self.sim = WaldurSimulator.create(token=TOKEN, resources=resources, seed=9, customers=customers)
        self.stub = StubTreq(WaldurResource(self.sim, self.clock))
        self.client = WaldurClient(self.clock, self.stub, "http://waldur.test/api/", TOKEN, timeout=10, retries=retries)

    def run(self, coroutine: Any) -> Any:
        results: list[Any] = []
        Deferred.fromCoroutine(coroutine).addBoth(results.append)
        for _ in range(1000):
            self.stub.flush()
            if results:
                break
            self.clock.advance(0.25)
        outcome = results[0]
        if hasattr(outcome, "raiseException"):
            outcome.raiseException()
        return outcome


def test_it_provides_the_interface() -> None:
    assert verifyObject(IWaldurClient, Harness().client)


def test_waldur_root_strips_one_api_suffix() -> None:
    assert waldur_root("https://w.example/api/") == "https://w.example"
    assert waldur_root("https://w.example/prefix/api") == "https://w.example/prefix"
    assert waldur_root("https://wiki.example.org/") == "https://wiki.example.org"  # the peer's rstrip("/api") gives "https://wiki.example.org" too, by luck


def test_a_page_sends_the_token_and_all_slugs_in_one_request() -> None:
    h = Harness()
    page = h.run(h.client.resources_page("capstor,vast", 1, 20))
    assert len(page.items) == 20 and page.result_count == sum(r["offering_slug"] in ("capstor", "vast") for r in h.sim.data.resources)
    assert page.has_next
    assert h.sim.requests == [("GET", "/api/marketplace-resources/", {"offering_slug": ["capstor,vast"], "page": ["1"], "page_size": ["20"]})]


def test_every_resource_comes_through_all_pages() -> None:
    h = Harness(resources=700)
    everything = h.run(h.client.all_resources(["capstor", "vast", "iopsstor"]))
    assert sorted(r["uuid"] for r in everything) == sorted(r["uuid"] for r in h.sim.data.resources)
    assert [q["page"] for _, _, q in h.sim.requests] == [["1"], ["2"], ["3"]]


def test_every_customer_comes_through_all_pages() -> None:
    h = Harness(resources=2000, customers=400)
    offering = h.sim.data.offerings[0]
    customers = h.run(h.client.offering_customers(offering.uuid))
    assert len(customers) == len(h.sim.offering_customers(offering.uuid)) > 300
    assert len(h.sim.requests) == 2


def test_a_page_past_the_end_is_empty() -> None:
    h = Harness()
    page = h.run(h.client.resources_page("capstor", 40, 100))
    assert (page.items, page.result_count, page.has_next) == ([], None, False)


def test_a_bad_token_is_an_error_without_retries() -> None:
    h = Harness()
    h.sim.token = "other"
    with pytest.raises(WaldurError, match="Waldur answered HTTP 401 to GET http://waldur.test/api/marketplace-resources/"):
        h.run(h.client.resources_page("capstor", 1, 10))
    assert len(h.sim.requests) == 1


@pytest.mark.parametrize("failures", [(502,), (503, 504), ("drop",), (429, "drop")])
def test_transient_failures_are_retried_with_backoff(failures: tuple[Any, ...]) -> None:
    h = Harness()
    h.sim.fail_next(*failures)
    page = h.run(h.client.resources_page("capstor", 1, 10))
    assert len(page.items) == 10
    assert h.clock.seconds() >= 0.25


def test_failures_beyond_the_retries_are_errors() -> None:
    h = Harness(retries=1)
    h.sim.fail_next(503, 503)
    with pytest.raises(WaldurError, match="HTTP 503"):
        h.run(h.client.resources_page("capstor", 1, 10))


def test_no_answer_within_the_timeout_is_a_timeout_after_the_retries() -> None:
    h = Harness(retries=1)
    h.sim.fail_next("hang", "hang")
    with pytest.raises(WaldurTimeout, match="did not answer GET .* within 10s"):
        h.run(h.client.resources_page("capstor", 1, 10))
    assert h.clock.seconds() >= 20


class Canned(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        return self.body


@pytest.mark.parametrize("answer, message", [
    (b'{"not": "a list"}', "expected a JSON list"),
    (b"<html>", "not JSON"),
    (b'[{"provider_name": Infinity}]', "not JSON"),
    (b'[{"limits": {"storage": NaN}}]', "not JSON"),
    (b'[{"limits": {"storage": 1e999}}]', "not JSON"),
])
def test_an_answer_that_is_not_a_json_list_is_an_error(answer: bytes, message: str) -> None:
    h = Harness()
    h.stub = StubTreq(Canned(answer))
    h.client = WaldurClient(h.clock, h.stub, "http://waldur.test/api/", TOKEN)
    with pytest.raises(WaldurError, match=message):
        h.run(h.client.resources_page("capstor", 1, 10))


def test_the_token_is_not_in_the_clients_repr() -> None:
    assert TOKEN not in repr(Harness().client)

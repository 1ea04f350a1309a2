"""
The VIM simulator on its own: its HTTP API (statuses, codes, transitions on
the clock), capacity and name clashes, fault injection, the twistd options,
and that no template or body, however odd, makes it answer 5xx.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.web._newclient import ResponseFailed

from clusterd.infrastructure.simulated import SimulatedDriver
from simulators.vim import (
    FAILURE_CODES,
    TemplateError,
    VimResource,
    VimSimulator,
    parse_template,
    simulator_url,
    start_vim_simulator,
    stop_vim_simulator,
)
from simulators.vim.tap import Options, makeService
from tests.daemons import TWISTD, Daemon, env, eventually, free_port

SERVER = """
parameters:
  flavor: {default: small}
  image: {}
resources:
  net: {type: Simulated::Net}
  server:
    type: Simulated::Server
    properties:
      flavor: {get_param: flavor}
      image: {get_param: image}
      network: {get_resource: net}
      tags: [a, {nested: {get_param: flavor}}]
outputs:
  ip: {value: {get_attr: [server, ip]}, description: the address}
  flavor: {get_attr: [server, flavor]}
  network: {get_attr: [server, network]}
  net_id: {get_resource: net}
  fixed: 42
  created: 2024-05-01
"""
SIMPLE = "resources:\n  s: {type: Simulated::Server}\noutputs:\n  answer: 42\n"


class Api:
    """The simulator's HTTP API in memory (StubTreq), answering at once unless latency is injected."""

    def __init__(self, sim: VimSimulator, clock: Clock) -> None:
        self.sim, self.clock = sim, clock
        self.stub = StubTreq(VimResource(sim, clock))

    def start(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> list[Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode("utf-8"))
        d = self.stub.request(method, "http://vim.test" + path, data=data)
        results: list[Any] = []

        def read(response: Any) -> Any:
            return self.stub.content(response).addCallback(lambda content: results.append((response.code, content, response.headers)))

        d.addCallback(read)
        self.stub.flush()
        return results

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        results = self.start(method, path, body, raw)
        assert results, f"{method} {path} did not answer"
        code, content, headers = results[0]
        assert headers.getRawHeaders(b"content-type") == [b"application/json"]
        return code, json.loads(content)

    def create(self, name: str = "web", template: str = SERVER, properties: Any = None, **extra: Any) -> tuple[str, str]:
        code, body = self.call("POST", "/v1/infrastructures", {
            "name": name, "template": template, "template_type": "simulated", "properties": properties or {"image": "debian"}, **extra,
        })  # fmt: skip
        assert code == 202, body
        return body["id"], body["request_id"]

    def request(self, infrastructure_id: str, request_id: str) -> dict[str, Any]:
        code, body = self.call("GET", f"/v1/infrastructures/{infrastructure_id}/requests/{request_id}")
        assert code == 200, body
        return body  # type: ignore[no-any-return]


def make(**kwargs: Any) -> Api:
    clock = Clock()
    kwargs.setdefault("create_duration", 3.0)
    kwargs.setdefault("delete_duration", 1.0)
    return Api(VimSimulator.create(clock, seed=5, **kwargs), clock)


# -- lifecycle -----------------------------------------------------------------------


def test_a_create_is_in_progress_until_its_duration_has_passed_then_complete_with_outputs() -> None:
    api = make()
    infra, request = api.create()
    assert api.request(infra, request) == {"id": infra, "request_id": request, "operation": "create", "status": "IN_PROGRESS"}
    shown = api.call("GET", f"/v1/infrastructures/{infra}")[1]
    assert shown["status"] == "CREATE_IN_PROGRESS" and "outputs" not in shown and shown["requests"] == [request]
    api.clock.advance(2.999)
    assert api.request(infra, request)["status"] == "IN_PROGRESS"
    api.clock.advance(0.001)
    done = api.request(infra, request)
    resources = {r["name"]: r for r in api.call("GET", f"/v1/infrastructures/{infra}")[1]["resources"]}
    assert done["status"] == "COMPLETE"
    assert done["outputs"] == {
        "ip": resources["server"]["ip"], "flavor": "small", "network": resources["net"]["id"], "net_id": resources["net"]["id"],
        "fixed": 42, "created": "2024-05-01",
    }  # fmt: skip
    shown = api.call("GET", f"/v1/infrastructures/{infra}")[1]
    assert shown["status"] == "CREATE_COMPLETE" and shown["outputs"] == done["outputs"] and shown["name"] == "web"
    assert api.call("GET", "/v1/infrastructures?name=web")[1]["infrastructures"] == [shown]
    assert api.call("GET", "/v1/infrastructures?name=other")[1] == {"infrastructures": []}


def test_request_properties_give_parameter_values_and_a_missing_one_is_an_invalid_template() -> None:
    api = make(create_duration=0)
    infra, request = api.create(properties={"image": "alpine", "flavor": "large"})
    assert api.request(infra, request)["outputs"]["flavor"] == "large"
    code, body = api.call("POST", "/v1/infrastructures", {"name": "n", "template": SERVER, "properties": {"flavor": "x"}})
    assert (code, body["code"]) == (400, "InvalidTemplate") and "image" in body["message"]


def test_a_templates_durations_override_the_simulators_and_zero_ends_at_once() -> None:
    api = make()
    infra, request = api.create(template=SIMPLE + "simulation: {create_duration: 0, delete_duration: 10}")
    assert api.request(infra, request)["status"] == "COMPLETE"
    deleting = api.call("DELETE", f"/v1/infrastructures/{infra}")[1]["request_id"]
    api.clock.advance(9)
    assert api.request(infra, deleting)["status"] == "IN_PROGRESS"
    api.clock.advance(1)
    assert api.request(infra, deleting) == {"id": infra, "request_id": deleting, "operation": "delete", "status": "COMPLETE"}


def test_deleted_infrastructure_is_readable_by_id_but_not_listed_nor_deletable_again() -> None:
    api = make()
    infra, created = api.create()
    api.clock.advance(3)
    code, body = api.call("DELETE", f"/v1/infrastructures/{infra}")
    assert code == 202 and body["id"] == infra and body["request_id"] != created
    assert api.call("GET", f"/v1/infrastructures/{infra}")[1]["status"] == "DELETE_IN_PROGRESS"
    assert api.call("DELETE", f"/v1/infrastructures/{infra}")[1]["request_id"] == body["request_id"]  # the running delete
    api.clock.advance(1)
    shown = api.call("GET", f"/v1/infrastructures/{infra}")[1]
    assert shown["status"] == "DELETE_COMPLETE" and "outputs" not in shown
    assert api.call("GET", "/v1/infrastructures")[1] == {"infrastructures": []}
    code, error = api.call("DELETE", f"/v1/infrastructures/{infra}")
    assert (code, error["code"]) == (404, "InfrastructureNotFound")
    requests = api.call("GET", f"/v1/infrastructures/{infra}/requests")[1]["requests"]
    assert [(r["operation"], r["status"]) for r in requests] == [("create", "COMPLETE"), ("delete", "COMPLETE")]


def test_deleting_while_creating_fails_the_create_with_infrastructure_error() -> None:
    api = make()
    infra, created = api.create()
    deleting = api.call("DELETE", f"/v1/infrastructures/{infra}")[1]["request_id"]
    cancelled = api.request(infra, created)
    assert cancelled["status"] == "FAILED" and cancelled["failure_code"] == "INFRASTRUCTURE_ERROR" and "outputs" not in cancelled
    api.clock.advance(10)
    assert api.request(infra, deleting)["status"] == "COMPLETE" and api.request(infra, created)["status"] == "FAILED"


def test_deleted_infrastructure_is_forgotten_once_enough_newer_ones_were_deleted() -> None:
    api = make(create_duration=0, delete_duration=0)
    api.sim.retain_deleted = 1
    first, _ = api.create("a")
    api.call("DELETE", f"/v1/infrastructures/{first}")
    assert api.call("GET", f"/v1/infrastructures/{first}")[0] == 200
    second, _ = api.create("b")
    api.call("DELETE", f"/v1/infrastructures/{second}")
    assert api.call("GET", f"/v1/infrastructures/{first}")[0] == 404
    assert api.call("GET", f"/v1/infrastructures/{second}")[0] == 200


@pytest.mark.parametrize("code", FAILURE_CODES)
def test_a_template_can_end_its_create_or_delete_with_each_failure_code(code: str) -> None:
    api = make()
    infra, created = api.create(template=SIMPLE + f"simulation: {{fail_delete: {code}}}")
    api.clock.advance(3)
    assert api.request(infra, created)["status"] == "COMPLETE"
    deleting = api.call("DELETE", f"/v1/infrastructures/{infra}")[1]["request_id"]
    api.clock.advance(1)
    assert api.request(infra, deleting)["failure_code"] == code
    shown = api.call("GET", f"/v1/infrastructures/{infra}")[1]
    assert shown["status"] == "DELETE_FAILED" and shown["outputs"] == {"answer": 42}
    failing, request = api.create("f", SIMPLE + f"simulation: {{fail_create: {code}, failure_description: boom}}")
    api.clock.advance(3)
    assert api.request(failing, request) == {
        "id": failing, "request_id": request, "operation": "create", "status": "FAILED", "failure_code": code, "description": "boom",
    }  # fmt: skip
    assert api.call("GET", f"/v1/infrastructures/{failing}")[1]["status"] == "CREATE_FAILED"


def test_a_live_name_cannot_be_taken_again_until_its_infrastructure_is_deleted() -> None:
    api = make(create_duration=0, delete_duration=0)
    first, _ = api.create("db")
    second, request = api.create("db")
    clash = api.request(second, request)
    assert clash["status"] == "FAILED" and clash["failure_code"] == "RESOURCE_ALREADY_EXISTS" and first in clash["description"]
    assert [i["id"] for i in api.call("GET", "/v1/infrastructures?name=db")[1]["infrastructures"]] == [first]
    api.call("DELETE", f"/v1/infrastructures/{second}")  # deleting the failed one frees nothing and takes nothing
    api.call("DELETE", f"/v1/infrastructures/{first}")
    third, request = api.create("db")
    assert api.request(third, request)["status"] == "COMPLETE"


def test_creates_beyond_capacity_fail_insufficient_capacity_and_failed_ones_hold_nothing() -> None:
    api = make(capacity=2)
    api.create("a")
    api.create("a")  # RESOURCE_ALREADY_EXISTS: not counted
    api.create("b")
    infra, request = api.create("c")
    assert api.request(infra, request)["failure_code"] == "INSUFFICIENT_CAPACITY"
    assert len(api.sim.live()) == 2


def test_every_request_end_is_reported_to_hooks_and_a_failing_hook_changes_nothing() -> None:
    api = make()
    ended: list[tuple[str, str]] = []
    api.sim.on_request_end.append(lambda infra, request: ended.append((request.operation, request.status)))
    api.sim.on_request_end.append(lambda infra, request: 1 / 0)
    infra, request = api.create()
    api.clock.advance(3)
    assert ended == [("create", "COMPLETE")] and api.request(infra, request)["status"] == "COMPLETE"


def test_stopping_cancels_pending_transitions() -> None:
    api = make()
    infra, request = api.create()
    api.sim.stop()
    assert not api.clock.getDelayedCalls()
    assert api.request(infra, request)["status"] == "IN_PROGRESS"


# -- errors ---------------------------------------------------------------------------


def test_unknown_ids_and_paths_are_404s_with_distinct_codes_and_wrong_methods_405() -> None:
    api = make()
    infra, _ = api.create()
    assert api.call("GET", "/v1/infrastructures/nope")[1]["code"] == "InfrastructureNotFound"
    assert api.call("GET", "/v1/infrastructures/nope/requests/r")[1]["code"] == "InfrastructureNotFound"
    code, body = api.call("GET", f"/v1/infrastructures/{infra}/requests/nope")
    assert (code, body["code"]) == (404, "RequestNotFound")
    assert api.call("GET", "/v2/infrastructures") == (404, {"code": "NotFound", "message": "no such path: /v2/infrastructures"})
    assert api.call("GET", f"/v1/infrastructures/{infra}/other")[1]["code"] == "NotFound"
    results = api.start("PUT", f"/v1/infrastructures/{infra}")
    code, content, headers = results[0]
    assert code == 405 and json.loads(content)["code"] == "MethodNotAllowed"
    assert headers.getRawHeaders(b"allow") == [b"GET, DELETE"]
    assert api.call("GET", "/v1") == (200, {"name": "outpost-vim-simulator", "versions": ["v1"], "template_types": ["simulated"]})


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"name": "x", "template": "resources: {}", "properties": NaN}', "not JSON"),
        (b'{"template": "resources: {}"}', "name"),
        (b'{"name": "", "template": "resources: {}"}', "name"),
        (json.dumps({"name": "x" * 256, "template": "resources: {}"}).encode(), "name"),
        (b'{"name": "x", "template": "resources: {}", "properties": [1]}', "properties"),
        (b"[" * 100_000, "not JSON"),
    ],
    ids=["syntax", "not-object", "nan", "no-name", "empty-name", "long-name", "properties", "deep"],
)
def test_bodies_that_are_not_the_documented_json_are_bad_requests(raw: bytes, message: str) -> None:
    api = make()
    code, body = api.call("POST", "/v1/infrastructures", raw=raw)
    assert (code, body["code"]) == (400, "BadRequest") and message in body["message"]
    assert not api.sim.infrastructures


@pytest.mark.parametrize(
    "template, message",
    [
        (42, "must be a string"),
        ("resources: {", "not valid YAML"),
        ("- a\n- b", "must be a YAML mapping, not a list"),
        ("resources: {}\nextra: 1", "unknown top-level key(s) 'extra'"),
        ("description: x", "no resources section"),
        ("resources: {s: {properties: {}}}", "resources.s.type must be a non-empty string"),
        ("resources: {s: {type: T, typo: 1}}", "resources.s: unknown key(s) 'typo'"),
        ("resources: {s: {type: T, properties: [1]}}", "resources.s.properties must be a mapping"),
        ("resources: {s: {type: T, properties: {a: {get_attr: [s, id]}}}}", "get_attr may only be used in outputs"),
        ("resources: {s: {type: T}}\noutputs: {o: {get_attr: [s]}}", "get_attr takes [RESOURCE, ATTRIBUTE]"),
        ("resources: {s: {type: T}}\noutputs: {o: {get_attr: [s, size]}}", "has no attribute 'size'"),
        ("resources: {}\noutputs: {o: {get_param: p}}", "undeclared parameter 'p'"),
        ("resources: {}\noutputs: {o: {get_resource: r}}", "unknown resource 'r'"),
        ("resources: {}\nparameters: {p: 3}", "parameters.p must be a mapping"),
        ("resources: {}\nsimulation: {fail_create: OOPS}", "fail_create must be one of"),
        ("resources: {}\nsimulation: {create_duration: -1}", "create_duration must be a number of seconds"),
        ("resources: {}\nsimulation: {delete_duration: true}", "delete_duration must be a number"),
        ("resources: {}\nsimulation: {later: 1}", "simulation: unknown key(s) 'later'"),
        ("resources: {}\nsimulation: 5", "simulation must be a mapping"),
        ("resources: {}\noutputs: {o: .nan}", "not a finite number"),
        ("resources: {}\noutputs: {o: {1: a}}", "keys must be strings"),
        ("resources: {}\noutputs: {o: !!binary aGk=}", "value cannot be used"),
        ("resources: {}\noutputs: {o: !!set {a}}", "value cannot be used"),
        ("resources: {}\ndescription: [1]", "description must be a string"),
        ('resources: {"": {type: T}}', "names must be 1 to 255 characters"),
        ("a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nresources: {}", "nested more than"),
        ("x: &x [1,2,3,4,5,6,7,8,9,10]\ny: &y [" + ",".join(["*x"] * 10) + "]\nz: &z [" + ",".join(["*y"] * 10) + "]\n"
         "w: [" + ",".join(["*z"] * 21) + "]", "too large"),
        ("resources: {}\noutputs: {o: 2001-13-40}", "not valid YAML"),
        ("resources: {}\noutputs: {o: !!python/object:os.system x}", "not valid YAML"),
    ],
)
def test_templates_with_problems_are_invalid_templates_saying_what_is_wrong(template: Any, message: str) -> None:
    api = make()
    code, body = api.call("POST", "/v1/infrastructures", {"name": "x", "template": template})
    assert (code, body["code"]) == (400, "InvalidTemplate")
    assert message in body["message"], body["message"]
    assert api.call("POST", "/v1/templates/validate", {"template": template})[1] == body


def test_the_template_type_is_simulated_in_any_case_and_defaults_to_it() -> None:
    api = make(create_duration=0)
    for kind in ("simulated", "SIMULATED", " Simulated "):
        code, body = api.call("POST", "/v1/infrastructures", {"name": f"n-{kind}", "template": SIMPLE, "template_type": kind})
        assert code == 202 and api.sim.infrastructures[body["id"]].template_type == "simulated"
    assert api.call("POST", "/v1/infrastructures", {"name": "d", "template": SIMPLE})[0] == 202
    code, body = api.call("POST", "/v1/infrastructures", {"name": "t", "template": SIMPLE, "template_type": "TOSCA"})
    assert (code, body["code"]) == (400, "InvalidTemplate") and "template type" in body["message"]


def test_validate_names_a_templates_parameters_resources_and_outputs() -> None:
    api = make()
    assert api.call("POST", "/v1/templates/validate", {"template": SERVER, "template_type": "simulated"}) == (200, {
        "valid": True, "parameters": ["flavor", "image"], "resources": ["net", "server"],
        "outputs": ["ip", "flavor", "network", "net_id", "fixed", "created"],
    })  # fmt: skip
    assert api.call("GET", "/v1/templates/validate")[0] == 405
    assert api.sim.infrastructures == {}


def test_a_template_longer_than_the_limit_is_refused_and_a_huge_body_is_413() -> None:
    api = make()
    code, body = api.call("POST", "/v1/infrastructures", {"name": "x", "template": "#" * 1_000_001})
    assert (code, body["code"]) == (400, "InvalidTemplate") and "longer than" in body["message"]
    code, body = api.call("POST", "/v1/infrastructures", raw=b" " * (4 * 1024 * 1024 + 1))
    assert (code, body["code"]) == (413, "BadRequest")


# -- faults -----------------------------------------------------------------------------


def test_an_error_rate_of_one_answers_503_and_does_nothing() -> None:
    api = make()
    api.sim.set_faults(error_rate=1.0)
    code, body = api.call("POST", "/v1/infrastructures", {"name": "x", "template": SIMPLE})
    assert (code, body["code"]) == (503, "ServiceUnavailable")
    assert api.sim.infrastructures == {}
    assert api.call("GET", "/v1")[0] == 200  # the index is never faulted
    assert api.call("GET", "/_sim/faults")[0] == 200


def test_a_fault_script_fails_the_next_requests_in_order_with_the_chosen_status() -> None:
    api = make()
    api.sim.set_faults(script=["error", "ok", "error"], error_status=500)
    assert api.call("GET", "/v1/infrastructures")[0] == 500
    assert api.call("GET", "/v1/infrastructures")[0] == 200
    assert api.call("GET", "/v1/infrastructures")[0] == 500
    assert api.call("GET", "/v1/infrastructures")[0] == 200
    assert api.sim.faults.script == []


def test_injected_latency_holds_the_answer_until_the_clock_has_passed_it() -> None:
    api = make()
    api.sim.set_faults(latency=2.5)
    results = api.start("GET", "/v1/infrastructures")
    assert results == []
    api.clock.advance(2.4)
    api.stub.flush()
    assert results == []
    api.clock.advance(0.1)
    api.stub.flush()
    assert results and results[0][0] == 200


def test_faults_are_changed_and_shown_through_the_control_interface() -> None:
    api = make()
    code, body = api.call("POST", "/_sim/faults", {"error_rate": 0.5, "script": ["drop"], "latency": 1})
    assert code == 200 and body == {"error_rate": 0.5, "error_status": 503, "latency": 1, "script": ["drop"]}
    assert api.call("GET", "/_sim/faults") == (200, body)
    for bad in ({"error_rate": 2}, {"script": ["boom"]}, {"error_status": 200}, {"nope": 1}, {"latency": -1}):
        code, error = api.call("POST", "/_sim/faults", bad)
        assert (code, error["code"]) == (400, "BadRequest")
    assert api.call("GET", "/_sim/faults") == (200, body)
    assert api.call("DELETE", "/_sim/faults")[0] == 405


@pytest_twisted.ensureDeferred
async def test_served_on_a_port_a_dropped_request_gets_no_answer_and_does_nothing() -> None:
    port, sim = await start_vim_simulator(reactor, create_duration=0, seed=1)
    try:
        url = simulator_url(port)
        assert url.startswith("http://127.0.0.1:")
        sim.set_faults(script=["drop"])
        with pytest.raises(ResponseFailed):
            await treq.post(url + "/v1/infrastructures", json={"name": "x", "template": SIMPLE}, persistent=False)
        assert sim.infrastructures == {}
        response = await treq.post(url + "/v1/infrastructures", json={"name": "x", "template": SIMPLE}, persistent=False)
        assert response.code == 202 and (await response.json())["id"] in sim.infrastructures
    finally:
        await stop_vim_simulator(port, sim)


@pytest_twisted.ensureDeferred
async def test_an_existing_simulator_can_be_served_and_keeps_its_state() -> None:
    clock = Clock()
    sim = VimSimulator.create(clock, create_duration=0)
    sim.create_infrastructure("kept", SIMPLE, "simulated")
    port, same = await start_vim_simulator(reactor, simulator=sim)
    try:
        assert same is sim
        response = await treq.get(simulator_url(port) + "/v1/infrastructures?name=kept", persistent=False)
        assert [i["name"] for i in (await response.json())["infrastructures"]] == ["kept"]
    finally:
        await stop_vim_simulator(port, sim)


# -- parsing, fuzzed -----------------------------------------------------------------------

_VOCABULARY = [
    "heat_template_version", "description", "parameters", "resources", "outputs", "simulation", "type", "properties",
    "value", "default", "get_param", "get_resource", "get_attr", "create_duration", "delete_duration", "fail_create",
    "fail_delete", "failure_description", "id", "ip", "name", "s", "p", *FAILURE_CODES,
]  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(_VOCABULARY),
)  # fmt: skip
_keys = st.one_of(st.sampled_from(_VOCABULARY), st.text(max_size=10), st.integers(-3, 3))
_trees = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=30)
_documents = st.dictionaries(st.sampled_from(_VOCABULARY[:6]), _trees, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parsing_any_text_either_gives_a_template_or_a_template_error(text: str) -> None:
    try:
        parse_template(text, "simulated")
    except TemplateError as e:
        assert str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.one_of(_documents, st.text(max_size=200)), properties=st.dictionaries(st.sampled_from(["p", "s", "x"]), _trees, max_size=3))
def test_no_template_makes_the_simulator_answer_5xx(template: str, properties: dict[str, Any]) -> None:
    api = make(create_duration=0)
    code, body = api.call("POST", "/v1/infrastructures", {"name": "fuzz", "template": template, "properties": properties})
    assert code in (202, 400), body
    if code == 202:
        request = api.request(body["id"], body["request_id"])
        assert request["status"] in ("COMPLETE", "FAILED")
        json.dumps(api.call("GET", f"/v1/infrastructures/{body['id']}")[1], allow_nan=False)
    else:
        assert body["code"] in ("InvalidTemplate", "BadRequest") and body["message"]
    assert api.call("POST", "/v1/templates/validate", {"template": template})[0] in (200, 400)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), _trees.map(lambda t: json.dumps(t).encode())))
def test_no_body_makes_the_simulator_answer_5xx(raw: bytes) -> None:
    api = make()
    for path in ("/v1/infrastructures", "/v1/templates/validate", "/_sim/faults"):
        code, body = api.call("POST", path, raw=raw)
        assert code < 500, body


@settings(max_examples=150, deadline=None)
@given(
    resources=st.dictionaries(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8).filter(str.strip),
        st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("id", "name", "type", "ip")), _scalars.filter(
            lambda v: not isinstance(v, float) or math.isfinite(v)), max_size=3),
        min_size=1, max_size=3,
    ),
)
def test_outputs_give_back_the_resources_property_values_and_attributes(resources: dict[str, dict[str, Any]]) -> None:
    outputs: dict[str, Any] = {}
    for index, (name, properties) in enumerate(resources.items()):
        outputs[f"id{index}"] = {"get_resource": name}
        outputs[f"ip{index}"] = {"value": {"get_attr": [name, "ip"]}}
        for number, key in enumerate(properties):
            outputs[f"p{index}-{number}"] = {"get_attr": [name, key]}
    template = yaml.safe_dump({
        "resources": {name: {"type": "T", "properties": properties} for name, properties in resources.items()}, "outputs": outputs,
    })  # fmt: skip
    api = make(create_duration=0)
    infra, request = api.create("gen", template, {})
    values = api.request(infra, request)["outputs"]
    shown = {r["name"]: r for r in api.call("GET", f"/v1/infrastructures/{infra}")[1]["resources"]}
    for index, (name, properties) in enumerate(resources.items()):
        assert values[f"id{index}"] == shown[name]["id"] and values[f"ip{index}"] == shown[name]["ip"]
        for number, value in enumerate(properties.values()):
            assert values[f"p{index}-{number}"] == value


# -- the daemon ------------------------------------------------------------------------------


def test_the_twistd_options_parse_durations_capacity_and_faults() -> None:
    options = Options()
    options.parseOptions([])
    assert (options["listen"], options["create-duration"], options["delete-duration"], options["capacity"]) == (
        "tcp:8090:interface=127.0.0.1", 3.0, 1.0, None,
    )  # fmt: skip
    options = Options()
    options.parseOptions([
        "--listen", "tcp:0:interface=127.0.0.1", "--create-duration", "0.5", "--delete-duration", "0", "--capacity", "3",
        "--seed", "9", "--fault", "error_rate=0.25", "--fault", 'script=["error", "drop"]',
    ])  # fmt: skip
    assert (options["create-duration"], options["delete-duration"], options["capacity"], options["seed"]) == (0.5, 0.0, 3, 9)
    assert options["parsed_faults"] == {"error_rate": 0.25, "script": ["error", "drop"]}
    assert len(list(makeService(options))) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--create-duration", "-1"],
        ["--delete-duration", "soon"],
        ["--capacity", "-2"],
        ["--fault", "nope=1"],
        ["--fault", "error_rate=2"],
        ["--fault", "script=[\"boom\"]"],
        ["--fault", "latency=x"],
    ],
)
def test_bad_twistd_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


def test_twistd_vim_sim_help_lists_its_options() -> None:
    result = subprocess.run([TWISTD, "vim-sim", "--help"], check=False, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--listen", "--create-duration", "--delete-duration", "--capacity", "--fault", "--seed"):
        assert option in result.stdout


@pytest_twisted.ensureDeferred
async def test_twistd_vim_sim_serves_the_simulated_driver_and_keeps_state_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(
        "vim-sim",
        [TWISTD, "-n", "--pidfile=", "vim-sim", "--listen", f"tcp:{port}:interface=127.0.0.1", "--create-duration", "0",
         "--delete-duration", "0", "--capacity", "5"],
        tmp_path / "vim-sim.log",
    )  # fmt: skip
    daemon.start()
    driver = SimulatedDriver(reactor, f"http://127.0.0.1:{port}", timeout=5)
    location = {"name": "here", "type": "simulated", "properties": {}}

    async def ready() -> bool:
        response = await treq.get(f"http://127.0.0.1:{port}/v1", persistent=False)
        return response.code == 200

    try:
        await eventually(ready, 30, "vim-sim to answer")
        accepted = await driver.create_infrastructure(SIMPLE, "simulated", {"resourceName": "demo"}, {}, location)
        assert (await driver.get_infrastructure_task(accepted.infrastructure_id, accepted.request_id, location)).outputs == {"answer": 42}
        found = await driver.find_infrastructure(SIMPLE, "simulated", "demo", location)
        assert found is not None and found.infrastructure_id == accepted.infrastructure_id
    finally:
        await driver.close()
        assert await daemon.stop() == 0, daemon.log_text()

"""The MAAS simulator: status transitions on a clock, faults, its HTTP surface, its describe document, scale."""

from __future__ import annotations

import json
import time
from email.generator import BytesGenerator
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from io import BytesIO
from typing import AsyncIterator

import attrs
import pytest
import pytest_twisted
import treq
from hypothesis import given, strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock

from simulators.maas import MAASSimulator, Status, User, generate_machines
from simulators.maas.errors import BadRequest, Conflict, Forbidden, NotFound, SimError
from simulators.maas.forms import parse_body
from tests.maashelpers import API_KEY, DURATIONS, MAASSite, pick, serve, serving


@pytest_twisted.async_yield_fixture
async def maas_site() -> AsyncIterator[MAASSite]:
    async with serving() as site:
        yield site


ADMIN = User("admin", True)


def make(machines: int = 40) -> tuple[MAASSimulator, Clock]:
    clock = Clock()
    return MAASSimulator.create(clock, machines=machines, seed=7, api_key=API_KEY, durations=attrs.evolve(DURATIONS)), clock


# -- generation -----------------------------------------------------------------


def test_the_same_seed_makes_the_same_machines_and_another_seed_others() -> None:
    net = MAASSimulator.create(Clock()).network
    a, b, c = generate_machines(50, 1), generate_machines(50, 1), generate_machines(50, 2)
    assert [m.to_json(net) for m in a] == [m.to_json(net) for m in b]
    assert [m.system_id for m in a] != [m.system_id for m in c]


def test_generated_machines_are_unique_and_maas_shaped() -> None:
    machines = generate_machines(2000, 3)
    assert len({m.system_id for m in machines}) == len({m.hostname for m in machines}) == 2000
    macs = [nic["mac_address"] for m in machines for nic in m.interfaces]
    assert len(set(macs)) == len(macs)
    statuses = {m.status for m in machines}
    assert {Status.READY, Status.DEPLOYED, Status.NEW, Status.ALLOCATED} <= statuses
    deployed = next(m for m in machines if m.status == Status.DEPLOYED and m.power_type != "manual")
    assert (deployed.owner, deployed.power_state, deployed.osystem) == ("admin", "on", "ubuntu")


# -- transitions on the clock -----------------------------------------------------


def test_commissioning_then_testing_then_ready_and_powered_off() -> None:
    sim, clock = make()
    system_id = pick(sim, Status.NEW)
    sim.commission(ADMIN, system_id, {})
    machine = sim.get(system_id)
    assert machine.status == Status.COMMISSIONING
    clock.advance(3)
    assert machine.power_state == "on"
    clock.advance(27)
    assert machine.status == Status.TESTING
    clock.advance(10)
    assert machine.status == Status.READY and machine.status_name == "Ready"
    clock.advance(3)
    assert machine.power_state == "off"


def test_deploying_then_deployed_with_ip_addresses() -> None:
    sim, clock = make()
    system_id = pick(sim, Status.READY)
    sim.deploy(ADMIN, system_id, {"distro_series": ["22.04"]})
    machine = sim.get(system_id)
    assert (machine.status, machine.owner, machine.distro_series) == (Status.DEPLOYING, "admin", "jammy")
    clock.advance(59.9)
    assert machine.status == Status.DEPLOYING
    clock.advance(0.1)
    described = sim.machine_dict(machine)
    assert described["status_name"] == "Deployed" and described["power_state"] == "on"
    assert described["ip_addresses"] and described["interface_set"][0]["links"][0]["ip_address"]


def test_injected_failures_end_in_maas_failed_statuses() -> None:
    sim, clock = make()
    deploying, commissioning, releasing = pick(sim, Status.READY), pick(sim, Status.NEW), pick(sim, Status.DEPLOYED)
    sim.fail_next(deploying, "deploy")
    sim.fail_next(commissioning, "commission")
    sim.fail_next(releasing, "release")
    sim.deploy(ADMIN, deploying, {})
    sim.commission(ADMIN, commissioning, {})
    sim.release(ADMIN, releasing, {})
    clock.advance(60)
    assert [sim.get(s).status_name for s in (deploying, commissioning, releasing)] == [
        "Failed deployment", "Failed commissioning", "Releasing failed",
    ]
    sim.release(ADMIN, releasing, {})  # a failed release may be retried
    clock.advance(5)
    assert sim.get(releasing).status == Status.READY


def test_release_with_erase_goes_through_disk_erasing_and_clears_the_owner() -> None:
    sim, clock = make()
    system_id = pick(sim, Status.DEPLOYED)
    sim.release(ADMIN, system_id, {"erase": ["true"], "secure_erase": ["1"]})
    machine = sim.get(system_id)
    assert machine.status == Status.DISK_ERASING
    clock.advance(20)
    assert (machine.status, machine.owner, machine.osystem) == (Status.READY, None, "")
    clock.advance(3)
    assert machine.power_state == "off"


def test_a_failing_bmc_fails_the_deployment_and_reads_error() -> None:
    sim, clock = make()
    system_id = pick(sim, Status.READY)
    sim.fail_bmc(system_id)
    sim.deploy(ADMIN, system_id, {})
    clock.advance(3)
    machine = sim.get(system_id)
    assert (machine.status_name, machine.power_state) == ("Failed deployment", "error")
    clock.advance(100)
    assert machine.status_name == "Failed deployment"


def test_state_rules_match_maas() -> None:
    sim, _ = make()
    with pytest.raises(NotFound):
        sim.get("nope")
    with pytest.raises(Conflict):
        sim.commission(ADMIN, pick(sim, Status.DEPLOYED), {})
    with pytest.raises(Conflict):
        sim.release(ADMIN, pick(sim, Status.NEW), {})
    ready = pick(sim, Status.READY)
    assert sim.release(ADMIN, ready, {}).status == Status.READY  # idempotent
    with pytest.raises(BadRequest) as bad:
        sim.deploy(ADMIN, ready, {"user_data": ["not base64!"], "hwe_kernel": ["hwe-99.04"]})
    assert set(bad.value.fields) == {"user_data", "hwe_kernel"}
    assert sim.get(ready).status == Status.READY  # a refused deploy changes nothing
    with pytest.raises(BadRequest):
        sim.commission(ADMIN, pick(sim, Status.NEW), {"enable_ssh": ["perhaps"]})
    user = sim.add_api_key("u:t:s", "user", is_superuser=False)
    with pytest.raises(Forbidden):
        sim.release(user, pick(sim, Status.DEPLOYED), {})  # someone else's
    with pytest.raises(BadRequest):
        sim.update(ADMIN, ready, {"hostname": [sim.get(pick(sim, Status.NEW)).hostname]})


def test_stop_cancels_every_pending_change() -> None:
    sim, clock = make()
    sim.deploy(ADMIN, pick(sim, Status.READY), {})
    assert clock.getDelayedCalls()
    sim.stop()
    assert not clock.getDelayedCalls()


def test_faults_are_validated() -> None:
    sim, _ = make()
    with pytest.raises(ValueError):
        sim.set_faults(error_rate=2)
    with pytest.raises(ValueError):
        sim.set_faults(script=["explode"])
    with pytest.raises(ValueError):
        sim.set_faults(nonsense=1)


# -- request bodies -----------------------------------------------------------------


_names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)


def _libmaas_style_body(fields: dict[str, str], base64_parts: bool) -> tuple[str, bytes]:
    """A multipart body built the way python-libmaas builds one (email.mime, CRLF lines)."""
    message = MIMEMultipart("form-data")
    for name, value in fields.items():
        data = value.encode("utf-8")
        part = MIMEApplication(data) if base64_parts else MIMEApplication(data, _encoder=lambda p: None)
        part.add_header("Content-Disposition", "form-data", name=name)
        message.attach(part)
    buf = BytesIO()
    generator = BytesGenerator(buf, False)
    generator._write_headers = lambda self: None  # type: ignore[method-assign]
    generator.flatten(message)
    return message["Content-Type"], b"\r\n".join(buf.getvalue().splitlines())


@given(st.dictionaries(_names, st.text(max_size=80), max_size=6))
def test_base64_encoded_multipart_parts_decode_to_their_text(fields: dict[str, str]) -> None:
    assert parse_body(*_libmaas_style_body(fields, True)) == {k: [v] for k, v in fields.items()}


@given(st.dictionaries(_names, st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=80), max_size=6))
def test_plain_multipart_parts_decode_to_their_text(fields: dict[str, str]) -> None:
    assert parse_body(*_libmaas_style_body(fields, False)) == {k: [v] for k, v in fields.items()}


@given(st.binary(max_size=300))
def test_any_body_parses_or_is_a_400(body: bytes) -> None:
    try:
        parse_body("multipart/form-data; boundary=B", body)
    except SimError as e:
        assert e.status == 400


def test_urlencoded_bodies_are_read_too() -> None:
    assert parse_body("application/x-www-form-urlencoded", b"erase=true&erase=false&x=%2F") == {"erase": ["true", "false"], "x": ["/"]}


# -- over HTTP --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_describe_is_anonymous_with_absolute_uris_for_this_host_and_port(maas_site: MAASSite) -> None:
    response = await treq.get(maas_site.url + "api/2.0/describe/")
    assert response.code == 200 and response.headers.getRawHeaders("content-type") == ["application/json"]
    document = await response.json()
    port = maas_site.port.getHost().port
    handlers = {h["name"]: h for h in document["handlers"]}
    machine = handlers["MachineHandler"]
    assert machine["uri"] == f"http://127.0.0.1:{port}/MAAS/api/2.0/machines/{{system_id}}/"
    assert machine["params"] == ["system_id"]
    assert {a["name"] for a in machine["actions"]} >= {"read", "deploy", "release", "commission", "power_on", "power_off", "query_power_state"}
    assert handlers["VersionHandler"] == next(r["anon"] for r in document["resources"] if r["name"] == "VersionHandler")


@pytest_twisted.ensureDeferred
async def test_maas_http_errors_for_unknown_paths_ops_and_methods(maas_site: MAASSite) -> None:
    client = maas_site.client()
    headers = client._headers(False)
    api = maas_site.url + "api/2.0/"
    unknown_op = await treq.post(api + "machines/?op=explode", headers=headers)
    assert unknown_op.code == 400 and b"Unrecognised signature" in await unknown_op.content()
    assert (await treq.get(api + "nowhere/", headers=headers)).code == 404
    assert (await treq.delete(api + "zones/", headers=headers)).code == 405
    unauthenticated = await treq.get(api + "machines/")
    assert unauthenticated.code == 401 and unauthenticated.headers.getRawHeaders("www-authenticate")
    assert (await treq.get(maas_site.url + "api/version/")).code == 200
    zone = await (await treq.get(api + "zones/az1/", headers=client._headers(False))).json()
    assert zone["name"] == "az1"


@pytest_twisted.ensureDeferred
async def test_the_test_only_control_interface_sets_faults_and_machines(maas_site: MAASSite) -> None:
    control = maas_site.url.replace("/MAAS/", "/_sim/")
    answer = await treq.post(control + "faults", json={"error_rate": 0.5, "bmc_failures": ["abc"]})
    assert (await answer.json())["error_rate"] == 0.5 and maas_site.sim.faults.bmc_failures == {"abc"}
    assert (await treq.post(control + "faults", json={"error_rate": 7})).code == 400
    system_id = pick(maas_site.sim, Status.READY)
    changed = await (await treq.post(control + f"machines/{system_id}", json={"status": Status.BROKEN})).json()
    assert changed["status_name"] == "Broken"
    assert (await treq.post(control + f"machines/{system_id}", json={"memory": 1})).code == 400


@pytest_twisted.ensureDeferred
async def test_ten_thousand_machines_list_correctly_and_fast() -> None:
    started = time.perf_counter()
    site = await serve(machines=10_000, seed=11)
    generated = time.perf_counter() - started
    try:
        client = site.client(timeout=60)
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            machines = await client.list_machines()
            timings.append(time.perf_counter() - started)
        assert len(machines) == 10_000
        assert len({m["system_id"] for m in machines}) == 10_000
        assert machines[-1] == json.loads(site.sim.machine_json(list(site.sim.machines.values())[-1]))
        print(f"\n10,000 machines: generated in {generated:.2f}s; list_machines {timings[0]:.2f}s cold, {timings[1]:.2f}s warm")
        assert timings[1] < 15
    finally:
        await site.close()
    del machines


@pytest_twisted.ensureDeferred
async def test_injected_latency_delays_answers(maas_site: MAASSite) -> None:
    maas_site.sim.set_faults(latency=0.2)
    started = reactor.seconds()
    await maas_site.client().whoami()
    assert reactor.seconds() - started >= 0.2

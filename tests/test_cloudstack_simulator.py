"""The CloudStack simulator on its own: CloudStack's wire shapes, signatures, devices, hooks, faults, twistd options."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from pathlib import Path
from twisted.internet import reactor
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python import usage

from clusterd.cloudstack import CloudStackClient
from clusterd.cloudstack.signing import format_expires, sign
from simulators.cloudstack import ApiError, CloudStackResource, CloudStackSimulator
from simulators.cloudstack.tap import Options, makeService
from tests.cloudstackhelpers import API_KEY, FAST_POLL, FAST_RETRY, SECRET_KEY
from tests.daemons import TWISTD, Daemon, eventually, free_port

NOW = 1_750_000_000.0


def make(job_duration: float = 1.0) -> tuple[CloudStackSimulator, Clock]:
    clock = Clock()
    sim = CloudStackSimulator.create(clock, api_key=API_KEY, secret_key=SECRET_KEY, job_duration=job_duration, now=lambda: NOW)
    return sim, clock


def signed(command: str, secret: str = SECRET_KEY, expires: float | None = NOW + 60, **params: str) -> dict[str, str]:
    out = {**params, "command": command, "apiKey": API_KEY, "response": "json", "signatureVersion": "3"}
    if expires is not None:
        out["expires"] = format_expires(expires)
    out["signature"] = sign(out, secret)
    return out


def get(sim: CloudStackSimulator, clock: Clock, params: dict[str, str]) -> tuple[int, Any]:
    stub = StubTreq(CloudStackResource(sim, clock))
    d = stub.get("http://cs.test/client/api?" + urlencode(params))
    stub.flush()
    response: list[Any] = []
    d.addCallback(lambda r: stub.content(r).addCallback(lambda body: response.append((r.code, r.headers, body))))
    stub.flush()
    code, headers, body = response[0]
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"application/json")
    return code, json.loads(body)


def run_job(sim: CloudStackSimulator, clock: Clock, command: str, **params: str) -> dict[str, Any]:
    job = sim.handle(command, params)
    clock.advance(sim.job_duration)
    return sim.handle("queryAsyncJobResult", {"jobid": job["jobid"]})


@pytest.mark.parametrize(
    "params",
    [
        signed("listZones", secret="wrong"),
        signed("listZones", expires=NOW - 1),
        signed("listZones", expires=None),
        {k: v for k, v in signed("listZones").items() if k != "signature"},
        {**signed("listZones"), "name": "tampered"},
    ],
    ids=["bad-signature", "expired", "no-expires", "unsigned", "tampered"],
)
def test_requests_not_correctly_signed_get_401_in_cloudstacks_error_shape(params: dict[str, str]) -> None:
    sim, clock = make()
    code, body = get(sim, clock, params)
    assert code == 401
    assert body == {"listzonesresponse": {"uuidList": [], "errorcode": 401, "cserrorcode": 9999,
                                          "errortext": "unable to verify user credentials and/or request signature"}}


def test_answers_have_one_top_level_key_and_empty_lists_are_empty_objects() -> None:
    sim, clock = make()
    code, body = get(sim, clock, signed("listZones"))
    assert code == 200 and list(body) == ["listzonesresponse"] and body["listzonesresponse"]["count"] == 1
    code, body = get(sim, clock, signed("listVolumes", type="DATADISK"))
    assert (code, body) == (200, {"listvolumesresponse": {}})
    code, body = get(sim, clock, signed("noSuchCommand"))
    assert code == 432 and body["nosuchcommandresponse"]["errorcode"] == 432


def test_errors_carry_their_code_as_the_http_status() -> None:
    sim, clock = make()
    volume = run_job(sim, clock, "createVolume", zoneid=sim.zone.id, diskofferingid=sim.offering("Small").id)["jobresult"]["volume"]
    run_job(sim, clock, "attachVolume", id=volume["id"], virtualmachineid=sim.appliance.id)
    code, body = get(sim, clock, signed("deleteVolume", id=volume["id"]))
    assert code == 536 and body["deletevolumeresponse"]["errorcode"] == 536
    code, body = get(sim, clock, signed("createVolume", zoneid=sim.zone.id))
    assert code == 431 and "disk Offering" in body["createvolumeresponse"]["errortext"]


def test_a_job_is_pending_until_job_duration_has_passed_on_the_clock() -> None:
    sim, clock = make(job_duration=5.0)
    job = sim.handle("createVolume", {"zoneid": sim.zone.id, "diskofferingid": sim.offering("Small").id})
    assert job["id"] in sim.volumes  # allocated at once, as CloudStack shows it
    clock.advance(4.9)
    pending = sim.handle("queryAsyncJobResult", {"jobid": job["jobid"]})
    assert pending["jobstatus"] == 0 and "jobresult" not in pending
    clock.advance(0.1)
    done = sim.handle("queryAsyncJobResult", {"jobid": job["jobid"]})
    assert (done["jobstatus"], done["jobresultcode"], done["jobresult"]["volume"]["state"]) == (1, 0, "Allocated")


def test_hooks_see_the_device_appear_before_the_job_succeeds_and_go_before_detach_is_visible() -> None:
    sim, clock = make()
    seen: list[Any] = []
    sim.on_attach.append(lambda volume, vm, device: seen.append(("attach", volume["deviceid"], vm["name"], device)))
    sim.on_detach.append(lambda volume, vm: seen.append(("detach", volume.get("deviceid"), vm["name"])))
    volume_id = sim.handle("createVolume", {"zoneid": sim.zone.id, "diskofferingid": sim.offering("Small").id})["id"]
    clock.advance(1)
    job = sim.handle("attachVolume", {"id": volume_id, "virtualmachineid": sim.appliance.id})
    assert seen == []
    clock.advance(1)
    assert seen == [("attach", 1, "oma-appliance", 1)]
    assert sim.handle("queryAsyncJobResult", {"jobid": job["jobid"]})["jobstatus"] == 1
    run_job(sim, clock, "detachVolume", id=volume_id)
    assert seen[-1] == ("detach", 1, "oma-appliance")


def test_a_failing_hook_is_logged_and_the_attach_still_succeeds() -> None:
    sim, clock = make()
    sim.on_attach.append(lambda *args: 1 / 0)
    volume_id = sim.handle("createVolume", {"zoneid": sim.zone.id, "diskofferingid": sim.offering("Small").id})["id"]
    assert run_job(sim, clock, "attachVolume", id=volume_id, virtualmachineid=sim.appliance.id)["jobstatus"] == 1


def test_an_explicit_device_in_use_fails_the_job() -> None:
    sim, clock = make()
    ids = [sim.handle("createVolume", {"zoneid": sim.zone.id, "diskofferingid": sim.offering("Small").id})["id"] for _ in range(2)]
    clock.advance(1)
    assert run_job(sim, clock, "attachVolume", id=ids[0], virtualmachineid=sim.appliance.id, deviceid="2")["jobstatus"] == 1
    failed = run_job(sim, clock, "attachVolume", id=ids[1], virtualmachineid=sim.appliance.id, deviceid="2")
    assert failed["jobstatus"] == 2 and failed["jobresult"]["errorcode"] == 431 and "used" in failed["jobresult"]["errortext"]


def test_unknown_ids_give_cloudstacks_entity_does_not_exist_text() -> None:
    sim, _ = make()
    with pytest.raises(ApiError) as info:
        sim.handle("detachVolume", {"id": "nope"})
    assert info.value.errorcode == 431 and "entity does not exist" in info.value.errortext


def test_faults_can_be_changed_over_the_control_interface() -> None:
    sim, clock = make()
    stub = StubTreq(CloudStackResource(sim, clock))
    d = stub.post("http://cs.test/_sim/faults", data=json.dumps({"error_rate": 0.5, "stuck_jobs": ["attachVolume"]}).encode())
    stub.flush()
    assert stub.flush() is None and sim.faults.error_rate == 0.5 and sim.faults.stuck_jobs == {"attachVolume"}
    with pytest.raises(ValueError):
        sim.set_faults(error_rate=2)
    del d


def test_the_twistd_options_need_both_keys_and_build_a_service(tmp_path: Any) -> None:
    options = Options()
    with pytest.raises(usage.UsageError):
        options.parseOptions(["--api-key", API_KEY])
    secret = tmp_path / "secret"
    secret.write_text(SECRET_KEY + "\n")
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--api-key", API_KEY, "--secret-key-file", str(secret),
                          "--job-duration", "0.1", "--fault", "job_failure_rate=0.5"])
    assert options["secret"] == SECRET_KEY and options["parsed_faults"] == {"job_failure_rate": 0.5}
    assert len(list(makeService(options))) == 2
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--api-key", "k", "--secret-key", "s", "--fault", "nope=1"])


@pytest_twisted.ensureDeferred
async def test_twistd_cloudstack_sim_serves_the_client(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(
        "cloudstack-sim",
        [TWISTD, "-n", "--pidfile=", "cloudstack-sim", "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--api-key", API_KEY, "--secret-key", SECRET_KEY, "--job-duration", "0.05"],
        tmp_path / "cloudstack-sim.log",
    )
    daemon.start()
    client = CloudStackClient(reactor, f"http://127.0.0.1:{port}/client/api", API_KEY, SECRET_KEY, retry=FAST_RETRY, poll=FAST_POLL, timeout=5)
    try:
        zones = await eventually(client.list_zones, 20, "cloudstack-sim to answer")
        volume = await client.create_volume("v", zones[0]["id"], (await client.list_disk_offerings())[1]["id"])
        vm = (await client.list_virtual_machines())[0]
        assert (await client.attach_volume(volume["id"], vm["id"]))["deviceid"] == 1
    finally:
        await client.close()
        assert await daemon.stop() == 0

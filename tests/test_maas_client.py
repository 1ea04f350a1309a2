"""MAASClient against the MAAS simulator over real loopback: every operation, every error, retries."""

from __future__ import annotations

import socket
from typing import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from clusterd.maas import (
    MAASAuthError,
    MAASClient,
    MAASConflict,
    MAASError,
    MAASNotFound,
    MAASUnavailable,
    MAASValidationError,
    RetryPolicy,
    api_root,
)
from simulators.maas import Status
from tests.maashelpers import API_KEY, MAASSite, owned_off, pick, serving

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@pytest_twisted.async_yield_fixture
async def maas_site() -> AsyncIterator[MAASSite]:
    async with serving() as site:
        yield site


def posts(site: MAASSite, op: str) -> int:
    return sum(1 for method, _, logged_op in site.sim.request_log if method == "POST" and logged_op == op)


def test_api_root_accepts_the_maas_url_with_or_without_the_api_path() -> None:
    assert api_root("http://m:5240/MAAS") == "http://m:5240/MAAS/api/2.0/"
    assert api_root("http://m:5240/MAAS/api/2.0/") == "http://m:5240/MAAS/api/2.0/"
    with pytest.raises(ValueError):
        api_root("ftp://m/MAAS/")


def test_the_api_key_never_appears_in_the_clients_repr() -> None:
    client = MAASClient(reactor, "http://m/MAAS/", API_KEY, http=object())
    assert "s3cr3t" not in repr(client) and "Tk7tokenkey" not in repr(client)


def test_a_malformed_api_key_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValueError) as info:
        MAASClient(reactor, "http://m/MAAS/", "only:two-s3cr3t", http=object())
    assert "s3cr3t" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_version_is_anonymous_and_whoami_names_the_keys_user(maas_site: MAASSite) -> None:
    client = maas_site.client()
    assert "authenticate-api" in (await client.version())["capabilities"]
    me = await client.whoami()
    assert me["username"] == "admin" and me["is_superuser"] is True


@pytest_twisted.ensureDeferred
async def test_list_machines_returns_maas_json_and_filters_by_repeatable_params(maas_site: MAASSite) -> None:
    client = maas_site.client()
    machines = await client.list_machines()
    assert len(machines) == 40
    first = machines[0]
    for field in ("system_id", "hostname", "status", "status_name", "power_state", "power_type", "architecture",
                  "memory", "cpu_count", "storage", "ip_addresses", "interface_set", "tag_names", "zone", "pool",
                  "osystem", "distro_series", "owner", "resource_uri"):
        assert field in first
    assert first["interface_set"][0]["mac_address"].count(":") == 5
    ready = await client.list_machines(status="ready")
    assert ready and {m["status_name"] for m in ready} == {"Ready"}
    two_zones = await client.list_machines(status=["ready", "deployed"], zone=("az1", "az2"))
    assert {m["zone"]["name"] for m in two_zones} <= {"az1", "az2"}
    assert {m["status"] for m in two_zones} <= {Status.READY, Status.DEPLOYED}
    by_name = await client.list_machines(hostname=[machines[3]["hostname"], machines[5]["hostname"]])
    assert sorted(m["system_id"] for m in by_name) == sorted([machines[3]["system_id"], machines[5]["system_id"]])
    tagged = [m for m in machines if m["tag_names"]]
    tag = tagged[0]["tag_names"][0]
    assert all(tag in m["tag_names"] for m in await client.list_machines(tags=tag))
    assert {m["pool"]["name"] for m in await client.list_machines(pool="storage")} <= {"storage"}


@pytest_twisted.ensureDeferred
async def test_an_unknown_status_filter_is_a_validation_error_with_maas_field_errors(maas_site: MAASSite) -> None:
    with pytest.raises(MAASValidationError) as info:
        await maas_site.client().list_machines(status="sleeping")
    assert info.value.status == 400 and "status" in info.value.fields


@pytest_twisted.ensureDeferred
async def test_get_machine_and_not_found(maas_site: MAASSite) -> None:
    client = maas_site.client()
    system_id = pick(maas_site.sim, Status.READY)
    assert (await client.get_machine(system_id))["system_id"] == system_id
    with pytest.raises(MAASNotFound) as info:
        await client.get_machine("nosuch")
    assert info.value.status == 404


@pytest_twisted.ensureDeferred
async def test_deploy_sends_base64_user_data_and_sets_the_hostname_first(maas_site: MAASSite) -> None:
    client = maas_site.client()
    system_id = pick(maas_site.sim, Status.READY)
    user_data = b"#cloud-config\npackages: [htop]\n\x00\xff binary too"
    machine = await client.deploy(system_id, distro_series="ubuntu/noble", hwe_kernel="hwe-24.04", user_data=user_data, hostname="web-01")
    assert machine["status_name"] == "Deploying" and machine["hostname"] == "web-01"
    assert machine["distro_series"] == "noble" and machine["owner"] == "admin"
    assert maas_site.sim.get(system_id).user_data == user_data
    maas_site.clock.advance(60)
    assert (await client.get_machine(system_id))["status_name"] == "Deployed"


@pytest_twisted.ensureDeferred
async def test_deploy_in_the_wrong_state_is_a_conflict(maas_site: MAASSite) -> None:
    with pytest.raises(MAASConflict) as info:
        await maas_site.client().deploy(pick(maas_site.sim, Status.NEW))
    assert info.value.status == 409 and "New" in info.value.message


@pytest_twisted.ensureDeferred
async def test_bad_deploy_parameters_give_every_field_error(maas_site: MAASSite) -> None:
    with pytest.raises(MAASValidationError) as info:
        await maas_site.client().deploy(pick(maas_site.sim, Status.READY), distro_series="windows", hwe_kernel="nope")
    assert set(info.value.fields) == {"distro_series", "hwe_kernel"}


@pytest_twisted.ensureDeferred
async def test_commission_runs_tests_unless_told_not_to(maas_site: MAASSite) -> None:
    client = maas_site.client()
    first, second = maas_site.sim.find(status=Status.NEW, power_type="ipmi")[:2]
    machine = await client.commission(first.system_id, enable_ssh=True, skip_storage=True)
    assert machine["status_name"] == "Commissioning"
    await client.commission(second.system_id, testing_scripts=[])
    maas_site.clock.advance(30)
    assert (await client.get_machine(first.system_id))["status_name"] == "Testing"
    assert (await client.get_machine(second.system_id))["status_name"] == "Ready"
    maas_site.clock.advance(10)
    done = await client.get_machine(first.system_id)
    assert done["status_name"] == "Ready" and done["power_state"] == "on"  # enable_ssh keeps it up


@pytest_twisted.ensureDeferred
async def test_release_erases_when_asked_and_is_idempotent_on_ready(maas_site: MAASSite) -> None:
    client = maas_site.client()
    system_id = pick(maas_site.sim, Status.DEPLOYED)
    machine = await client.release(system_id, erase=True, quick_erase=True)
    assert machine["status_name"] == "Disk erasing"
    assert maas_site.sim.get(system_id).erase == {"erase": True, "secure_erase": False, "quick_erase": True}
    maas_site.clock.advance(20)
    assert (await client.get_machine(system_id))["status_name"] == "Ready"
    again = await client.release(system_id)
    assert again["status_name"] == "Ready" and again["owner"] is None
    with pytest.raises(MAASConflict):
        await client.release(pick(maas_site.sim, Status.NEW))


@pytest_twisted.ensureDeferred
async def test_power_on_off_and_query_take_the_bmcs_time(maas_site: MAASSite) -> None:
    client = maas_site.client()
    system_id = owned_off(maas_site.sim)
    await client.power_on(system_id)
    assert await client.query_power_state(system_id) == "off"
    maas_site.clock.advance(3)
    assert await client.query_power_state(system_id) == "on"
    await client.power_off(system_id, stop_mode="soft")
    maas_site.clock.advance(3)
    assert await client.query_power_state(system_id) == "on"  # soft takes longer
    maas_site.clock.advance(7)
    assert await client.query_power_state(system_id) == "off"
    with pytest.raises(ValueError):
        await client.power_off(system_id, stop_mode="gentle")


@pytest_twisted.ensureDeferred
async def test_power_on_of_an_unallocated_machine_is_a_conflict_as_in_maas(maas_site: MAASSite) -> None:
    with pytest.raises(MAASConflict) as info:
        await maas_site.client().power_on(pick(maas_site.sim, Status.READY))
    assert "allocated" in info.value.message


@pytest_twisted.ensureDeferred
async def test_manual_power_type_reads_unknown_and_power_off_returns_the_machine(maas_site: MAASSite) -> None:
    client = maas_site.client()
    system_id = pick(maas_site.sim, Status.ALLOCATED, power_type="manual")
    assert await client.query_power_state(system_id) == "unknown"
    assert (await client.power_off(system_id))["system_id"] == system_id  # MAAS answered null


@pytest_twisted.ensureDeferred
async def test_a_failing_bmc_reads_error(maas_site: MAASSite) -> None:
    system_id = owned_off(maas_site.sim)
    maas_site.sim.fail_bmc(system_id)
    assert await maas_site.client().query_power_state(system_id) == "error"


@pytest_twisted.ensureDeferred
async def test_network_zones_and_pools(maas_site: MAASSite) -> None:
    client = maas_site.client()
    assert [s["cidr"] for s in await client.subnets()] == ["10.0.0.0/16", "10.1.0.0/16"]
    fabrics = await client.fabrics()
    assert [v["vid"] for v in await client.vlans(fabrics[1]["id"])] == [0]
    assert {s["name"] for s in await client.spaces()} == {"management", "storage"}
    assert "default" in {z["name"] for z in await client.zones()}
    assert "compute" in {p["name"] for p in await client.resource_pools()}
    with pytest.raises(MAASNotFound):
        await client.vlans(99)


@pytest_twisted.ensureDeferred
async def test_a_wrong_key_is_an_auth_error_and_a_non_admin_may_not_commission(maas_site: MAASSite) -> None:
    with pytest.raises(MAASAuthError) as info:
        await maas_site.client("Xq9consumer:Tk7tokenkey:wrong").whoami()
    assert info.value.status == 401 and "wrong" not in str(info.value)
    maas_site.sim.add_api_key("u:ut:us", username="user", is_superuser=False)
    with pytest.raises(MAASAuthError) as forbidden:
        await maas_site.client("u:ut:us").commission(pick(maas_site.sim, Status.NEW))
    assert forbidden.value.status == 403


# -- retries --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_get_is_retried_after_a_dropped_connection_and_a_503(maas_site: MAASSite) -> None:
    maas_site.sim.script_faults("drop", "error")
    machines = await maas_site.client().list_machines()
    assert len(machines) == 40
    assert [m for m, p, _ in maas_site.sim.request_log if p.endswith("/machines/")] == ["GET"] * 3


@pytest_twisted.ensureDeferred
async def test_retries_run_out_into_unavailable(maas_site: MAASSite) -> None:
    maas_site.sim.set_faults(error_rate=1.0, error_status=503)
    with pytest.raises(MAASUnavailable) as info:
        await maas_site.client().whoami()
    assert info.value.status == 503
    assert len(maas_site.sim.request_log) == 3  # FAST_RETRY.attempts


@pytest_twisted.ensureDeferred
async def test_a_429_and_a_502_on_a_get_are_retried(maas_site: MAASSite) -> None:
    maas_site.sim.set_faults(error_status=429, retry_after=0)
    maas_site.sim.script_faults("error")
    assert (await maas_site.client().whoami())["username"] == "admin"
    maas_site.sim.set_faults(error_status=502)
    maas_site.sim.script_faults("error")
    assert (await maas_site.client().whoami())["username"] == "admin"


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_retried_then_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = MAASClient(reactor, f"http://127.0.0.1:{port}/MAAS/", API_KEY, retry=RetryPolicy(2, 0.01, 0.01))
    with pytest.raises(MAASUnavailable) as info:
        await client.deploy("abc123")
    assert info.value.status is None and "ConnectionRefused" in info.value.message
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_deploy_whose_answer_was_lost_is_not_sent_again_when_the_machine_shows_it(maas_site: MAASSite) -> None:
    system_id = pick(maas_site.sim, Status.READY)
    maas_site.sim.script_faults("lose_response")
    machine = await maas_site.client().deploy(system_id, distro_series="jammy")
    assert machine["status_name"] == "Deploying"
    assert posts(maas_site, "deploy") == 1


@pytest_twisted.ensureDeferred
async def test_a_post_dropped_before_it_acted_is_sent_once_more(maas_site: MAASSite) -> None:
    system_id = pick(maas_site.sim, Status.READY)
    maas_site.sim.script_faults("drop")
    machine = await maas_site.client().deploy(system_id)
    assert machine["status_name"] == "Deploying"
    assert posts(maas_site, "deploy") == 2


@pytest_twisted.ensureDeferred
async def test_a_post_whose_outcome_stays_unknown_is_sent_at_most_twice_then_fails(maas_site: MAASSite) -> None:
    system_id = owned_off(maas_site.sim)
    maas_site.sim.script_faults("lose_response", "ok", "lose_response")  # POST, its re-read GET, POST again
    with pytest.raises(MAASUnavailable):
        await maas_site.client().power_on(system_id)  # the BMC has not acted yet: not visible
    assert posts(maas_site, "power_on") == 2


@pytest_twisted.ensureDeferred
async def test_a_504_on_a_post_is_an_unknown_outcome_settled_by_reading_the_machine(maas_site: MAASSite) -> None:
    system_id = pick(maas_site.sim, Status.DEPLOYED)
    maas_site.sim.set_faults(error_status=504)
    maas_site.sim.script_faults("error")  # the proxy gave up before MAAS saw it
    machine = await maas_site.client().release(system_id)
    assert machine["status_name"] == "Releasing"
    assert posts(maas_site, "release") == 2


@pytest_twisted.ensureDeferred
async def test_a_slow_maas_times_out_each_try(maas_site: MAASSite) -> None:
    maas_site.sim.set_faults(latency=0.5)
    client = maas_site.client(timeout=0.1, retry=RetryPolicy(2, 0.01, 0.01))
    with pytest.raises(MAASUnavailable) as info:
        await client.whoami()
    assert "no answer within 0.1s" in info.value.message


@pytest_twisted.ensureDeferred
async def test_errors_are_maas_errors_with_a_status_and_no_secret(maas_site: MAASSite) -> None:
    client = maas_site.client()
    for call in (client.get_machine("nosuch"), client.deploy(pick(maas_site.sim, Status.NEW))):
        with pytest.raises(MAASError) as info:
            await call
        assert info.value.status in (404, 409)
        assert "s3cr3t" not in str(info.value) and "Tk7tokenkey" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_user_data_must_be_bytes(maas_site: MAASSite) -> None:
    with pytest.raises(TypeError):
        await maas_site.client().deploy(pick(maas_site.sim, Status.READY), user_data="aGk=")  # type: ignore[arg-type]

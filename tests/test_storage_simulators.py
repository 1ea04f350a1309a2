"""
The Waldur and HPC User API simulators: Waldur's pagination, filters and
auth; OAuth2 client credentials; the twistd plugins as real processes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
import treq
from twisted.application.service import IService, IServiceMaker
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.python import usage

from simulators.hpcuser import HpcUserSimulator, auto_gid
from simulators.hpcuser.tap import Options as HpcOptions
from simulators.hpcuser.tap import makeService as make_hpc_service
from simulators.waldur import WaldurSimulator, generate
from simulators.waldur.tap import Options as WaldurOptions
from simulators.waldur.tap import makeService as make_waldur_service
from tests.daemons import TWISTD, Daemon, eventually, free_port
from tests.storagehelpers import PEER_SKIP

TOKEN = "sim-token"
ORIGIN = "http://waldur.test"


def get(sim: WaldurSimulator, path: str, token: str | None = TOKEN, **query: Any) -> Any:
    params = {k: v if isinstance(v, list) else [str(v)] for k, v in query.items()}
    headers = {"authorization": f"Token {token}"} if token else {}
    return sim.handle("GET", path, params, headers, ORIGIN)


RESOURCES = "/api/marketplace-resources/"


def test_the_same_seed_gives_the_same_data() -> None:
    assert generate(50, seed=3).resources == generate(50, seed=3).resources
    assert generate(50, seed=3).resources != generate(50, seed=4).resources


def test_lists_paginate_as_waldur_ten_by_default_at_most_300() -> None:
    sim = WaldurSimulator.create(token=TOKEN, resources=700)
    first = get(sim, RESOURCES)
    assert first.status == 200 and len(first.json()) == 10 and first.header("X-Result-Count") == "700"
    assert len(get(sim, RESOURCES, page_size=500).json()) == 300
    assert len(get(sim, RESOURCES, page_size="zero").json()) == 10
    link = get(sim, RESOURCES, page=2, page_size=300).header("Link")
    assert f'<{ORIGIN}{RESOURCES}?page_size=300>; rel="first"' in link
    assert f'<{ORIGIN}{RESOURCES}?page=3&page_size=300>; rel="next"' in link and 'rel="prev"' in link
    assert 'rel="next"' not in get(sim, RESOURCES, page="last", page_size=300).header("Link")


@pytest.mark.parametrize("page", ["0", "4", "-1", "1.0", "x"])
def test_a_page_out_of_range_is_waldurs_404(page: str) -> None:
    answer = get(WaldurSimulator.create(token=TOKEN, resources=30), RESOURCES, page=page)
    assert (answer.status, answer.json()) == (404, {"detail": "Invalid page."})


def test_offering_slug_takes_a_comma_separated_list_and_the_last_parameter_wins() -> None:
    sim = WaldurSimulator.create(token=TOKEN, resources=200)
    count = lambda *slugs: sum(r["offering_slug"] in slugs for r in sim.data.resources)  # noqa: E731
    assert get(sim, RESOURCES, offering_slug="capstor,vast").header("X-Result-Count") == str(count("capstor", "vast"))
    assert get(sim, RESOURCES, offering_slug=["capstor", "vast"]).header("X-Result-Count") == str(count("vast"))


def test_state_filters_and_repeats_combine() -> None:
    sim = WaldurSimulator.create(token=TOKEN, resources=200)
    answer = get(sim, RESOURCES, state=["Erred", "Creating"], page_size=300)
    assert {r["state"] for r in answer.json()} == {"Erred", "Creating"}


def test_resources_are_newest_first_with_the_origin_in_their_urls() -> None:
    records = get(WaldurSimulator.create(token=TOKEN, resources=30), RESOURCES, page_size=30).json()
    assert [r["created"] for r in records] == sorted((r["created"] for r in records), reverse=True)
    assert records[0]["url"].startswith(f"{ORIGIN}/api/marketplace-resources/")


def test_requests_need_the_token() -> None:
    sim = WaldurSimulator.create(token=TOKEN, resources=3)
    assert get(sim, RESOURCES, token=None).json() == {"detail": "Authentication credentials were not provided."}
    answer = get(sim, RESOURCES, token="wrong")
    assert (answer.status, answer.json()) == (401, {"detail": "Invalid token."})


def test_offering_customers_are_those_with_resources_in_it() -> None:
    sim = WaldurSimulator.create(token=TOKEN, resources=300, customers=30)
    offering = sim.data.offerings[1]
    answer = get(sim, f"/api/marketplace-provider-offerings/{offering.uuid}/customers/", page_size=300)
    slugs = {c["slug"] for c in answer.json()}
    assert slugs == {r["customer_slug"] for r in sim.data.resources if r["offering_uuid"] == offering.uuid}
    assert set(answer.json()[0]) == {"uuid", "name", "slug", "abbreviation", "phone_number", "email"}
    assert get(sim, "/api/marketplace-provider-offerings/" + "0" * 32 + "/customers/").status == 404


@pytest.mark.skipif(PEER_SKIP is not None, reason=PEER_SKIP or "")
def test_waldurs_own_api_client_parses_every_generated_record() -> None:
    from waldur_api_client.models.provider_offering_customer import ProviderOfferingCustomer
    from waldur_api_client.models.resource import Resource

    sim = WaldurSimulator.create(token=TOKEN, resources=300)
    for record in get(sim, RESOURCES, page_size=300).json():
        parsed = Resource.from_dict(record)
        assert parsed.uuid.hex == record["uuid"]
    for customer in sim.data.customers:
        ProviderOfferingCustomer.from_dict(customer.as_offering_customer())


def hpc_post(sim: HpcUserSimulator, form: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return sim.handle("POST", "/oauth2/token", {}, headers or {}, urlencode(form).encode())


def test_the_token_endpoint_speaks_client_credentials() -> None:
    sim = HpcUserSimulator(Clock(), client_id="c", client_secret="s", token_lifetime=60)
    good = hpc_post(sim, {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s", "scope": "openid"})
    assert good.status == 200 and good.json()["expires_in"] == 60 and good.json()["token_type"] == "Bearer"
    basic = base64.b64encode(b"c:s").decode()
    assert hpc_post(sim, {"grant_type": "client_credentials"}, {"authorization": f"Basic {basic}"}).status == 200
    assert hpc_post(sim, {"grant_type": "client_credentials", "client_id": "c", "client_secret": "x"}).json()["error"] == "invalid_client"
    assert hpc_post(sim, {"grant_type": "password", "client_id": "c", "client_secret": "s"}).status == 400


def test_projects_need_a_live_token() -> None:
    clock = Clock()
    sim = HpcUserSimulator(clock, client_id="c", client_secret="s", token_lifetime=60, missing={"ghost"})
    token = hpc_post(sim, {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}).json()["access_token"]
    ask = lambda: sim.handle("GET", "/api/v1/export/waldur/projects", {"projects": ["p1", "ghost"]}, {"authorization": f"Bearer {token}"}, b"")  # noqa: E731
    assert ask().json() == {"projects": [{"posixName": "p1", "unixGid": auto_gid("p1"), "name": "P1", "status": "active"}]}
    clock.advance(61)
    assert ask().status == 401


def test_the_plugins_are_found_by_twistd() -> None:
    import twisted.plugins

    names = {p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)}
    assert {"waldur-sim", "hpcuser-sim"} <= names


def test_the_simulators_options_refuse_bad_values() -> None:
    for argv in (["--resources", "-1"], ["--latency", "-2"], ["--token", " "], ["--customers", "0"]):
        with pytest.raises(usage.UsageError):
            WaldurOptions().parseOptions(argv)
    with pytest.raises(usage.UsageError):
        HpcOptions().parseOptions(["--token-lifetime", "0"])
    options = WaldurOptions()
    options.parseOptions(["--resources", "5"])
    assert IService.providedBy(make_waldur_service(options))
    hpc = HpcOptions()
    hpc.parseOptions(["--missing", "ghost"])
    assert hpc["missing"] == ["ghost"] and IService.providedBy(make_hpc_service(hpc))


@pytest_twisted.ensureDeferred
async def test_twistd_runs_both_simulators(tmp_path: Path) -> None:
    waldur_port, hpc_port = free_port(), free_port()
    waldur = Daemon("waldur-sim", [TWISTD, "-n", "--pidfile=", "waldur-sim", "--listen", f"tcp:{waldur_port}:interface=127.0.0.1",
                                   "--resources", "40", "--token", TOKEN], tmp_path / "waldur-sim.log")
    hpc = Daemon("hpcuser-sim", [TWISTD, "-n", "--pidfile=", "hpcuser-sim", "--listen", f"tcp:{hpc_port}:interface=127.0.0.1",
                                 "--client-id", "c", "--client-secret", "s"], tmp_path / "hpcuser-sim.log")
    waldur.start()
    hpc.start()
    try:
        async def waldur_up() -> Any:
            assert waldur.running, waldur.log_text()[-2000:]
            response = await treq.get(f"http://127.0.0.1:{waldur_port}/api/marketplace-resources/?page_size=100",
                                      headers={"Authorization": f"Token {TOKEN}"}, timeout=2)
            return response.code == 200 and (response, await response.json())

        response, records = await eventually(waldur_up, 30, "twistd waldur-sim to answer")
        assert len(records) == 40 and response.headers.getRawHeaders("x-result-count") == ["40"]

        async def hpc_up() -> Any:
            assert hpc.running, hpc.log_text()[-2000:]
            response = await treq.post(f"http://127.0.0.1:{hpc_port}/oauth2/token", timeout=2,
                                       data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"})
            return response.code == 200 and await response.json()

        token = (await eventually(hpc_up, 30, "twistd hpcuser-sim to answer"))["access_token"]
        projects = await (await treq.get(f"http://127.0.0.1:{hpc_port}/api/v1/export/waldur/projects?projects=x",
                                         headers={"Authorization": f"Bearer {token}"})).json()
        assert projects["projects"][0]["unixGid"] == auto_gid("x")
    finally:
        assert await waldur.stop() == 0
        assert await hpc.stop() == 0
    assert json.dumps(records).count('"offering_slug"') == 40

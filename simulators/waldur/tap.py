"""``twistd waldur-sim``: a simulated Waldur marketplace on an endpoint."""

from __future__ import annotations

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

from simulators.waldur.web import make_site
from simulators.waldur.state import WaldurSimulator

DEFAULT_LISTEN = "tcp:8079:interface=127.0.0.1"
DEFAULT_TOKEN = "waldur-sim-token"

log = Logger()


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--resources N] [--seed N] [--token TOKEN] [--latency SECONDS]"
    longdesc = (
        "A simulated Waldur Mastermind serving marketplace storage resources and offering customers "
        "(offerings capstor, vast and iopsstor) for tests, benchmarks and demos."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "endpoint to serve on"],
        ["resources", "r", 100, "how many marketplace resources to generate", int],
        ["customers", None, None, "how many customers (default: one per 40 resources, at least 3)", int],
        ["seed", None, 0, "random seed for the data", int],
        ["token", None, DEFAULT_TOKEN, "the API token clients must send (Authorization: Token ...)"],
        ["latency", None, 0.0, "seconds to wait before every answer", float],
    ]

    def postOptions(self) -> None:  # noqa: N802
        if self["resources"] < 0:
            raise usage.UsageError("--resources must be 0 or more")
        if self["customers"] is not None and self["customers"] < 1:
            raise usage.UsageError("--customers must be at least 1")
        if self["latency"] < 0:
            raise usage.UsageError("--latency must be 0 or more")
        if not self["token"].strip():
            raise usage.UsageError("--token must not be empty")


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    simulator = WaldurSimulator.create(
        token=options["token"], resources=options["resources"], seed=options["seed"], customers=options["customers"]
    )
    simulator.faults.latency = options["latency"]
    simulator.record_requests = False  # a long-running daemon must not grow without bound
    log.info(
        "Waldur simulator: {resources} resources, {customers} customers, offerings {offerings}",
        resources=len(simulator.data.resources),
        customers=len(simulator.data.customers),
        offerings=", ".join(o.slug for o in simulator.data.offerings),
    )
    top = MultiService()
    strports.service(options["listen"], make_site(simulator, reactor)).setServiceParent(top)
    return top

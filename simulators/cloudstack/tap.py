"""``twistd cloudstack-sim``: a simulated CloudStack API on an endpoint."""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from simulators._serve import StopSimulator, named_values
from simulators.cloudstack.faults import Faults
from simulators.cloudstack.model import Limits
from simulators.cloudstack.state import CloudStackSimulator
from simulators.cloudstack.web import make_site

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] --api-key KEY (--secret-key SECRET | --secret-key-file PATH) [--job-duration S]"
    longdesc = (
        "A simulated CloudStack API (volumes, async jobs, tags) for tests and demos, at /client/api. "
        "Its /_sim/faults control interface is unauthenticated and test-only: listen on loopback."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "endpoint to serve on"],
        ["api-key", None, None, "the API key clients sign with"],
        ["secret-key", None, None, "the secret key"],
        ["secret-key-file", None, None, "file holding the secret key"],
        ["job-duration", None, 2.0, "seconds each async job takes", float],
        ["max-volumes", None, None, "most data volumes in all (532 beyond)", int],
        ["capacity-gb", None, None, "GiB of data volumes in all (533 beyond)", int],
        ["seed", None, 0, "random seed for ids and faults", int],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["faults"] = []

    def opt_fault(self, value: str) -> None:
        """NAME=JSON for one of Faults' fields, e.g. error_rate=0.1 (repeatable)."""
        self["faults"].append(value)

    def postOptions(self) -> None:  # noqa: N802
        if not self["api-key"]:
            raise usage.UsageError("--api-key is required")
        if (self["secret-key"] is None) == (self["secret-key-file"] is None):
            raise usage.UsageError("give exactly one of --secret-key and --secret-key-file")
        secret = self["secret-key"]
        if secret is None:
            try:
                secret = Path(self["secret-key-file"]).read_text().strip()
            except OSError as e:
                raise usage.UsageError(f"cannot read {self['secret-key-file']}: {e.strerror}") from None
        if not secret:
            raise usage.UsageError("the secret key is empty")
        self["secret"] = secret
        if self["job-duration"] < 0:
            raise usage.UsageError("--job-duration must be 0 or more")
        self["parsed_faults"] = named_values(self["faults"], "fault", {f.name for f in attrs.fields(Faults)})


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    simulator = CloudStackSimulator.create(
        reactor,
        api_key=options["api-key"],
        secret_key=options["secret"],
        job_duration=options["job-duration"],
        limits=Limits(max_volumes=options["max-volumes"], capacity_gb=options["capacity-gb"]),
        seed=options["seed"],
    )
    try:
        simulator.set_faults(**options["parsed_faults"])
    except (TypeError, ValueError) as e:
        raise usage.UsageError(str(e)) from None
    top = MultiService()
    strports.service(options["listen"], make_site(simulator, reactor)).setServiceParent(top)
    # Typed as the IService it is: Twisted's Service is unannotated, and only calls through Twisted's own types are exempt.
    stopper: IService = StopSimulator(simulator)
    stopper.setServiceParent(top)
    return top

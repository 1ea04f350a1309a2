"""``twistd maas-sim``: a simulated MAAS on an endpoint."""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from simulators._serve import StopSimulator, named_values
from simulators.maas.faults import Durations, Faults
from simulators.maas.state import MAASSimulator
from simulators.maas.web import make_site

DEFAULT_LISTEN = "tcp:5240:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--machines N] (--api-key KEY | --api-key-file PATH) [--seed N] [--fast]"
    longdesc = (
        "A simulated MAAS (REST API 2.0) for tests and demos. Its /_sim/ control interface is "
        "unauthenticated and test-only: listen on loopback."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "endpoint to serve on"],
        ["machines", "m", 10, "how many machines to generate", int],
        ["api-key", None, None, "the admin's API key, consumer_key:token_key:token_secret"],
        ["api-key-file", None, None, "file holding the API key"],
        ["seed", None, 0, "random seed for machines and faults", int],
    ]
    optFlags = [["fast", None, "short durations (under a second) for demos"]]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["durations"] = []
        self["faults"] = []

    def opt_duration(self, value: str) -> None:
        """NAME=SECONDS for one of Durations' fields, e.g. deploying=5 (repeatable)."""
        self["durations"].append(value)

    def opt_fault(self, value: str) -> None:
        """NAME=JSON for one of Faults' fields, e.g. error_rate=0.1 (repeatable)."""
        self["faults"].append(value)

    def postOptions(self) -> None:  # noqa: N802
        if (self["api-key"] is None) == (self["api-key-file"] is None):
            raise usage.UsageError("give exactly one of --api-key and --api-key-file")
        key = self["api-key"]
        if key is None:
            try:
                key = Path(self["api-key-file"]).read_text().strip()
            except OSError as e:
                raise usage.UsageError(f"cannot read {self['api-key-file']}: {e.strerror}") from None
        parts = key.split(":")
        if len(parts) != 3 or not all(parts):
            raise usage.UsageError("the API key must be consumer_key:token_key:token_secret")
        self["key"] = key
        if self["machines"] < 0:
            raise usage.UsageError("--machines must be 0 or more")
        durations = Durations.fast() if self["fast"] else Durations()
        changes = named_values(self["durations"], "duration", {f.name for f in attrs.fields(Durations)})
        try:
            self["parsed_durations"] = attrs.evolve(durations, **{k: float(v) for k, v in changes.items()})
            self["parsed_faults"] = named_values(self["faults"], "fault", {f.name for f in attrs.fields(Faults)})
        except (TypeError, ValueError) as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    simulator = MAASSimulator.create(
        reactor, machines=options["machines"], api_key=options["key"], seed=options["seed"], durations=options["parsed_durations"]
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

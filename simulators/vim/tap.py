"""``twistd vim-sim``: a simulated VIM (infrastructure from templates, requests that take time) on an endpoint."""

from __future__ import annotations

import attrs
from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from simulators._serve import StopSimulator, named_values
from simulators.vim.faults import Faults
from simulators.vim.state import VimSimulator
from simulators.vim.web import make_site

DEFAULT_LISTEN = "tcp:8090:interface=127.0.0.1"


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"not a number of seconds: {value!r}") from None
    if not seconds >= 0:
        raise ValueError(f"must be 0 or more seconds, not {value!r}")
    return seconds


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, not {value!r}")
    return number


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--create-duration S] [--delete-duration S] [--capacity N] [--fault NAME=JSON ...]"
    longdesc = (
        "A simulated VIM for tests and demos: infrastructure created from 'simulated' templates (a Heat-like YAML) "
        "through a JSON API at /v1, with create and delete requests that take time and can fail with each of "
        "Ignition's failure codes.  State lasts as long as the process.  Its /_sim/faults control interface is "
        "unauthenticated and test-only: listen on loopback."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "endpoint to serve on"],
        ["create-duration", None, 3.0, "seconds a create takes (a template's simulation.create_duration overrides it)", _seconds],
        ["delete-duration", None, 1.0, "seconds a delete takes (a template's simulation.delete_duration overrides it)", _seconds],
        ["capacity", None, None, "most infrastructures at once (INSUFFICIENT_CAPACITY beyond; default: no limit)", _count],
        ["seed", None, None, "random seed for ids and faults (default: random)", int],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["faults"] = []

    def opt_fault(self, value: str) -> None:
        """NAME=JSON for one of Faults' fields (error_rate, error_status, latency, script), e.g. error_rate=0.1 (repeatable)."""
        self["faults"].append(value)

    def postOptions(self) -> None:  # noqa: N802
        parsed = named_values(self["faults"], "fault", {f.name for f in attrs.fields(Faults)})
        try:
            Faults(**parsed)
        except (TypeError, ValueError) as e:
            raise usage.UsageError(f"--fault: {e}") from None
        self["parsed_faults"] = parsed


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    simulator = VimSimulator.create(
        reactor,
        create_duration=options["create-duration"],
        delete_duration=options["delete-duration"],
        capacity=options["capacity"],
        faults=Faults(**options["parsed_faults"]),
        seed=options["seed"],
    )
    top = MultiService()
    strports.service(options["listen"], make_site(simulator, reactor)).setServiceParent(top)
    # Typed as the IService it is: Twisted's Service is unannotated, and only calls through Twisted's own types are exempt.
    stopper: IService = StopSimulator(simulator)
    stopper.setServiceParent(top)
    return top

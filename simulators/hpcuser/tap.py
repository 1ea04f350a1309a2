"""``twistd hpcuser-sim``: a simulated CSCS HPC User API with its OAuth2 token endpoint."""

from __future__ import annotations

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from simulators.hpcuser.state import HpcUserSimulator
from simulators.hpcuser.web import make_site

DEFAULT_LISTEN = "tcp:8078:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--client-id ID] [--client-secret SECRET] [--token-lifetime SECONDS] [--missing NAME]..."
    longdesc = (
        "A simulated HPC User API: OAuth2 client credentials at /oauth2/token and project GIDs at "
        "/api/v1/export/waldur/projects (every project gets a deterministic GID unless named with --missing)."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "endpoint to serve on"],
        ["client-id", None, "outpost", "the OAuth2 client id accepted"],
        ["client-secret", None, "hpc-sim-secret", "the OAuth2 client secret accepted"],
        ["token-lifetime", None, 3600, "expires_in of issued tokens, seconds", int],
        ["latency", None, 0.0, "seconds to wait before every answer", float],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["missing"] = []

    def opt_missing(self, name: str) -> None:
        """A project the API does not know (repeatable)."""
        self["missing"].append(name)

    def postOptions(self) -> None:  # noqa: N802
        if self["token-lifetime"] < 1:
            raise usage.UsageError("--token-lifetime must be at least 1")
        if self["latency"] < 0:
            raise usage.UsageError("--latency must be 0 or more")


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    simulator = HpcUserSimulator(
        reactor,
        client_id=options["client-id"],
        client_secret=options["client-secret"],
        token_lifetime=options["token-lifetime"],
        missing=set(options["missing"]),
    )
    simulator.faults.latency = options["latency"]
    simulator.record_requests = False  # a long-running daemon must not grow without bound
    top = MultiService()
    strports.service(options["listen"], make_site(simulator, reactor)).setServiceParent(top)
    return top

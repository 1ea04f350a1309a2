"""``twistd regiond``: options and the service tree."""

from __future__ import annotations

import crochet
from twisted.application.service import IService, MultiService
from twisted.python import usage

from outpost.config import ConfigError, read_config_file
from regiond.config import load_config
from regiond.service import RegionService


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = "The Outpost region daemon: state in PostgreSQL, HTTP APIs, RPC to clusters."
    optParameters = [["config", "c", None, "YAML configuration file (default: built-in defaults)"]]

    def postOptions(self) -> None:  # noqa: N802
        try:
            self["parsed"] = load_config(read_config_file(self["config"]))
        except ConfigError as e:
            raise usage.UsageError(f"{self['config'] or 'defaults'}: {e}") from None


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    crochet.no_setup()  # twistd owns the reactor
    top = MultiService()
    RegionService(reactor, options["parsed"]).setServiceParent(top)
    return top

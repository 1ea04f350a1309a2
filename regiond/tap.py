"""``twistd regiond``: options and the service tree."""

from __future__ import annotations

import crochet
from twisted.application.service import IService, MultiService
from twisted.python import usage

from outpost.config import ConfigError, read_config_file
from outpost.logs import use_log_format
from regiond.config import load_config
from regiond.service import RegionService


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = "The Outpost region daemon: state in PostgreSQL, HTTP APIs, RPC to clusters."
    optParameters = [
        ["config", "c", None, "YAML configuration file (default: built-in defaults)"],
        ["log-format", None, "text", "text, or json for one JSON object per line on standard output"],
    ]

    def postOptions(self) -> None:  # noqa: N802
        use_log_format(self, self["log-format"])
        try:
            self["parsed"] = load_config(read_config_file(self["config"]))
        except ConfigError as e:
            raise usage.UsageError(f"{self['config'] or 'defaults'}: {e}") from None


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    crochet.no_setup()  # twistd owns the reactor
    top = MultiService()
    region: IService = RegionService(reactor, options["parsed"])
    region.setServiceParent(top)
    return top

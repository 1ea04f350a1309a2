"""``twistd regiond``: options and the service tree."""

from __future__ import annotations

from pathlib import Path

import crochet
from twisted.application.service import IService, MultiService
from twisted.python import usage

from outpost.config import ConfigError
from regiond.config import load_config
from regiond.service import RegionService


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = "The Outpost region daemon: state in PostgreSQL, HTTP APIs, RPC to clusters."
    optParameters = [["config", "c", None, "YAML configuration file (default: built-in defaults)"]]

    def postOptions(self) -> None:  # noqa: N802
        path = self["config"]
        text = ""
        if path is not None:
            try:
                text = Path(path).read_text()
            except OSError as e:
                raise usage.UsageError(f"cannot read config {path}: {e.strerror}") from None
        try:
            self["parsed"] = load_config(text)
        except ConfigError as e:
            raise usage.UsageError(f"{path or 'defaults'}: {e}") from None


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    crochet.no_setup()  # twistd owns the reactor
    top = MultiService()
    RegionService(reactor, options["parsed"]).setServiceParent(top)
    return top

"""``twistd clusterd``: options and the service tree."""

from __future__ import annotations

from typing import Any, Callable, Iterable, cast

import crochet
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.web.server import Site

from clusterd.cloudstack.client import CloudStackClient
from clusterd.config import load_config
from clusterd.connector import RegionConnector
from clusterd.infrastructure.driver import DriverContext
from clusterd.infrastructure.registry import DriverRegistry
from clusterd.infrastructure.work import InfrastructureWork
from clusterd.machines import MachineWork
from clusterd.responders import ClusterResponders
from clusterd.site import DeviceFollower, SiteService
from clusterd.volumes import RealMounter, SimulatedMounter
from clusterd.volumes.work import VolumeWork
from clusterd.state import load_or_create_uuid
from outpost import __version__
from outpost.config import ConfigError, read_config_file
from outpost.logs import use_log_format
from outpost.metrics import Metrics, metrics_site_root
from outpost.secret import SecretError, SecretFile

CAPABILITIES = ("rpc/1", "cloudstack/1", "infrastructure/1")
#: Said only by a cluster with a MAAS (real or simulated), so the region syncs only those.
MAAS_CAPABILITY = "maas/1"


class Options(usage.Options):
    synopsis = "[--config FILE] [--region URL ...] [--secret-file PATH] [--name NAME] [--state-dir DIR] [--metrics ENDPOINT]"
    longdesc = "The Outpost cluster daemon: connects to every region process and does the site's work."
    optParameters = [
        ["config", "c", None, "YAML configuration file"],
        ["secret-file", None, None, "file holding the shared RPC secrets (hex, one a line, mode 0600)"],
        ["name", None, None, "this cluster's name (default: the host's short name)"],
        ["state-dir", None, None, "directory for the cluster's own state"],
        ["log-format", None, "text", "text, or json for one JSON object per line on standard output"],
        ["metrics", None, None, "serve GET /metrics on this server endpoint (e.g. tcp:9106:interface=127.0.0.1)"],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["regions"] = []

    def opt_region(self, url: str) -> None:
        """A region API URL, e.g. http://127.0.0.1:5240/ (repeatable)."""
        self["regions"].append(url)

    def postOptions(self) -> None:  # noqa: N802
        use_log_format(self, self["log-format"])
        overrides: dict[str, Any] = {
            "regions": self["regions"] or None,
            "secret_file": self["secret-file"],
            "name": self["name"],
            "state_dir": self["state-dir"],
            "metrics": {"listen": self["metrics"]} if self["metrics"] else None,
        }
        try:
            config = load_config(read_config_file(self["config"]), overrides)
        except ConfigError as e:
            raise usage.UsageError(f"{self['config'] or 'options'}: {e}") from None
        try:
            # Read now to fail fast; the connector re-reads it for every new connection.
            self["secret"] = SecretFile.load(config.secret_path)
            self["uuid"] = load_or_create_uuid(config.state_dir)
        except (SecretError, ValueError, OSError) as e:
            raise usage.UsageError(str(e)) from None
        self["parsed"] = config


def makeService(options: Options) -> IService:  # noqa: N802
    from twisted.internet import reactor

    crochet.no_setup()  # twistd owns the reactor
    return build_service(reactor, options)


def build_service(reactor: Any, options: Options) -> MultiService:
    """The cluster's service tree on `reactor` (`makeService` without taking over crochet, for tests)."""
    config = options["parsed"]
    top = MultiService()
    # This process's own registry; only built when something will serve it.
    metrics = Metrics.create(reactor) if config.metrics_listen else None
    # Each refers to the other only when called, after both exist.
    machines = MachineWork(reactor, None, region=lambda: connector.getClient())
    simulated = config.simulate_cloudstack is not None or config.simulate_devices
    mounter = SimulatedMounter(reactor) if simulated else RealMounter(reactor)
    volumes = VolumeWork(
        reactor, mounter, region=lambda: connector.getClient(), mount_root=config.mount_root, orphans=config.orphans,
        client_factory=None if metrics is None else _metered_cloudstack(reactor, metrics),
    )
    infrastructure = InfrastructureWork(
        reactor,
        DriverRegistry.discover(
            DriverContext(reactor, {}, config.state_dir / "infrastructure" / "drivers", machines=machines, volumes=volumes,
                          metrics=None if metrics is None else metrics.external),
            config.infrastructure.drivers,
        ),
        config.state_dir / "infrastructure",
        region=lambda: connector.getClient(),
        interval=config.infrastructure.interval,
        max_interval=config.infrastructure.max_interval,
    )
    # Our services are added as the IServices they are: Twisted's Service is unannotated, and
    # only calls through Twisted's own types are exempt from the typed-call check.
    site: IService = SiteService(reactor, config, machines, volumes, external_metrics=None if metrics is None else metrics.external,
                                 infrastructure=infrastructure)
    site.setServiceParent(top)
    # After the site (a simulated VIM is up before polls resume), before the connector
    # (the journal is loaded before the region can call).
    cast(IService, infrastructure).setServiceParent(top)
    if config.simulate_devices:
        follower: IService = DeviceFollower(reactor, volumes)
        follower.setServiceParent(top)
    connector = RegionConnector(
        reactor=reactor,
        region_urls=config.regions,
        secret=options["secret"],
        uuid=options["uuid"],
        name=config.name,
        version=__version__,
        capabilities=CAPABILITIES + ((MAAS_CAPABILITY,) if config.maas or config.simulate_maas else ()),
        locator_factory=lambda proto: _responders(proto, machines, volumes, infrastructure, metrics),
    )
    # Reports waiting out a backoff go at once when a region connection comes (back) up.
    connector.on_live.append(lambda: infrastructure.monitor.retry_now())
    cast(IService, connector).setServiceParent(top)
    if metrics is not None:
        metrics.add_collector(lambda: _cluster_gauges(connector, infrastructure))
        endpoint = serverFromString(reactor, config.metrics_listen)
        StreamServerEndpointService(endpoint, Site(metrics_site_root(metrics.registry))).setServiceParent(top)
    return top


def _responders(
    proto: Any, machines: MachineWork, volumes: VolumeWork, infrastructure: InfrastructureWork, metrics: Metrics | None
) -> ClusterResponders:
    # The connector builds its RPC factories itself; every protocol passes
    # through here before it connects, so this is where it gets the metrics.
    if metrics is not None:
        proto.metrics = metrics.rpc
    return ClusterResponders(machines, volumes, infrastructure)


def _metered_cloudstack(reactor: Any, metrics: Metrics) -> Callable[[dict[str, Any]], CloudStackClient]:
    def make(c: dict[str, Any]) -> CloudStackClient:
        return CloudStackClient(reactor, c["api_url"], c["api_key"], c["secret_key"], metrics=metrics.external)

    return make



def _cluster_gauges(connector: RegionConnector, infrastructure: InfrastructureWork) -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "outpost_cluster_region_connections", "Live, authenticated RPC connections to region processes",
        value=len(connector.live),
    )
    yield GaugeMetricFamily(
        "outpost_cluster_journal_undelivered",
        "Infrastructure task completions in the cluster journal that no region has acknowledged yet",
        value=infrastructure.undelivered_count,
    )
    yield GaugeMetricFamily(
        "outpost_cluster_infrastructure_tasks_monitored", "Accepted infrastructure requests the cluster is polling until they end",
        value=infrastructure.monitored_count,
    )

"""
The region's parts, wired together once.

`RegionApp` holds the stores, the connection registry and the domain
services, and makes the RPC factory and the HTTP resource from them.
`regiond.service.RegionService` uses it with real listeners; tests use it
with the same wiring, so they test what runs.

The RPC factory exists before this process is registered (its port decides
the registration), so the registrar is attached afterwards by
`attach_process`, before any cluster can have authenticated.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from outpost import __version__
from outpost.metrics import Metrics
from regiond.api.events import EventsAPI
from regiond.api.openapi import openapi_route
from regiond.api.router import ApiResource, Observer, Route
from regiond.api.stream import EventFeed, EventStreamAPI
from regiond.api.v1 import RegionAPI
from regiond.clusters import ClusterStore, RegionProcessStore
from regiond.db import Database
from regiond.infrastructure import InfrastructureAPI, InfrastructureService, InfrastructureStore
from regiond.machines.api import MachinesAPI
from regiond.machines.service import MachineService
from regiond.machines.store import MachineStore
from regiond.machines.sync import InventorySync
from regiond.metrics import RegionGauges, WebhookMetrics, metrics_route
from regiond.rpc.registrar import ClusterRegistrar
from regiond.rpc.registry import ConnectionRegistry
from regiond.rpc.responders import RegionResponders
from regiond.storage import StorageConfig, StorageService
from regiond.tokens import TokenStore
from regiond.volumes.api import VolumesAPI
from regiond.volumes.config import CloudStackConfigStore
from regiond.volumes.service import VolumeService
from regiond.volumes.store import VolumeJobStore
from regiond.webhooks import Webhook, WebhookDispatcher
from rpc.protocol import REGION, RPCFactory, RPCProtocol, SecretSource

__all__ = ["RegionApp", "MAAS_CAPABILITY"]

#: What a cluster with a MAAS (real or simulated) says it can do when it registers.
MAAS_CAPABILITY = "maas/1"
#: What a cluster able to do volume work says when it registers.
CLOUDSTACK_CAPABILITY = "cloudstack/1"

log = Logger()


@attrs.define
class RegionApp:
    reactor: Any
    db: Database
    webhook_secret: bytes | None = attrs.field(default=None, repr=False)
    #: The region's RPC secret (or its secret file, read at each use); CloudStack credentials are
    #: encrypted at rest with a key derived from it.
    region_secret: bytes | SecretSource = attrs.field(default=b"", repr=False)
    storage_config: StorageConfig | None = None
    #: This process's metrics; None (tests) records nothing and serves no /metrics.
    metrics: Metrics | None = None
    #: Whether GET /metrics needs a token (config ``metrics.require_token``).
    metrics_require_token: bool = False
    #: Outgoing webhooks (config ``webhooks``, secrets read); delivered by `webhook_dispatcher` while it leads.
    webhooks: tuple[Webhook, ...] = ()
    registry: ConnectionRegistry = attrs.field(init=False)
    #: The one LISTEN for new events in this process: wakes event streams and webhook delivery.
    event_feed: EventFeed = attrs.field(init=False)
    webhook_dispatcher: WebhookDispatcher | None = attrs.field(init=False, default=None)
    clusters: ClusterStore = attrs.field(init=False)
    processes: RegionProcessStore = attrs.field(init=False)
    tokens: TokenStore = attrs.field(init=False)
    machines: MachineStore = attrs.field(init=False)
    machine_service: MachineService = attrs.field(init=False)
    sync: InventorySync = attrs.field(init=False)
    process_id: int | None = attrs.field(init=False, default=None)
    registrar: ClusterRegistrar | None = attrs.field(init=False, default=None)
    volume_service: VolumeService = attrs.field(init=False)
    infrastructure_service: InfrastructureService = attrs.field(init=False)
    storage: StorageService | None = attrs.field(init=False, default=None)
    gauges: RegionGauges | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.registry = ConnectionRegistry(self.reactor)
        self.clusters = ClusterStore(self.db)
        self.processes = RegionProcessStore(self.db)
        self.tokens = TokenStore(self.db)
        self.event_feed = EventFeed.for_database(self.db, self.reactor)
        if self.webhooks:
            self.webhook_dispatcher = WebhookDispatcher.create(
                self.reactor, self.db, self.event_feed, self.webhooks,
                metrics=None if self.metrics is None else WebhookMetrics(self.metrics.registry),
            )
        self.machines = MachineStore(self.db)
        gather_metrics = None if self.metrics is None else self.metrics.gather
        self.machine_service = MachineService(self.reactor, self.db, self.registry, self.machines, gather_metrics=gather_metrics)
        self.sync = InventorySync(
            self.reactor, self.registry, self.machines, wants=self._has_maas,
            metrics=None if self.metrics is None else self.metrics.sync, gather_metrics=gather_metrics,
        )
        if self.metrics is not None:
            if self.db.metrics is None:
                self.db.metrics = self.metrics.queries
            self.gauges = gauges = RegionGauges(self.registry, self.db)
            self.metrics.add_collector(gauges.collect)
        if self.storage_config is not None:
            self.storage = StorageService(self.reactor, self.storage_config, metrics=None if self.metrics is None else self.metrics.external)
        self.volume_service = VolumeService(
            self.registry, CloudStackConfigStore(self.db, self.region_secret), VolumeJobStore(self.db)
        )
        self.infrastructure_service = InfrastructureService(self.registry, self.clusters, InfrastructureStore(self.db))

    def rpc_factory(self, secret: bytes | SecretSource, ident: str, **kwargs: Any) -> RPCFactory:
        if self.metrics is not None:
            kwargs.setdefault("metrics", self.metrics.rpc)
        return RPCFactory(secret=secret, role=REGION, clock=self.reactor, ident=ident, locator_factory=self._responders, **kwargs)

    def _responders(self, proto: RPCProtocol) -> RegionResponders:
        if self.registrar is None:
            raise RuntimeError("attach_process() must come before connections are served")
        return RegionResponders(proto, self.registrar, self.machine_service, self.volume_service, infrastructure=self.infrastructure_service)

    def attach_process(self, process_id: int) -> None:
        self.process_id = process_id
        self.registrar = ClusterRegistrar(
            self.registry, self.clusters, self.processes, process_id, on_registered=self._registered, on_lost=self._lost
        )

    async def stop_events(self) -> None:
        """End the event streams and webhook delivery, and close their connections."""
        if self.webhook_dispatcher is not None:
            await self.webhook_dispatcher.close()
        await self.event_feed.stop()

    def _has_maas(self, uuid: str) -> bool:
        return self.registrar is not None and self.registrar.has_capability(uuid, MAAS_CAPABILITY)

    def _lost(self, uuid: str) -> None:
        Deferred.fromCoroutine(self.machine_service.cluster_lost(uuid)).addErrback(
            lambda f: log.failure("Recording interrupted actions of {uuid} failed", f, uuid=uuid)
        )

    def _registered(self, uuid: str) -> None:
        if self.registry.connection_count(uuid) == 1 and self.registrar is not None and self.registrar.has_capability(uuid, CLOUDSTACK_CAPABILITY):
            # The cluster learns its CloudStack configuration from the region, on every (re)connection.
            Deferred.fromCoroutine(self.volume_service.push_config(uuid)).addErrback(
                lambda f: log.failure("Sending {uuid} its CloudStack configuration failed", f, uuid=uuid)
            )
        # A cluster that (re)connects gets its inventory synced at once, as
        # MAAS does for a rack controller, rather than at the next full sync.
        if self.registry.connection_count(uuid) == 1 and self._has_maas(uuid):
            self.sync.sync_cluster(uuid).addErrback(lambda f: log.failure("Sync of {uuid} on connect failed", f, uuid=uuid))

    def routes(self) -> list[Route]:
        assert self.process_id is not None, "attach_process() first"
        routes = [
            *RegionAPI(self.reactor, self.db, self.clusters, self.processes, self.registry, self.process_id).routes(),
            *MachinesAPI(self.clusters, self.machines, self.machine_service, self.sync, self.webhook_secret).routes(),
            *VolumesAPI(self.clusters, self.volume_service).routes(),
            *InfrastructureAPI(self.clusters, self.infrastructure_service).routes(),
            *EventsAPI(self.db).routes(),
            *EventStreamAPI(self.event_feed, self.db, self.reactor).routes(),
            *(self.storage.routes() if self.storage is not None else []),
        ]
        if self.metrics is not None:
            routes.append(metrics_route(self.metrics, self.gauges, require_token=self.metrics_require_token))
        routes.append(openapi_route(routes, __version__))
        return routes

    def resource(self, observer: Observer | None = None) -> ApiResource:
        http_metrics = None if self.metrics is None else self.metrics.http
        return ApiResource(self.routes(), self.tokens.verify, observer=observer, metrics=http_metrics)

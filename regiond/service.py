"""
The region process: one service that brings the parts up in order and down
in reverse.

Start: secret → PostgreSQL (embedded or DSN) → migrations → RPC listener →
register this process (with its real RPC port) → HTTP listener → heartbeat.
Stop: the reverse, waiting for each step, so a restart finds a clean state.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Site

from outpost.metrics import Metrics
from outpost.secret import SecretFile
from outpost.secret import load_secret
from regiond.app import RegionApp
from regiond.clusters import ClusterStore, RegionProcessStore
from regiond.config import RegionConfig
from regiond.db import Database, EmbeddedPostgres, migrate
from regiond.leader import Leadership
from regiond.machines.sync import SyncLoops
from regiond.rpc.registrar import ClusterRegistrar
from regiond.rpc.registry import ConnectionRegistry
from regiond.volumes.config import CredentialResealer
from regiond.webhooks import load_webhooks, webhook_leadership

__all__ = ["RegionService", "HEARTBEAT_INTERVAL"]

log = Logger()

HEARTBEAT_INTERVAL = 30.0
#: The advisory lock whose holder runs the inventory sync ("maassync").
SYNC_LOCK_KEY = 0x6D61617373796E63


def advertised_host(configured: str | None, listening: Any) -> str:
    """The host clusters should dial to reach this process's RPC listener."""
    if configured:
        return configured
    host = getattr(listening, "host", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return host


@attrs.define
class RegionService(Service):
    reactor: Any
    config: RegionConfig
    registry: ConnectionRegistry = attrs.field(init=False)
    db: Database | None = attrs.field(init=False, default=None)
    api_url: str | None = attrs.field(init=False, default=None)
    _postgres: EmbeddedPostgres | None = attrs.field(init=False, default=None)
    _ports: list[IListeningPort] = attrs.field(init=False, factory=list)
    _registrar: ClusterRegistrar | None = attrs.field(init=False, default=None)
    _heartbeat: LoopingCall | None = attrs.field(init=False, default=None)
    _process_id: int | None = attrs.field(init=False, default=None)
    _started: Deferred[None] | None = attrs.field(init=False, default=None)
    _sync_loops: SyncLoops | None = attrs.field(init=False, default=None)
    _leadership: Leadership | None = attrs.field(init=False, default=None)
    _webhook_leadership: Leadership | None = attrs.field(init=False, default=None)
    _resealer: CredentialResealer | None = attrs.field(init=False, default=None)
    app: RegionApp | None = attrs.field(init=False, default=None)
    #: This process's metrics (its own registry, never prometheus_client's global one).
    metrics: Metrics = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.registry = ConnectionRegistry(self.reactor)
        self.metrics = Metrics.create(self.reactor)

    def _webhook_secret(self) -> bytes | None:
        path = self.config.maas.webhook_secret_file
        return None if path is None else load_secret(path)

    def startService(self) -> None:  # noqa: N802
        Service.startService(self)
        self._started = Deferred.fromCoroutine(self._start())
        self._started.addErrback(self._failed_to_start)

    def _failed_to_start(self, failure: Any) -> None:
        log.failure("Region failed to start; stopping", failure)
        # Exit non-zero so a supervisor (systemd's Restart=on-failure) sees
        # the failure; stop once the reactor runs, since a start can fail
        # before it does (an unreachable DSN) and stop() would then raise.
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _start(self) -> None:
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        # Read again for every new RPC connection (and watched by the resealer): rotation needs no restart.
        secret, created = SecretFile.open_or_create(config.secret_path)
        if created:
            log.info("Created the RPC shared secret {prover} at {path}; give a copy (mode 0600) to each cluster",
                     path=str(config.secret_path), prover=secret.current().fingerprints[0])
        else:
            log.info("Using the RPC shared secrets at {path}: proving with {prover}, accepting {fingerprints}",
                     path=str(config.secret_path), prover=secret.current().fingerprints[0],
                     fingerprints=", ".join(secret.current().fingerprints))
        # Before anything starts: a webhook secret that cannot be read stops the region here, saying which.
        webhooks = tuple(load_webhooks(config.webhooks))

        dsn = config.database.dsn
        if dsn is None:
            self._postgres = EmbeddedPostgres(self.reactor, config.postgres_dir)
            await self._postgres.start()
            dsn = self._postgres.dsn
            log.info("Embedded PostgreSQL running in {path}", path=str(config.postgres_dir))
        self.db = db = await Database.connect(self.reactor, dsn, size=config.database.pool_size)
        db.metrics = self.metrics.queries
        applied = await migrate(db)
        if applied:
            log.info("Applied migrations {versions}", versions=applied)

        self.app = app = RegionApp(
            self.reactor, db, webhook_secret=self._webhook_secret(), region_secret=secret, storage_config=config.storage,
            metrics=self.metrics, metrics_require_token=config.metrics.require_token, webhooks=webhooks,
        )
        self.registry = app.registry
        self._resealer = CredentialResealer(self.reactor, app.volume_service.configs)
        self._resealer.start()
        hostname, pid = socket.gethostname(), os.getpid()
        rpc_port = await serverFromString(self.reactor, config.rpc.listen).listen(app.rpc_factory(secret, f"{hostname}:{pid}"))
        self._ports.append(rpc_port)
        rpc_address = rpc_port.getHost()
        rpc_host = advertised_host(config.rpc.advertise, rpc_address)
        self._process_id = await app.processes.register(hostname, pid, rpc_host, rpc_address.port)
        app.attach_process(self._process_id)
        self._registrar = app.registrar

        site = Site(app.resource())
        site.displayTracebacks = False
        http_port = await serverFromString(self.reactor, config.http.listen).listen(site)
        self._ports.append(http_port)
        http_address = http_port.getHost()
        self.api_url = f"http://{advertised_host(None, http_address)}:{http_address.port}/api/"

        self._sync_loops = SyncLoops(self.reactor, app.sync, config.maas.sync_interval, config.maas.transitional_interval)
        self._leadership = Leadership(
            self.reactor, dsn, SYNC_LOCK_KEY, "inventory sync", on_gain=self._sync_loops.start, on_loss=self._sync_loops.stop
        )
        self._leadership.startService()
        if app.webhook_dispatcher is not None:
            self._webhook_leadership = webhook_leadership(self.reactor, dsn, app.webhook_dispatcher)
            self._webhook_leadership.startService()

        self._heartbeat = LoopingCall(self._beat, app.processes, app.clusters)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(HEARTBEAT_INTERVAL, now=False).addErrback(
            lambda f: log.failure("Heartbeat stopped", f)
        )
        log.info(
            "Region ready: API {api_url}, RPC {rpc_host}:{rpc_port} (process {process_id})",
            api_url=self.api_url,
            rpc_host=rpc_host,
            rpc_port=rpc_address.port,
            process_id=self._process_id,
        )

    async def _beat(self, processes: RegionProcessStore, clusters: ClusterStore) -> None:
        try:
            assert self._process_id is not None, "the heartbeat starts once this process is registered"
            await processes.heartbeat(self._process_id)
            await clusters.touch(self.registry.connected_uuids())
        except Exception:
            log.failure("Heartbeat failed; will try again")

    async def _stop(self) -> None:
        if self._started is not None and not self._started.called:
            # Let a start in progress finish (or fail) before undoing it.
            try:
                await self._started
            except Exception:
                pass
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._leadership is not None:
            await self._leadership.stopService()
        if self._webhook_leadership is not None:
            await self._webhook_leadership.stopService()
        if self.app is not None:
            # Ends open event streams (clients resume with Last-Event-ID) before the listeners go.
            await self.app.stop_events()
        if self._resealer is not None:
            await self._resealer.stop()
        for port in reversed(self._ports):
            stopped = port.stopListening()  # IListeningPort allows None: stopped at once
            if stopped is not None:
                await stopped
        self._ports.clear()
        if self.app is not None and self.app.storage is not None:
            await self.app.storage.close()
        closing = []
        for connection in self.registry.all_connections():
            closing.append(connection.when_closed())
            # Connections are registered once authenticated, so they have a transport.
            assert connection.transport is not None, "a registered connection is connected"
            connection.transport.loseConnection()
        # Disconnections are recorded from connectionLost, which comes a
        # reactor turn later: wait for every one before closing the database.
        await DeferredList(closing)
        if self._registrar is not None:
            await self._registrar.settle()
        if self.db is not None:
            if self._process_id is not None:
                try:
                    await RegionProcessStore(self.db).unregister(self._process_id)
                except Exception:
                    log.failure("Could not unregister this region process")
            await self.db.close()
            self.db = None
        if self._postgres is not None:
            await self._postgres.stop()
            self._postgres = None
        log.info("Region stopped")

"""
Which driver does the work for a deployment location: drivers by
``deploymentLocation.type``.

Two kinds of driver are known:

- the built-ins (``simulated`` and ``maas``), named here in code so that a
  source checkout works without installed package metadata;
- entry points in the ``outpost.infrastructure_drivers`` group, so that a
  site adds its own driver by installing a package; an entry point of a
  built-in's name replaces the built-in.

Every factory is loaded when the registry is made.  One that fails to load
is logged and left out: a broken plugin costs its own location type, never
the daemon.  Drivers themselves are built lazily, once per type, the first
time a request needs them, each with a `DriverContext` carrying that type's
configuration and a state directory of its own.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from clusterd.infrastructure.driver import (
    ENTRY_POINT_GROUP,
    DriverContext,
    DriverFactory,
    InfrastructureDriver,
    InfrastructureError,
    InvalidInfrastructureRequest,
)

__all__ = ["BUILTIN_DRIVERS", "DriverRegistry", "LOCATION_TYPE"]

log = Logger()

#: The drivers that ship with Outpost: location type -> "module:attribute" of its factory.
BUILTIN_DRIVERS: Mapping[str, str] = {
    "simulated": "clusterd.infrastructure.simulated:make_driver",
    "maas": "clusterd.infrastructure.maas:make_driver",
}

#: What a location type (and so a driver name) looks like.
LOCATION_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _load_reference(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split(".") if attribute else ():
        target = getattr(target, part)
    return target


def _configs(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """A registry's own copy of the per-type configurations."""
    return dict(configs)


def _entry_points(group: str) -> Iterable[Any]:
    return importlib.metadata.entry_points(group=group)


@attrs.define(eq=False)
class DriverRegistry:
    """Driver factories by location type, and the drivers built from them."""

    #: The context every driver gets; `config` and `state_dir` are set per type
    #: (the type's configuration, and a directory named after the type under `state_dir`).
    context: DriverContext
    #: Each location type's driver configuration (``infrastructure.drivers`` in the cluster's YAML).
    configs: dict[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_configs)
    _factories: dict[str, DriverFactory] = attrs.field(init=False, factory=dict)
    _drivers: dict[str, InfrastructureDriver] = attrs.field(init=False, factory=dict)

    @classmethod
    def discover(
        cls,
        context: DriverContext,
        configs: Mapping[str, Mapping[str, Any]] | None = None,
        builtins: Mapping[str, str] = BUILTIN_DRIVERS,
        entry_points: Callable[[str], Iterable[Any]] = _entry_points,
    ) -> "DriverRegistry":
        """The built-in drivers and every installed plugin; those that fail to load are logged and skipped."""
        registry = cls(context, dict(configs or {}))
        found: dict[str, tuple[str, Callable[[], Any]]] = {
            name: (reference, partial(_load_reference, reference)) for name, reference in builtins.items()
        }
        try:
            points = list(entry_points(ENTRY_POINT_GROUP))
        except Exception:
            log.failure("Could not list the installed infrastructure driver plugins; using the built-in drivers only")
            points = []
        for point in points:
            name, reference = str(getattr(point, "name", "")), str(getattr(point, "value", "?"))
            if name in found and found[name][0] != reference:
                log.info("Infrastructure driver plugin {reference} replaces the built-in {name} driver", name=name, reference=reference)
            found[name] = (reference, point.load)
        for name, (reference, load) in sorted(found.items()):
            try:
                factory = load()
                registry.register(name, factory)
            except Exception:
                log.failure("Infrastructure driver {name} ({reference}) could not be loaded; locations of type {name} "
                            "will be refused", name=name, reference=reference)
        for name in sorted(set(registry.configs) - set(registry.known)):
            log.warn("infrastructure.drivers.{name} is configured but no driver of that type is installed (known: {known})",
                     name=name, known=", ".join(registry.known) or "none")
        return registry

    def register(self, name: str, factory: DriverFactory) -> None:
        """Make `factory` the driver factory for location type `name` (replacing any before it)."""
        if not isinstance(name, str) or not LOCATION_TYPE.fullmatch(name):
            raise ValueError(f"an infrastructure driver name must be a location type (1-64 letters, digits, '.', '_', '-'), not {name!r}")
        if not callable(factory):
            raise ValueError(f"the infrastructure driver factory for {name} is not callable: {factory!r}")
        self._factories[name] = factory
        self._drivers.pop(name, None)

    def configure(self, name: str, config: Mapping[str, Any]) -> None:
        """Change type `name`'s driver configuration; its driver is closed now and rebuilt when next needed."""
        self.configs[name] = dict(config)
        old = self._drivers.pop(name, None)
        if old is not None:
            # Two live drivers of one type would share a state directory; the old one goes first.
            Deferred.fromCoroutine(self._close(name, old))

    @property
    def known(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def driver(self, location_type: str) -> InfrastructureDriver:
        """The driver for `location_type`, built on first use; `InvalidInfrastructureRequest` for an unknown type."""
        driver = self._drivers.get(location_type)
        if driver is not None:
            return driver
        factory = self._factories.get(location_type)
        if factory is None:
            raise InvalidInfrastructureRequest(
                f"this cluster has no infrastructure driver for deployment location type {location_type!r} "
                f"(known types: {', '.join(self.known) or 'none'})"
            )
        state_dir = Path(self.context.state_dir) / location_type
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            context = attrs.evolve(self.context, config=dict(self.configs.get(location_type) or {}), state_dir=state_dir)
            driver = factory(context)
        except Exception as e:
            if isinstance(e, ValueError):  # its configuration, says the contract: the message is enough
                log.error("The {type} infrastructure driver could not be started: {error}", type=location_type, error=str(e))
            else:
                log.failure("The {type} infrastructure driver could not be started", type=location_type)
            raise InfrastructureError(f"the {location_type} infrastructure driver could not be started: {e}") from None
        self._drivers[location_type] = driver
        log.info("Infrastructure driver {type} started", type=location_type)
        return driver

    async def close(self) -> None:
        """Close every driver built so far that has a ``close()`` (plain or coroutine)."""
        drivers, self._drivers = self._drivers, {}
        for name, driver in sorted(drivers.items()):
            await self._close(name, driver)

    @staticmethod
    async def _close(name: str, driver: Any) -> None:
        close = getattr(driver, "close", None)
        if close is None:
            return
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.failure("Closing the {type} infrastructure driver failed", type=name)

"""
The cluster's MAAS integration: an async MAAS 2.0 client, verified power
actions, and the ``maas:`` configuration section.

    client = MAASClient(reactor, "http://maas:5240/MAAS/", api_key, timeout=30.0)
    machines = await client.list_machines(status="ready", zone=["az1", "az2"])
    power = PowerOrchestrator(reactor, client, report=send_power_report)
    state = await power.power(system_id, "cycle")
"""

from clusterd.maas.client import MAASClient, api_root
from clusterd.maas.config import ENV_API_KEY, MAASConfig, parse_maas_config
from clusterd.maas.errors import (
    MAASAuthError,
    MAASConflict,
    MAASError,
    MAASNotFound,
    MAASUnavailable,
    MAASValidationError,
    PowerActionAlreadyInProgress,
    PowerActionFailed,
)
from clusterd.maas.interfaces import IMAASClient
from clusterd.maas.oauth import Credentials, authorization_header
from clusterd.maas.power import DEFAULT_BACKSTOP, WAIT_SCHEDULE, PowerOrchestrator, PowerReport
from clusterd.maas.retry import RetryPolicy

__all__ = [
    "MAASClient",
    "api_root",
    "IMAASClient",
    "RetryPolicy",
    "Credentials",
    "authorization_header",
    "PowerOrchestrator",
    "PowerReport",
    "WAIT_SCHEDULE",
    "DEFAULT_BACKSTOP",
    "MAASConfig",
    "parse_maas_config",
    "ENV_API_KEY",
    "MAASError",
    "MAASAuthError",
    "MAASValidationError",
    "MAASNotFound",
    "MAASConflict",
    "MAASUnavailable",
    "PowerActionAlreadyInProgress",
    "PowerActionFailed",
]

"""
The cluster's CloudStack integration: an async CloudStack API client (signed
requests, async jobs waited for, typed errors) and the ``cloudstack:``
configuration section.

    client = CloudStackClient(reactor, "http://cs:8080/client/api", api_key, secret_key)
    volume = await client.create_volume("migration-42-disk-0", zone_id, offering_id, size_gb=20, tags={"job": "42"})
    volume = await client.attach_volume(volume["id"], oma_vm_id)      # volume["deviceid"] is set
    await client.detach_volume(volume["id"])
    await client.delete_volume(volume["id"])
"""

from clusterd.cloudstack.client import CloudStackClient, is_idempotent, unwrap
from clusterd.cloudstack.config import CloudStackConfig, parse_cloudstack_config
from clusterd.cloudstack.errors import (
    CloudStackAuthError,
    CloudStackCapacityError,
    CloudStackError,
    CloudStackInternalError,
    CloudStackJobFailed,
    CloudStackJobTimeout,
    CloudStackNotFound,
    CloudStackParameterError,
    CloudStackResourceInUse,
    CloudStackUnavailable,
)
from clusterd.cloudstack.interfaces import ICloudStackClient
from clusterd.cloudstack.retry import PollPolicy, RetryPolicy
from clusterd.cloudstack.signing import flatten, sign, string_to_sign

__all__ = [
    "CloudStackClient",
    "ICloudStackClient",
    "RetryPolicy",
    "PollPolicy",
    "sign",
    "string_to_sign",
    "flatten",
    "is_idempotent",
    "unwrap",
    "CloudStackConfig",
    "parse_cloudstack_config",
    "CloudStackError",
    "CloudStackAuthError",
    "CloudStackParameterError",
    "CloudStackNotFound",
    "CloudStackCapacityError",
    "CloudStackResourceInUse",
    "CloudStackInternalError",
    "CloudStackUnavailable",
    "CloudStackJobFailed",
    "CloudStackJobTimeout",
]

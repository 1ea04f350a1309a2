"""What a failed call to a cluster means to an HTTP client."""

from __future__ import annotations

from regiond.api import errors
from rpc import errors as rpc_errors

__all__ = ["api_error_for", "RETRY_AFTER"]

#: Seconds a client should wait before retrying when a cluster is not connected.
RETRY_AFTER = "5"


class BadGateway(errors.ApiError):
    status, code = 502, "site_unavailable"


class Unsupported(errors.ApiError):
    status, code = 502, "unsupported_by_cluster"


class NotConfigured(errors.Conflict):
    code = "not_configured"


def api_error_for(e: Exception, uuid: str, subject: str = "") -> errors.ApiError:
    """
    The API error for exception `e` from a call to cluster `uuid` (about
    `subject`, e.g. a system_id).  A cluster that fails in a way it should
    not is a bad gateway (502), never our 500.  Anything not an RPC error is
    re-raised: it is a bug, and the router turns it into a logged 500.
    """
    details = {"cluster": uuid, **({"subject": subject} if subject else {})}
    if isinstance(e, (rpc_errors.NoConnectionsAvailable, rpc_errors.ConnectionClosed, rpc_errors.NotAuthenticated)):
        return errors.ServiceUnavailable(
            f"cluster {uuid} is not connected", details={**details, "reason": str(e)}, headers={"Retry-After": RETRY_AFTER}
        )
    if isinstance(e, rpc_errors.CallTimedOut):
        return errors.GatewayTimeout(f"cluster {uuid} did not answer within {e.timeout:g}s", details=details)
    if isinstance(e, rpc_errors.NoSuchMachine):
        return errors.NotFound(str(e), details=details)
    if isinstance(e, (rpc_errors.MachineActionConflict, rpc_errors.PowerActionInProgress)):
        return errors.Conflict(str(e), details=details)
    if isinstance(e, rpc_errors.IntegrationNotConfigured):
        return NotConfigured(f"cluster {uuid} has no such integration configured: {e}", details=details)
    if isinstance(e, rpc_errors.InvalidArgument):
        return errors.BadRequest(str(e), details=details)
    if isinstance(e, (rpc_errors.IntegrationUnavailable, rpc_errors.IntegrationAuthFailed)):
        return BadGateway(f"the site system behind cluster {uuid} failed: {e}", details=details)
    if isinstance(e, rpc_errors.RemoteUnhandledError):
        return BadGateway(f"cluster {uuid} failed unexpectedly (reference {e.reference})", details={**details, "reference": e.reference})
    if isinstance(e, rpc_errors.UnknownCommand):
        return Unsupported(f"cluster {uuid} does not support this; upgrade it ({e})", details=details)
    if isinstance(e, rpc_errors.RPCError):
        return BadGateway(f"call to cluster {uuid} failed: {e}", details=details)
    raise e

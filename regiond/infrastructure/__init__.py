"""
The region's side of the Ignition-compatible infrastructure API: routing
create/delete/find to the cluster named by the deployment location,
records of what was asked and how it ended, and the reports clusters send.

- `InfrastructureStore` (`store`): the ``infrastructures`` and
  ``infrastructure_requests`` tables, de-duplicated completions, task events.
- `InfrastructureService` (`service`): locating the cluster, calling it,
  mapping every failure to Ignition's error classes.
- `InfrastructureAPI` (`api`): the HTTP routes.
"""

from regiond.infrastructure.api import (
    InfrastructureAPI,
    http_error,
    ignition_error_body,
)
from regiond.infrastructure.service import (
    CreateRequest,
    FindRequest,
    InfrastructureService,
    check_report,
)
from regiond.infrastructure.store import (
    STATES,
    InfrastructureStore,
    Location,
    TaskReport,
)

__all__ = [
    "InfrastructureAPI", "InfrastructureService", "InfrastructureStore", "CreateRequest", "FindRequest",
    "Location", "TaskReport", "STATES", "check_report", "http_error", "ignition_error_body",
]

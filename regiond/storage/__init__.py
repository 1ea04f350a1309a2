"""
The storage resources API: the CSCS-compatible ``GET /api/storage-resources/``
fed from Waldur, and ``GET /api/v1/storage/gid-cache``.

Configuration (the ``storage:`` section, the CSCS proxy's keys)::

    config = parse_storage_config(data.get("storage"), problems)   # None if absent

Routes, in the region::

    service = StorageService(reactor, config)        # its own treq pool on `reactor`
    routes += service.routes()
    ...
    await service.close()

The output follows ``waldur-site-agent-cscs-hpc-storage`` 0.7.9; see
`regiond.storage._transform` for the mapping and the few deliberate
differences.
"""

from regiond.storage._api import GID_CACHE_PATH, STORAGE_PATH, StorageService, storage_routes
from regiond.storage._config import DEFAULT_COMPONENTS, BackendSettings, HpcUserApiConfig, StorageConfig, parse_storage_config
from regiond.storage._gids import CACHE_POLICY, GidResolver, HpcUserClient
from regiond.storage._http import HTTPClient, Upstream, make_http_client
from regiond.storage._query import MAX_PAGE_SIZE, RESOURCE_STATES, StorageQuery, parse_storage_query
from regiond.storage._transform import Transformer, apply_filters, customer_index, mock_gid, mock_uid, prepare
from regiond.storage._waldur import WALDUR_MAX_PAGE_SIZE, WaldurClient, WaldurPage, waldur_root
from regiond.storage.errors import HpcUserApiError, HpcUserApiTimeout, StorageError, UpstreamError, UpstreamTimeout, WaldurError, WaldurTimeout

__all__ = [
    "StorageConfig",
    "BackendSettings",
    "HpcUserApiConfig",
    "DEFAULT_COMPONENTS",
    "parse_storage_config",
    "StorageService",
    "storage_routes",
    "STORAGE_PATH",
    "GID_CACHE_PATH",
    "WaldurClient",
    "WaldurPage",
    "WALDUR_MAX_PAGE_SIZE",
    "waldur_root",
    "HpcUserClient",
    "GidResolver",
    "CACHE_POLICY",
    "Transformer",
    "prepare",
    "apply_filters",
    "customer_index",
    "mock_gid",
    "mock_uid",
    "StorageQuery",
    "parse_storage_query",
    "RESOURCE_STATES",
    "MAX_PAGE_SIZE",
    "HTTPClient",
    "Upstream",
    "make_http_client",
    "StorageError",
    "UpstreamError",
    "UpstreamTimeout",
    "WaldurError",
    "WaldurTimeout",
    "HpcUserApiError",
    "HpcUserApiTimeout",
]

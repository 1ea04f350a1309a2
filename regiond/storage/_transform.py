"""
Waldur marketplace resources → CSCS storage resource entries.

This is the contract with the CSCS storage management system, so it
follows ``waldur-site-agent-cscs-hpc-storage`` 0.7.9 (``backend.py``)
decision by decision, on the raw JSON Waldur serves:

- one **tenant** entry per (provider slug, offering slug, data type), with
  the offering UUID (dashed) as ``itemId``;
- one **customer** entry per (customer slug, offering slug, data type) when
  the customer is among the offering's customers, ``itemId`` its UUID hex,
  ``parentItemId`` the tenant's;
- one **project** entry per resource (``itemId`` the resource UUID hex),
  ``parentItemId`` the customer entry's, with mount point
  ``/{system}/{data_type}/{tenant}/{customer}/{project}``, permissions,
  space and inode quotas (``int(TB × inode_base_multiplier × coefficient)``),
  a target by data type (``store``/``archive`` → project, ``users``/
  ``scratch`` → user, else project), option overrides, order callback URLs
  and allowed transitions.

Where the proxy would raise on a record, the record is skipped at the same
point (entries already made for it stay), so the output matches.  Where it
would put process-specific values in the output, we put stable ones:
mock user UIDs and GIDs come from SHA-256, not ``hash()``; allowed
transitions keep a fixed order, not a ``set``'s.  Records the proxy's
client could not even parse (a malformed UUID, attributes that are not an
object) are skipped alone rather than failing the whole page.

GIDs are looked up before the transformation (`gid_names`), so this module
does no I/O: the caller passes the results in.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid as uuidlib
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.logger import Logger

from regiond.storage._config import BackendSettings

__all__ = [
    "Transformer",
    "Record",
    "prepare",
    "apply_filters",
    "mock_gid",
    "mock_uid",
    "STATUS_BY_STATE",
    "TARGET_BY_DATA_TYPE",
    "status_of",
    "allowed_transitions",
    "customer_index",
    "needs_gid_lookup",
    "MISSING",
]

log = Logger()

STATUS_BY_STATE = {"Creating": "pending", "OK": "active", "Erred": "error", "Terminating": "removing", "Terminated": "removed"}
_TARGET_STATUS = {"Creating": "pending", "OK": "active", "Erred": "pending", "Terminating": "removing", "Terminated": "removing"}
TARGET_BY_DATA_TYPE = {"store": "project", "archive": "project", "users": "user", "scratch": "user"}
_EARLY_ORDER_STATES = ("pending-consumer", "pending-project", "pending-start-date")
_TERMINAL_ORDER_STATES = ("done", "erred", "canceled", "rejected")
#: The errors a malformed record can raise on its way through; a record that raises one is skipped.
_DATA_ERRORS = (TypeError, ValueError, AttributeError, OverflowError, KeyError)


class _Missing:
    """A field absent from Waldur's JSON (the proxy's ``Unset``): false, and has no string methods."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@functools.lru_cache(maxsize=65536)
def _uuid5(name: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, name))


def _stable(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def mock_gid(project: str) -> int:
    """The development-mode GID of `project`: 30000–39999, the same in every process."""
    return 30000 + _stable(project) % 10000


def mock_uid(slug: str) -> int:
    """The mock UID of a user-target resource: 20000–29999, the same in every process."""
    return 20000 + _stable(slug) % 10000


def status_of(state: Any) -> str:
    return STATUS_BY_STATE.get(str(state), "pending") if state else "pending"


@functools.lru_cache(maxsize=1024)
def _system_object(storage_system: str) -> dict[str, Any]:
    return {
        "itemId": _uuid5(f"storage_system:{storage_system}"),
        "key": storage_system.lower(),
        "name": storage_system.upper(),
        "active": True,
    }


@functools.lru_cache(maxsize=64)
def _file_system_object(fs: str) -> dict[str, Any]:
    return {"itemId": _uuid5(f"storage_file_system:{fs}"), "key": fs.lower(), "name": fs.upper(), "active": True}


@functools.lru_cache(maxsize=1024)
def _data_type_object(data_type: str, with_path: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"itemId": _uuid5(f"storage_data_type:{data_type}"), "key": data_type.lower(), "name": data_type.upper()}
    if with_path:
        out["path"] = data_type.lower()
    out["active"] = True
    return out


@attrs.frozen
class Order:
    uuid: Any  #: uuid.UUID or MISSING
    state: Any  #: str or MISSING


@attrs.frozen
class Record:
    """The fields of one Waldur resource the transformation reads, as the proxy's client parses them."""

    raw: Mapping[str, Any]
    uuid: Any
    offering_uuid: Any
    offering_slug: Any
    provider_slug: Any
    provider_name: Any
    customer_slug: Any
    project_slug: Any
    project_name: Any
    slug: Any
    state: Any
    attributes: Any  #: dict or MISSING
    limits: Any
    options: Any
    backend_metadata: Any
    order: Order | None | Any  #: Order, None (JSON null) or MISSING


def _parse_uuid(value: Any) -> Any:
    return MISSING if value is MISSING else uuidlib.UUID(value)


@functools.lru_cache(maxsize=1024)
def _parse_offering_uuid(value: str) -> uuidlib.UUID:
    return uuidlib.UUID(value)


def _offering_uuid(value: Any) -> Any:
    """Offering UUIDs repeat on every record: parse each once."""
    return _parse_offering_uuid(value) if isinstance(value, str) else _parse_uuid(value)


def _object(value: Any, name: str) -> Any:
    if value is MISSING:
        return MISSING
    if not isinstance(value, dict):
        raise TypeError(f"{name} is not an object")
    return value


def prepare(raw: Any) -> Record | None:
    """One Waldur resource parsed as the proxy's client would, or None (logged) where its client would fail."""
    if not isinstance(raw, dict):
        log.warn("Skipping a Waldur resource that is not an object")
        return None
    get = raw.get
    try:
        order_raw = get("order_in_progress", MISSING)
        order: Any = order_raw
        if isinstance(order_raw, dict):
            order = Order(_parse_uuid(order_raw.get("uuid", MISSING)), order_raw.get("state", MISSING))
        elif order_raw is not None and order_raw is not MISSING:
            raise TypeError("order_in_progress is not an object")
        return Record(
            raw=raw,
            uuid=_parse_uuid(get("uuid", MISSING)),
            offering_uuid=_offering_uuid(get("offering_uuid", MISSING)),
            offering_slug=get("offering_slug", MISSING),
            provider_slug=get("provider_slug", MISSING),
            provider_name=get("provider_name", MISSING),
            customer_slug=get("customer_slug", MISSING),
            project_slug=get("project_slug", MISSING),
            project_name=get("project_name", MISSING),
            slug=get("slug", MISSING),
            state=get("state", MISSING),
            attributes=_object(get("attributes", MISSING), "attributes"),
            limits=_object(get("limits", MISSING), "limits"),
            options=get("options", MISSING),
            backend_metadata=_object(get("backend_metadata", MISSING), "backend_metadata"),
            order=order,
        )
    except (TypeError, ValueError, AttributeError) as e:
        log.warn("Skipping Waldur resource {uuid}: {error}", uuid=str(get("uuid")), error=str(e))
        return None


def _data_type(record: Record) -> Any:
    """The raw ``storage_data_type`` attribute the proxy keys tenant and customer entries by."""
    if record.attributes:
        return record.attributes.get("storage_data_type", "store")
    return "store"


def needs_gid_lookup(record: Record, *, single: bool, use_mock_target_items: bool) -> bool:
    """Whether the project entry for `record` would look its project's GID up."""
    if single and _skipped_in_transition(record):
        return False
    if not isinstance(record.project_slug, str):
        return False
    if not use_mock_target_items and record.backend_metadata:
        sdt = _data_type_of_project(record)
        if isinstance(sdt, str):
            target = TARGET_BY_DATA_TYPE.get(sdt.lower(), "project")
            if record.backend_metadata.get(f"{target}_item"):
                return False
    return True


def _data_type_of_project(record: Record) -> Any:
    sdt: Any = "store"
    if record.attributes:
        value = record.attributes.get("storage_data_type", sdt)
        sdt = value if value else sdt
    return sdt


def _skipped_in_transition(record: Record) -> bool:
    """The per-system listing drops Creating resources whose order is not yet the provider's (or absent)."""
    if record.state != "Creating":
        return False
    order = record.order
    if isinstance(order, Order):
        return order.state in _EARLY_ORDER_STATES
    return True


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


@attrs.frozen
class Transformer:
    settings: BackendSettings
    #: ``{waldur}/api``: where the order callback URLs point.
    callback_base: str

    # -- the common objects -------------------------------------------------------

    # These objects repeat in every entry; each is built once and shared (entries are not changed after).

    def _system(self, storage_system: str) -> dict[str, Any]:
        return _system_object(storage_system)

    def _file_system(self) -> dict[str, Any]:
        return _file_system_object(self.settings.storage_file_system)

    def _data_type_object(self, data_type: str, with_path: bool) -> dict[str, Any]:
        return _data_type_object(data_type, with_path)

    # -- tenant and customer entries -----------------------------------------------

    def tenant_entry(self, tenant_id: Any, tenant_name: Any, storage_system: Any, data_type: Any, offering_uuid: str | None) -> dict[str, Any]:
        mount_point = f"/{storage_system}/{data_type.lower()}/{tenant_id}"
        item_id = offering_uuid if offering_uuid else _uuid5(f"tenant:{tenant_id}-{storage_system}-{data_type}")
        return {
            "itemId": item_id,
            "status": "pending",
            "mountPoint": {"default": mount_point},
            "permission": {"permissionType": "octal", "value": "775"},
            "quotas": None,
            "target": {
                "targetType": "tenant",
                "targetItem": {
                    "itemId": offering_uuid if offering_uuid else _uuid5(f"tenant:{tenant_id}"),
                    "key": tenant_id.lower(),
                    "name": tenant_name,
                },
            },
            "storageSystem": self._system(storage_system),
            "storageFileSystem": self._file_system(),
            "storageDataType": self._data_type_object(data_type, with_path=False),
            "parentItemId": None,
        }

    def customer_entry(self, customer: Mapping[str, Any], storage_system: Any, data_type: Any, tenant_id: Any, parent: Any) -> dict[str, Any]:
        mount_point = f"/{storage_system}/{data_type.lower()}/{tenant_id}/{customer['key']}"
        return {
            "itemId": customer["itemId"],
            "status": "pending",
            "mountPoint": {"default": mount_point},
            "permission": {"permissionType": "octal", "value": "775"},
            "quotas": None,
            "target": {
                "targetType": "customer",
                "targetItem": {"itemId": customer["itemId"], "key": customer["key"], "name": customer["name"]},
            },
            "storageSystem": self._system(storage_system),
            "storageFileSystem": self._file_system(),
            "storageDataType": self._data_type_object(data_type, with_path=False),
            "parentItemId": parent,
        }

    # -- project entries ------------------------------------------------------------

    def _target_item(self, record: Record, target_type: str, gids: Mapping[str, int | None]) -> Any:
        if not self.settings.use_mock_target_items and record.backend_metadata:
            found = record.backend_metadata.get(f"{target_type}_item")
            if found:
                return found
        if target_type == "project":
            status = _TARGET_STATUS.get(str(record.state), "pending") if record.state else "pending"
            gid = gids.get(record.project_slug)
            if gid is None:
                return None
            return {
                "itemId": _uuid5(f"project:{record.slug}"),
                "status": status,
                "name": record.slug,
                "unixGid": gid,
                "active": status == "active",
            }
        # "user"
        status = _TARGET_STATUS.get(str(record.state), "pending") if record.state else "pending"
        project = record.project_slug if record.project_slug is not MISSING else "default-project"
        gid = gids.get(project)
        if gid is None:
            return None
        return {
            "itemId": _uuid5(f"user:{record.slug}"),
            "status": status,
            "email": f"user-{record.slug}@example.com",
            "unixUid": mock_uid(record.slug),
            "primaryProject": {"name": project, "unixGid": gid, "active": status == "active"},
            "active": status == "active",
        }

    def project_entry(self, record: Record, storage_system: Any, gids: Mapping[str, int | None]) -> dict[str, Any] | None:
        """The project entry for `record`, None when its GID is unknown; raises where the proxy does."""
        if not isinstance(storage_system, str) or not storage_system:
            raise TypeError("storage_system must be a non-empty string")
        for name in ("customer_slug", "project_slug", "slug"):
            if not isinstance(getattr(record, name), str):
                # The proxy would print "<Unset object at 0x...>" into the mount point.
                raise TypeError(f"{name} is missing or not a string")
        settings = self.settings
        storage_tb = 0.0
        if record.limits:
            limit = record.limits.get("storage")
            if limit is not None:
                try:
                    storage_tb = float(limit)
                except (ValueError, TypeError):
                    log.warn("Invalid storage limit {limit!r} for resource {uuid}; using 0 TB", limit=limit, uuid=str(record.uuid))
        base = storage_tb * settings.inode_base_multiplier
        inode_soft = int(base * settings.inode_soft_coefficient)
        inode_hard = int(base * settings.inode_hard_coefficient)

        permissions: Any = "775"
        data_type: Any = "store"
        if record.attributes:
            value = record.attributes.get("permissions", permissions)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"permissions must be a string, not {type(value).__name__}")
            permissions = value if value else permissions
            value = record.attributes.get("storage_data_type", data_type)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"storage_data_type must be a string, not {type(value).__name__}")
            data_type = value if value else data_type

        mount_point = f"/{storage_system}/{data_type.lower()}/{record.provider_slug}/{record.customer_slug}/{record.project_slug}"
        soft_tb = hard_tb = storage_tb
        if record.options:
            options = record.options
            override = options.get("permissions")
            if override is not None:
                if isinstance(override, str):
                    permissions = override
                else:
                    log.warn("Ignoring non-string permissions override for resource {uuid}", uuid=str(record.uuid))
            soft_tb = self._number_override(options, "soft_quota_space", soft_tb, float, record)
            hard_tb = self._number_override(options, "hard_quota_space", hard_tb, float, record)
            # "indoes" is how the proxy spells it; resources in Waldur carry that key.
            inode_soft = self._number_override(options, "soft_quota_indoes", inode_soft, lambda v: int(float(v)), record)
            inode_hard = self._number_override(options, "hard_quota_indoes", inode_hard, lambda v: int(float(v)), record)

        status = status_of(record.state)
        target_type = TARGET_BY_DATA_TYPE.get(data_type.lower(), "project")
        if data_type.lower() not in TARGET_BY_DATA_TYPE:
            log.warn("Unknown storage_data_type {data_type!r} for resource {uuid}; using target type project", data_type=data_type, uuid=str(record.uuid))
        target_item = self._target_item(record, target_type, gids)
        if target_item is None:
            log.warn("Skipping resource {uuid}: no unixGid for project {project}", uuid=str(record.uuid), project=record.project_slug)
            return None

        entry: dict[str, Any] = {
            "itemId": record.uuid.hex,
            "status": status,
            "mountPoint": {"default": mount_point},
            "permission": {"permissionType": "octal", "value": permissions},
            "quotas": [
                {"type": "space", "quota": float(soft_tb), "unit": "tera", "enforcementType": "soft"},
                {"type": "space", "quota": float(hard_tb), "unit": "tera", "enforcementType": "hard"},
                {"type": "inodes", "quota": float(inode_soft), "unit": "none", "enforcementType": "soft"},
                {"type": "inodes", "quota": float(inode_hard), "unit": "none", "enforcementType": "hard"},
            ]
            if soft_tb > 0 or hard_tb > 0
            else None,
            "target": {"targetType": target_type, "targetItem": target_item},
            "storageSystem": self._system(storage_system),
            "storageFileSystem": self._file_system(),
            "storageDataType": self._data_type_object(data_type, with_path=True),
            "parentItemId": None,
        }
        order = record.order
        if isinstance(order, Order) and order.uuid is not MISSING:
            prefix = f"{self.callback_base}/marketplace-orders/{order.uuid}"
            for action in ("approve_by_provider", "reject_by_provider", "set_state_executing", "set_state_done", "set_state_erred", "set_backend_id"):
                entry[f"{action}_url"] = f"{prefix}/{action}/"
        entry["allowed_transitions"] = allowed_transitions(order.state if isinstance(order, Order) else None)
        return entry

    @staticmethod
    def _number_override(options: Mapping[str, Any], key: str, current: Any, convert: Callable[[Any], Any], record: Record) -> Any:
        value = options.get(key)
        if value is None:
            return current
        try:
            converted = convert(value)
            return _finite(converted) if isinstance(converted, float) else converted
        except (ValueError, TypeError):
            log.warn("Ignoring invalid {key} override for resource {uuid}", key=key, uuid=str(record.uuid))
            return current

    # -- a page -------------------------------------------------------------------

    def entries(
        self,
        records: Iterable[Record],
        customers: Mapping[str, Mapping[str, Any]],
        gids: Mapping[str, int | None],
        *,
        single: bool,
    ) -> list[dict[str, Any]]:
        """
        Tenant, customer and project entries for one page of resources, in
        the proxy's order.  `customers` maps customer slug to ``{itemId,
        key, name}``; `single` is the per-system listing, which also drops
        Creating resources whose order is not yet the provider's.
        """
        out: list[dict[str, Any]] = []
        tenants: dict[str, Any] = {}
        customer_entries: dict[str, Any] = {}
        for record in records:
            if single and _skipped_in_transition(record):
                continue
            try:
                data_type = _data_type(record)
                tenant_id = record.provider_slug
                tenant_name = record.provider_name if record.provider_name is not MISSING else tenant_id.upper()
                tenant_key = f"{tenant_id}-{record.offering_slug}-{data_type}"
                if tenant_key not in tenants:
                    offering_uuid = str(record.offering_uuid) if record.offering_uuid is not MISSING else None
                    tenant = self.tenant_entry(tenant_id, tenant_name, record.offering_slug, data_type, offering_uuid)
                    out.append(tenant)
                    tenants[tenant_key] = tenant["itemId"]
                customer_key = f"{record.customer_slug}-{record.offering_slug}-{data_type}"
                if customer_key not in customer_entries and record.customer_slug in customers:
                    customer = self.customer_entry(
                        customers[record.customer_slug], record.offering_slug, data_type, tenant_id, tenants.get(tenant_key)
                    )
                    out.append(customer)
                    customer_entries[customer_key] = customer["itemId"]
                entry = self.project_entry(record, record.offering_slug, gids)
                if entry is not None:
                    if customer_key in customer_entries:
                        entry["parentItemId"] = customer_entries[customer_key]
                    out.append(entry)
            except _DATA_ERRORS as e:
                log.warn("Skipping Waldur resource {uuid}: {error}", uuid=str(record.uuid), error=str(e))
        return out


def allowed_transitions(order_state: Any) -> list[str]:
    """What the provider may do next with the order (the proxy's rules; its resource-state rule never fires)."""
    actions: list[str] = []
    if order_state:
        if order_state == "pending-provider":
            actions += ["approve_by_provider", "reject_by_provider", "set_state_executing"]
        if order_state == "executing":
            actions += ["set_state_done", "set_state_erred"]
        if order_state not in _TERMINAL_ORDER_STATES:
            actions.append("set_backend_id")
    return actions


def apply_filters(entries: list[dict[str, Any]], storage_system: str | None, data_type: str | None, status: str | None) -> list[dict[str, Any]]:
    """The proxy's post-transformation filters: exact matches on the entry's keys."""
    out = []
    for entry in entries:
        if storage_system and entry.get("storageSystem", {}).get("key", "") != storage_system:
            continue
        if data_type and entry.get("storageDataType", {}).get("key", "") != data_type:
            continue
        if status and entry.get("status", "") != status:
            continue
        out.append(entry)
    return out


def customer_index(customers: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Offering customers (Waldur's records) by slug, as ``{itemId, key, name, uuid}`` (UUIDs as hex)."""
    out: dict[str, dict[str, Any]] = {}
    for customer in customers:
        try:
            hex_id = uuidlib.UUID(customer["uuid"]).hex
            out[customer["slug"]] = {"itemId": hex_id, "key": customer["slug"], "name": customer["name"], "uuid": hex_id}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("an offering customer lacks uuid, slug or name") from None
    return out

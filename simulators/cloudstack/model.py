"""The simulated CloudStack's records and their JSON, as CloudStack's API shows them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import attrs

__all__ = ["GIB", "Zone", "VirtualMachine", "DiskOffering", "Volume", "Job", "Tag", "Limits", "timestamp", "ACCOUNT", "DOMAIN"]

GIB = 1024**3
ACCOUNT = {"account": "admin", "domainid": "8a3c2d52-5d3c-11ee-9ae2-0242ac110002", "domain": "ROOT"}
DOMAIN = ACCOUNT["domainid"]


def timestamp(seconds: float) -> str:
    """CloudStack's date format (``2024-05-01T12:00:00+0000``)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z")


@attrs.define
class Limits:
    """
    Capacity limits: `max_volumes` data volumes in all (CloudStack's account
    volume limit: 532 when reached), `capacity_gb` GiB of data volumes in all
    (the zone's primary storage: 533 when short), and device ids up to
    `max_device_id` per VM (0 is the root disk, 3 the CD-ROM).
    """

    max_volumes: int | None = None
    capacity_gb: int | None = None
    max_device_id: int = 15


@attrs.define
class Zone:
    id: str
    name: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.name,
            "dns1": "8.8.8.8",
            "internaldns1": "10.0.0.1",
            "networktype": "Advanced",
            "securitygroupsenabled": False,
            "allocationstate": "Enabled",
            "zonetoken": self.id[:8],
            "dhcpprovider": "VirtualRouter",
            "localstorageenabled": False,
            "tags": [],
        }


@attrs.define
class VirtualMachine:
    id: str
    name: str
    zone: Zone
    instance_name: str
    created: str
    state: str = "Running"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "displayname": self.name,
            **ACCOUNT,
            "created": self.created,
            "state": self.state,
            "haenable": False,
            "zoneid": self.zone.id,
            "zonename": self.zone.name,
            "instancename": self.instance_name,
            "hypervisor": "KVM",
            "templatename": "Ubuntu 22.04",
            "serviceofferingname": "Medium Instance",
            "cpunumber": 4,
            "memory": 8192,
            "nic": [],
            "tags": [],
        }


@attrs.define
class DiskOffering:
    id: str
    name: str
    #: GiB; 0 for a custom-size offering.
    disk_size_gb: int
    created: str

    @property
    def customized(self) -> bool:
        return self.disk_size_gb == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "displaytext": f"{self.name} disk" if not self.customized else "Custom size disk",
            "disksize": self.disk_size_gb,
            "created": self.created,
            "iscustomized": self.customized,
            "storagetype": "shared",
            "provisioningtype": "thin",
            "displayoffering": True,
            "cacheinguse": "none",
        }


@attrs.define
class Tag:
    key: str
    value: str
    resource_id: str
    resource_type: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "resourcetype": self.resource_type,
            "resourceid": self.resource_id,
            "account": ACCOUNT["account"],
            "domainid": ACCOUNT["domainid"],
            "domain": ACCOUNT["domain"],
        }


@attrs.define
class Volume:
    id: str
    name: str
    zone: Zone
    size: int
    created: str
    offering: DiskOffering | None
    type: str = "DATADISK"
    state: str = "Allocated"
    vm: VirtualMachine | None = None
    device_id: int | None = None
    attached: str | None = None

    def to_json(self, tags: list[Tag]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "zoneid": self.zone.id,
            "zonename": self.zone.name,
            "type": self.type,
            "size": self.size,
            "created": self.created,
            "state": self.state,
            **ACCOUNT,
            "storagetype": "shared",
            "hypervisor": "KVM",
            "provisioningtype": "thin",
            "destroyed": False,
            "isextractable": True,
            "displayvolume": True,
            "tags": [tag.to_json() for tag in tags],
        }
        if self.offering is not None:
            out.update(
                diskofferingid=self.offering.id,
                diskofferingname=self.offering.name,
                diskofferingdisplaytext=self.offering.to_json()["displaytext"],
            )
        if self.vm is not None:
            out.update(
                virtualmachineid=self.vm.id,
                vmname=self.vm.name,
                vmdisplayname=self.vm.name,
                vmstate=self.vm.state,
                deviceid=self.device_id,
            )
            if self.attached is not None:
                out["attached"] = self.attached
        return out


@attrs.define(eq=False)
class Job:
    id: str
    command: str
    cmd: str
    instance_type: str
    instance_id: str | None
    created: str
    status: int = 0
    result_code: int = 0
    result: dict[str, Any] | None = None
    completed: str | None = None
    call: Any = attrs.field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accountid": "f3b5a1c2-5d3c-11ee-9ae2-0242ac110002",
            "userid": "f3b5b0e4-5d3c-11ee-9ae2-0242ac110002",
            "cmd": self.cmd,
            "jobstatus": self.status,
            "jobprocstatus": 0,
            "jobresultcode": self.result_code,
            "jobinstancetype": self.instance_type,
            "created": self.created,
            "jobid": self.id,
        }
        if self.instance_id is not None:
            out["jobinstanceid"] = self.instance_id
        if self.status != 0:
            out["jobresulttype"] = "object"
            out["jobresult"] = self.result
            out["completed"] = self.completed
        return out

"""
What the simulated MAAS holds: machines, zones, pools and the network
model, generated deterministically from a seed, shaped like MAAS's JSON.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any

import attrs

__all__ = [
    "Status",
    "STATUS_NAMES",
    "STATUS_ALIASES",
    "Machine",
    "Network",
    "generate_machines",
    "API",
]

API = "/MAAS/api/2.0/"


class Status:
    """MAAS's node status codes (DESIGN.md's table)."""

    NEW = 0
    COMMISSIONING = 1
    FAILED_COMMISSIONING = 2
    MISSING = 3
    READY = 4
    RESERVED = 5
    DEPLOYED = 6
    RETIRED = 7
    BROKEN = 8
    DEPLOYING = 9
    ALLOCATED = 10
    FAILED_DEPLOYMENT = 11
    RELEASING = 12
    FAILED_RELEASING = 13
    DISK_ERASING = 14
    FAILED_DISK_ERASING = 15
    RESCUE_MODE = 16
    ENTERING_RESCUE_MODE = 17
    FAILED_ENTERING_RESCUE_MODE = 18
    EXITING_RESCUE_MODE = 19
    FAILED_EXITING_RESCUE_MODE = 20
    TESTING = 21
    FAILED_TESTING = 22


STATUS_NAMES = {
    0: "New",
    1: "Commissioning",
    2: "Failed commissioning",
    3: "Missing",
    4: "Ready",
    5: "Reserved",
    6: "Deployed",
    7: "Retired",
    8: "Broken",
    9: "Deploying",
    10: "Allocated",
    11: "Failed deployment",
    12: "Releasing",
    13: "Releasing failed",
    14: "Disk erasing",
    15: "Failed disk erasing",
    16: "Rescue mode",
    17: "Entering rescue mode",
    18: "Failed to enter rescue mode",
    19: "Exiting rescue mode",
    20: "Failed to exit rescue mode",
    21: "Testing",
    22: "Failed testing",
}

#: The ``status`` filter of ``GET machines/`` takes MAAS's enum names in lower case ("ready", "failed_deployment").
STATUS_ALIASES = {name.lower(): code for name, code in vars(Status).items() if not name.startswith("_")}

DISTRO_SERIES = ("focal", "jammy", "noble")
DEFAULT_SERIES = "jammy"
SERIES_VERSIONS = {"focal": "20.04", "jammy": "22.04", "noble": "24.04"}
HWE_KERNELS = tuple(
    f"{kind}-{version}{edge}"
    for version in SERIES_VERSIONS.values()
    for kind in ("ga", "hwe")
    for edge in ("", "-edge")
    if not (kind == "ga" and edge)
)
TAGS = ("virtual", "gpu", "ssd", "nvme", "10g", "25g", "hpc", "storage", "bios", "uefi")
_ADJECTIVES = (
    "able", "bold", "calm", "cool", "cute", "deep", "fair", "fine", "glad", "good", "keen", "kind", "live", "neat",
    "nice", "open", "prime", "quick", "rare", "ripe", "safe", "sure", "tidy", "vast", "warm", "wise", "lucid", "noble",
)
_NOUNS = (
    "ant", "bass", "bison", "boar", "cod", "crow", "deer", "dory", "eel", "elk", "fawn", "finch", "fox", "gnu",
    "hare", "hawk", "ibis", "jay", "kiwi", "koi", "lark", "lynx", "mole", "moth", "newt", "orca", "owl", "puma",
    "quail", "ray", "seal", "swan", "tapir", "toad", "trout", "vole", "wasp", "wren", "yak", "zebra",
)
_ID_ALPHABET = "abcdefghkmnpqrstwxy34678"


@attrs.define
class Network:
    """Zones, resource pools, fabrics, VLANs, subnets and spaces (fixed; MAAS-shaped)."""

    zones: list[dict[str, Any]]
    pools: list[dict[str, Any]]
    spaces: list[dict[str, Any]]
    fabrics: list[dict[str, Any]]
    vlans: list[dict[str, Any]]
    subnets: list[dict[str, Any]]

    @classmethod
    def default(cls) -> "Network":
        zones = [
            {"id": i + 1, "name": name, "description": desc, "resource_uri": f"{API}zones/{name}/"}
            for i, (name, desc) in enumerate(
                [("default", ""), ("az1", "Row A"), ("az2", "Row B"), ("az3", "Row C")]
            )
        ]
        pools = [
            {"id": i, "name": name, "description": desc, "resource_uri": f"{API}resourcepool/{i}/"}
            for i, (name, desc) in enumerate(
                [("default", "Default pool"), ("compute", "Compute nodes"), ("storage", "Storage nodes")]
            )
        ]
        spaces = [
            {"id": 0, "name": "management", "resource_uri": f"{API}spaces/0/"},
            {"id": 1, "name": "storage", "resource_uri": f"{API}spaces/1/"},
        ]
        vlans = [
            {
                "id": 5001 + i,
                "vid": 0,
                "mtu": 1500 if i == 0 else 9000,
                "name": "untagged",
                "fabric": f"fabric-{i}",
                "fabric_id": i,
                "space": spaces[i]["name"],
                "dhcp_on": i == 0,
                "external_dhcp": None,
                "relay_vlan": None,
                "primary_rack": "rack01" if i == 0 else None,
                "secondary_rack": None,
                "resource_uri": f"{API}vlans/{5001 + i}/",
            }
            for i in range(2)
        ]
        fabrics = [
            {
                "id": i,
                "name": f"fabric-{i}",
                "class_type": None,
                "vlans": [vlans[i]],
                "resource_uri": f"{API}fabrics/{i}/",
            }
            for i in range(2)
        ]
        subnets = [
            {
                "id": i + 1,
                "name": cidr,
                "cidr": cidr,
                "vlan": vlans[i],
                "space": spaces[i]["name"],
                "gateway_ip": str(ipaddress.ip_network(cidr)[1]),
                "dns_servers": [],
                "rdns_mode": 2,
                "allow_dns": True,
                "allow_proxy": True,
                "active_discovery": False,
                "managed": True,
                "disabled_boot_architectures": [],
                "resource_uri": f"{API}subnets/{i + 1}/",
            }
            for i, cidr in enumerate(("10.0.0.0/16", "10.1.0.0/16"))
        ]
        return cls(zones=zones, pools=pools, spaces=spaces, fabrics=fabrics, vlans=vlans, subnets=subnets)

    def zone(self, name: str) -> dict[str, Any] | None:
        return next((z for z in self.zones if z["name"] == name), None)

    def pool(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.pools if p["name"] == name), None)


@attrs.define(eq=False)
class Machine:
    """One machine; `to_json` caches its encoding until something changes."""

    system_id: str
    hostname: str
    architecture: str
    memory: int
    cpu_count: int
    cpu_speed: int
    disks: list[dict[str, Any]]
    interfaces: list[dict[str, Any]]
    addresses: list[str]  # the IP each interface gets when deployed
    zone: str
    pool: str
    tag_names: list[str]
    power_type: str
    status: int = Status.READY
    power_state: str = "off"
    owner: str | None = None
    osystem: str = ""
    distro_series: str = ""
    hwe_kernel: str | None = None
    status_message: str | None = None
    user_data: bytes | None = None
    enable_ssh: bool = False
    erase: dict[str, bool] | None = None
    #: Timers driving the running status change and power change.
    status_timer: Any = attrs.field(default=None, repr=False)
    power_timer: Any = attrs.field(default=None, repr=False)
    _cached: bytes | None = attrs.field(default=None, repr=False)

    def touch(self) -> None:
        self._cached = None

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    @property
    def ip_addresses(self) -> list[str]:
        return list(self.addresses) if self.status in (Status.DEPLOYING, Status.DEPLOYED) else []

    def to_dict(self, network: Network) -> dict[str, Any]:
        deployed = self.status in (Status.DEPLOYING, Status.DEPLOYED)
        interface_set = []
        for nic, address in zip(self.interfaces, self.addresses):
            vlan = network.vlans[nic["fabric_id"]]
            subnet = network.subnets[nic["fabric_id"]]
            link: dict[str, Any] = {"id": nic["id"] * 10, "mode": "auto", "subnet": subnet}
            if deployed:
                link["ip_address"] = address
            interface_set.append(
                {
                    "id": nic["id"],
                    "name": nic["name"],
                    "type": "physical",
                    "mac_address": nic["mac_address"],
                    "enabled": True,
                    "vlan": vlan,
                    "links": [link],
                    "effective_mtu": vlan["mtu"],
                    "link_speed": nic["speed"],
                    "interface_speed": nic["speed"],
                    "link_connected": True,
                    "vendor": "Intel Corporation",
                    "product": "Ethernet Controller X710",
                    "firmware_version": "8.30",
                    "tags": [],
                    "params": "",
                    "parents": [],
                    "children": [],
                    "discovered": None,
                    "system_id": self.system_id,
                    "resource_uri": f"{API}nodes/{self.system_id}/interfaces/{nic['id']}/",
                }
            )
        blockdevice_set = [
            {
                "id": disk["id"],
                "name": disk["name"],
                "type": "physical",
                "path": f"/dev/disk/by-dname/{disk['name']}",
                "size": disk["size"],
                "block_size": 4096,
                "model": disk["model"],
                "serial": disk["serial"],
                "id_path": f"/dev/disk/by-id/wwn-{disk['serial']}",
                "tags": ["ssd"],
                "uuid": None,
                "filesystem": None,
                "partitions": [],
                "partition_table_type": None,
                "available_size": disk["size"],
                "used_size": 0,
                "used_for": "Unused",
                "storage_pool": None,
                "system_id": self.system_id,
                "resource_uri": f"{API}nodes/{self.system_id}/blockdevices/{disk['id']}/",
            }
            for disk in self.disks
        ]
        zone = network.zone(self.zone) or network.zones[0]
        pool = network.pool(self.pool) or network.pools[0]
        return {
            "system_id": self.system_id,
            "hostname": self.hostname,
            "fqdn": f"{self.hostname}.maas",
            "domain": {"id": 0, "name": "maas", "authoritative": True, "ttl": None, "is_default": True,
                       "resource_record_count": 0, "resource_uri": f"{API}domains/0/"},
            "node_type": 0,
            "node_type_name": "Machine",
            "architecture": self.architecture,
            "min_hwe_kernel": "",
            "hwe_kernel": self.hwe_kernel,
            "status": self.status,
            "status_name": self.status_name,
            "status_message": self.status_message,
            "status_action": None,
            "power_state": self.power_state,
            "power_type": self.power_type,
            "memory": self.memory,
            "cpu_count": self.cpu_count,
            "cpu_speed": self.cpu_speed,
            "storage": round(sum(d["size"] for d in self.disks) / 1_000_000, 3),
            "swap_size": None,
            "osystem": self.osystem,
            "distro_series": self.distro_series,
            "netboot": not deployed,
            "locked": False,
            "disable_ipv4": False,
            "owner": self.owner,
            "owner_data": {},
            "tag_names": list(self.tag_names),
            "zone": zone,
            "pool": pool,
            "pod": None,
            "ip_addresses": self.ip_addresses,
            "boot_interface": interface_set[0] if interface_set else None,
            "interface_set": interface_set,
            "blockdevice_set": blockdevice_set,
            "virtualblockdevice_set": [],
            "special_filesystems": [],
            "raids": [],
            "volume_groups": [],
            "cache_sets": [],
            "bcaches": [],
            "hardware_info": {
                "system_vendor": "Simulated",
                "system_product": "SIM-1000",
                "system_serial": f"SN{self.system_id.upper()}",
                "cpu_model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
                "mainboard_vendor": "Simulated",
            },
            "commissioning_status": 2 if self.status not in (Status.NEW, Status.COMMISSIONING) else 0,
            "commissioning_status_name": "Passed" if self.status not in (Status.NEW, Status.COMMISSIONING) else "Pending",
            "testing_status": 2 if self.status not in (Status.NEW, Status.COMMISSIONING, Status.TESTING) else 0,
            "testing_status_name": "Passed" if self.status not in (Status.NEW, Status.COMMISSIONING, Status.TESTING) else "Pending",
            "resource_uri": f"{API}machines/{self.system_id}/",
        }

    def to_json(self, network: Network) -> bytes:
        if self._cached is None:
            self._cached = json.dumps(self.to_dict(network), separators=(",", ":")).encode("utf-8")
        return self._cached


# Initial statuses and how often each is drawn.
_STATUS_MIX = (
    (Status.READY, 55),
    (Status.DEPLOYED, 15),
    (Status.NEW, 10),
    (Status.ALLOCATED, 8),
    (Status.BROKEN, 4),
    (Status.FAILED_DEPLOYMENT, 3),
    (Status.FAILED_COMMISSIONING, 3),
    (Status.FAILED_TESTING, 2),
)
_POWER_TYPES = (("ipmi", 85), ("redfish", 12), ("manual", 3))


def _weighted(rng: random.Random, choices: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def generate_machines(count: int, seed: int = 0, owner: str = "admin") -> list[Machine]:
    """`count` machines, the same ones for the same seed."""
    rng = random.Random(seed)
    ids: set[str] = set()
    names: set[str] = set()
    hosts = list(ipaddress.ip_network("10.0.0.0/16").hosts())
    storage_hosts = list(ipaddress.ip_network("10.1.0.0/16").hosts())
    machines = []
    for index in range(count):
        system_id = "".join(rng.choice(_ID_ALPHABET) for _ in range(6))
        while system_id in ids:
            system_id = "".join(rng.choice(_ID_ALPHABET) for _ in range(6))
        ids.add(system_id)
        hostname = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if hostname in names:
            hostname = f"{hostname}-{index}"
        names.add(hostname)
        status = _weighted(rng, _STATUS_MIX)
        power_type = _weighted(rng, _POWER_TYPES)
        speed = rng.choice((10000, 25000))
        interfaces = [
            {
                "id": index * 2 + nic + 1,
                "name": f"eno{nic + 1}",
                "mac_address": f"52:54:{nic:02x}:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}",
                "fabric_id": nic,
                "speed": speed,
            }
            for nic in range(2)
        ]
        disks = [
            {
                "id": index * 3 + d + 1,
                "name": f"sd{'abc'[d]}",
                "size": rng.choice((240, 480, 960, 1920, 3840)) * 1_000_000_000,
                "model": rng.choice(("SAMSUNG MZ7LH960", "INTEL SSDSC2KB96", "Micron_5300")),
                "serial": f"S{rng.getrandbits(40):010X}",
            }
            for d in range(rng.choice((1, 1, 2, 3)))
        ]
        owned = status in (Status.DEPLOYED, Status.ALLOCATED, Status.FAILED_DEPLOYMENT)
        deployed = status == Status.DEPLOYED
        machine = Machine(
            system_id=system_id,
            hostname=hostname,
            architecture="arm64/generic" if rng.random() < 0.1 else "amd64/generic",
            memory=rng.choice((8192, 16384, 32768, 65536, 131072, 262144)),
            cpu_count=rng.choice((4, 8, 16, 32, 48, 64, 96)),
            cpu_speed=rng.choice((2000, 2400, 2900, 3200)),
            disks=disks,
            interfaces=interfaces,
            addresses=[str(hosts[10 + index]), str(storage_hosts[10 + index])],
            zone=rng.choice(("default", "az1", "az2", "az3")),
            pool=rng.choice(("default", "compute", "compute", "storage")),
            tag_names=sorted(rng.sample(TAGS, rng.randint(0, 3))),
            power_type=power_type,
            status=status,
            power_state="unknown" if power_type == "manual" else ("on" if deployed else "off"),
            owner=owner if owned else None,
            osystem="ubuntu" if deployed else "",
            distro_series=DEFAULT_SERIES if deployed else "",
        )
        machines.append(machine)
    return machines

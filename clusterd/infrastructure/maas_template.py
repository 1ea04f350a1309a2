"""
The ``maas`` infrastructure template: which machines (by count and
constraints), how to deploy them, which volumes, and extra outputs.

Templates come from API clients, so parsing is strict and collects every
problem with its place in the document (``machines[1].constraints.min_cpu:
...``) into one `InvalidInfrastructureTemplate`.  Choosing machines
(`allocate`) lives here too: it is pure, so the driver can call it with no
await between choosing and claiming, which is what keeps two concurrent
creates from picking the same machine.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from outpost.config import ConfigError, Field, load_section, parse_yaml
from rpc.errors import InvalidInfrastructureTemplate

__all__ = [
    "MAX_TEMPLATE",
    "MAX_USER_DATA",
    "RESERVED_OUTPUTS",
    "TEMPLATE_TYPES",
    "Constraints",
    "DeployOptions",
    "MachineGroup",
    "Template",
    "VolumeSpec",
    "allocate",
    "check_template_type",
    "parse_template",
]

#: The templateType values this driver accepts (compared case-insensitively).
TEMPLATE_TYPES = ("maas",)
#: Largest template accepted, in characters.
MAX_TEMPLATE = 1 << 20
#: Largest user_data accepted, in bytes (UTF-8).
MAX_USER_DATA = 256 * 1024
MAX_GROUPS = 64
MAX_COUNT = 1000
MAX_VOLUMES = 16
#: Output names the driver fills itself.
RESERVED_OUTPUTS = frozenset({"machines", "volumes"})

_ROLE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}")  # MAAS tag, zone and pool names
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
_SERIES = re.compile(r"[a-z0-9][a-z0-9/._-]{0,63}")
_DISK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")  # VolumeWork's disk names
_OUTPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


# -- converters (each raises ValueError with the reason) ---------------------


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"must be {what}, not {_short(value)}")
        return value

    return convert


def _whole(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {_short(value)}")
        return value

    return convert


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a list of tag names, not {_short(value)}")
    bad = [_short(t) for t in value if not isinstance(t, str) or not _TAG.fullmatch(t)]
    if bad:
        raise ValueError(f"tag names are letters, digits, '_' and '-'; not {', '.join(bad)}")
    return tuple(dict.fromkeys(value))


def _user_data(value: Any) -> str:
    # Never echoed back: user data often carries keys and passwords.
    if not isinstance(value, str):
        raise ValueError(f"must be text (cloud-init user data), not {type(value).__name__}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_USER_DATA:
        raise ValueError(f"must be at most {MAX_USER_DATA} bytes")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _mapping(value: Any, where: str, problems: list[str]) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a mapping, not {type(value).__name__}")
        return {}
    return value


# -- the template ------------------------------------------------------------


@attrs.frozen
class Constraints:
    """What a machine must have to be picked; every one given must hold."""

    tags: tuple[str, ...] = ()
    zone: str | None = None
    pool: str | None = None
    min_cpu: int = 0
    min_memory_mb: int = 0

    def matches(self, machine: Mapping[str, Any]) -> bool:
        """Whether a machine (as `clusterd.machines.summarize` gives it) meets these constraints."""
        return (
            set(self.tags) <= set(machine.get("tags") or ())
            and (self.zone is None or machine.get("zone") == self.zone)
            and (self.pool is None or machine.get("pool") == self.pool)
            and int(machine.get("cpu_count") or 0) >= self.min_cpu
            and int(machine.get("memory_mb") or 0) >= self.min_memory_mb
        )

    def describe(self) -> str:
        parts = [f"tags={','.join(self.tags)}"] if self.tags else []
        parts += [f"{k}={v}" for k, v in (("zone", self.zone), ("pool", self.pool)) if v is not None]
        parts += [f"{k}>={v}" for k, v in (("min_cpu", self.min_cpu), ("min_memory_mb", self.min_memory_mb)) if v]
        return " ".join(parts) or "no constraints"


@attrs.frozen
class DeployOptions:
    distro_series: str | None = None
    hwe_kernel: str | None = None
    user_data: str | None = attrs.field(default=None, repr=False)

    def work_options(self) -> dict[str, Any]:
        """The options `MachineWork.deploy` takes (user data base64-encoded, as it expects)."""
        options: dict[str, Any] = {"distro_series": self.distro_series, "hwe_kernel": self.hwe_kernel}
        if self.user_data is not None:
            options["user_data"] = base64.b64encode(self.user_data.encode("utf-8", "surrogatepass")).decode("ascii")
        return {k: v for k, v in options.items() if v is not None}


@attrs.frozen
class MachineGroup:
    """`count` machines meeting `constraints`, deployed with `deploy`; `name` is their role in the outputs."""

    name: str
    count: int = 1
    constraints: Constraints = Constraints()
    deploy: DeployOptions = DeployOptions()


@attrs.frozen
class VolumeSpec:
    name: str
    size_gb: int


@attrs.frozen
class Template:
    groups: tuple[MachineGroup, ...]
    volumes: tuple[VolumeSpec, ...] = ()
    #: Extra output values, returned with ``machines`` and ``volumes``.
    outputs: Mapping[str, Any] = attrs.field(factory=dict)
    #: The instance name to use when the request's systemProperties give none.
    name: str | None = None

    @property
    def machine_count(self) -> int:
        return sum(g.count for g in self.groups)


_TOP = [Field("machines", lambda v: v), Field("volumes", lambda v: v, None), Field("outputs", lambda v: v, None),
        Field("name", lambda v: v, None)]
_GROUP = [Field("name", _matching(_ROLE, "a role name (lower-case letters, digits and '-', up to 63)")),
          Field("count", _whole(1, MAX_COUNT), 1), Field("constraints", lambda v: v, None), Field("deploy", lambda v: v, None)]
_CONSTRAINTS = [
    Field("tags", _tags, ()),
    Field("zone", _matching(_NAME, "a MAAS zone name"), None),
    Field("pool", _matching(_NAME, "a MAAS resource pool name"), None),
    Field("min_cpu", _whole(0, 1 << 20), 0),
    Field("min_memory_mb", _whole(0, 1 << 40), 0),
]
_DEPLOY = [
    Field("distro_series", _matching(_SERIES, "a distro series such as jammy or ubuntu/22.04"), None),
    Field("hwe_kernel", _matching(_SERIES, "a kernel name such as hwe-22.04"), None),
    Field("user_data", _user_data, None),
]
_VOLUME = [Field("name", _matching(_DISK, "1-32 letters, digits, '_' or '-'")), Field("size_gb", _whole(1, 1 << 20))]


def check_template_type(template_type: Any) -> None:
    if not isinstance(template_type, str) or template_type.strip().lower() not in TEMPLATE_TYPES:
        raise InvalidInfrastructureTemplate(
            f"templateType must be one of {', '.join(TEMPLATE_TYPES)} for a maas location, not {_short(template_type)}"
        )


def parse_template(text: Any, template_type: Any) -> Template:
    """The template in `text`; `InvalidInfrastructureTemplate` listing every problem."""
    check_template_type(template_type)
    if not isinstance(text, str):
        raise InvalidInfrastructureTemplate(f"the template must be YAML text, not {type(text).__name__}")
    if len(text) > MAX_TEMPLATE:
        raise InvalidInfrastructureTemplate(f"the template is longer than {MAX_TEMPLATE} characters")
    try:
        data = parse_yaml(text)
    except ConfigError as e:
        raise InvalidInfrastructureTemplate("invalid maas template: " + "; ".join(e.problems)) from None
    problems: list[str] = []
    top = load_section(data, "", _TOP, problems)
    groups = _groups(top["machines"], problems) if "machines" in data else ()
    volumes = _volumes(top["volumes"], problems)
    outputs = _outputs(top["outputs"], problems)
    name = top["name"]
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 255):
        problems.append(f"name: must be a non-empty string of up to 255 characters, not {_short(name)}")
        name = None
    if problems:
        raise InvalidInfrastructureTemplate("invalid maas template: " + "; ".join(problems))
    return Template(groups=groups, volumes=volumes, outputs=outputs, name=name)


def _groups(value: Any, problems: list[str]) -> tuple[MachineGroup, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_GROUPS:
        problems.append(f"machines: must be a list of 1 to {MAX_GROUPS} machine groups")
        return ()
    groups = []
    for index, item in enumerate(value):
        where = f"machines[{index}]"
        before = len(problems)
        fields = load_section(item, where, _GROUP, problems)
        constraints = load_section(_mapping(fields["constraints"], f"{where}.constraints", problems),
                                   f"{where}.constraints", _CONSTRAINTS, problems)
        deploy = load_section(_mapping(fields["deploy"], f"{where}.deploy", problems), f"{where}.deploy", _DEPLOY, problems)
        if len(problems) == before:
            groups.append(MachineGroup(fields["name"], fields["count"], Constraints(**constraints), DeployOptions(**deploy)))
    names = [g.name for g in groups]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"machines: the group name {name!r} is used more than once")
    if sum(g.count for g in groups) > MAX_COUNT:
        problems.append(f"machines: at most {MAX_COUNT} machines in all")
    return tuple(groups)


def _volumes(value: Any, problems: list[str]) -> tuple[VolumeSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_VOLUMES:
        problems.append(f"volumes: must be a list of at most {MAX_VOLUMES} volumes")
        return ()
    volumes = []
    for index, item in enumerate(value):
        before = len(problems)
        fields = load_section(item, f"volumes[{index}]", _VOLUME, problems)
        if len(problems) == before:
            volumes.append(VolumeSpec(fields["name"], fields["size_gb"]))
    names = [v.name for v in volumes]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"volumes: the volume name {name!r} is used more than once")
    return tuple(volumes)


def _outputs(value: Any, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"outputs: must be a mapping of names to values, not {type(value).__name__}")
        return {}
    outputs = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _OUTPUT.fullmatch(key):
            problems.append(f"outputs: {_short(key)} is not an output name (a letter or '_', then letters, digits, '_', '.', '-')")
        elif key in RESERVED_OUTPUTS:
            problems.append(f"outputs.{key}: is filled in by the driver and cannot be given")
        elif isinstance(item, (str, int, float, bool)) or item is None:
            outputs[key] = item
        else:
            problems.append(f"outputs.{key}: must be a string, number, boolean or null, not {type(item).__name__}")
    return outputs


# -- choosing machines -------------------------------------------------------


def allocate(
    groups: Sequence[MachineGroup], ready: Iterable[Mapping[str, Any]], claimed: set[str] | frozenset[str]
) -> tuple[list[tuple[MachineGroup, Mapping[str, Any]]], list[str]]:
    """
    Machines for every group out of `ready` (summaries), leaving out
    `claimed` ones: ``(picks, [])``, or ``([], shortfalls)`` naming each group
    that cannot be filled.  Groups with the fewest candidates choose first,
    and each takes the smallest machines that fit, leaving bigger ones for
    groups (and requests) that need them.
    """
    free = sorted(
        (m for m in ready if m.get("status_code") == 4 and not m.get("owner") and m["system_id"] not in claimed),
        key=lambda m: (int(m.get("cpu_count") or 0), int(m.get("memory_mb") or 0), str(m.get("hostname")), m["system_id"]),
    )
    order = sorted(range(len(groups)), key=lambda i: (sum(1 for m in free if groups[i].constraints.matches(m)), i))
    taken: set[str] = set()
    picks: list[tuple[MachineGroup, Mapping[str, Any]]] = []
    shortfalls: list[str] = []
    for index in order:
        group = groups[index]
        candidates = [m for m in free if m["system_id"] not in taken and group.constraints.matches(m)]
        if len(candidates) < group.count:
            shortfalls.append(f"machines[{index}] ({group.name}) wants {group.count} Ready machine(s) with "
                              f"{group.constraints.describe()}; {len(candidates)} free")
            continue
        for machine in candidates[: group.count]:
            taken.add(machine["system_id"])
            picks.append((group, machine))
    if shortfalls:
        return [], sorted(shortfalls)
    order_of = {g.name: i for i, g in enumerate(groups)}
    picks.sort(key=lambda p: order_of[p[0].name])
    return picks, []

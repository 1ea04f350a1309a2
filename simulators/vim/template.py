"""
The simulated VIM's template language: a small subset of OpenStack Heat's
HOT, plus a ``simulation`` section that says how long the work takes and
how it ends.

Why a language of its own rather than "any text": a driver test needs
templates that are *rejected* (so that InvalidInfrastructureTemplate is
exercised for real), templates whose outputs depend on the request's
properties (so that outputs are shown to travel end to end), and templates
that fail with a chosen failure code.  Why Heat's shape: it is what a VIM
template looks like to the people who will read these tests.

Template type ``simulated`` (case-insensitive).  The text is YAML::

    heat_template_version: 2018-08-31      # optional, any value
    description: a web server               # optional string
    parameters:                             # optional: values come from the request's properties
      flavor: {type: string, default: small}
      image: {}                             # no default: the request must give it
    resources:                              # required mapping (may be empty)
      server:
        type: Simulated::Server             # required string
        properties:                         # optional mapping; may use get_param, get_resource
          flavor: {get_param: flavor}
    outputs:                                # optional; {value: V[, description: D]} or V itself
      server_ip: {value: {get_attr: [server, ip]}}
      server_id: {get_resource: server}
      flavor: {get_attr: [server, flavor]}
      fixed: 42
    simulation:                             # optional knobs
      create_duration: 5                    # seconds (default: the simulator's --create-duration)
      delete_duration: 2                    # seconds (default: --delete-duration)
      fail_create: INSUFFICIENT_CAPACITY    # the create request ends FAILED with this code
      fail_delete: INTERNAL_ERROR           # the delete request ends FAILED with this code
      failure_description: no room left     # the failure's description

Intrinsic functions are one-key mappings: ``{get_param: NAME}`` (a declared
parameter), ``{get_resource: NAME}`` (a resource's id) and ``{get_attr:
[RESOURCE, ATTRIBUTE]}`` (outputs only; attributes are ``id``, ``name``,
``type``, ``ip`` and the resource's top-level properties).  References are
checked when the template is parsed; parameter values when infrastructure is
created from it.  Every problem is a `TemplateError` with a message for the
client, never any other exception, whatever the text (tests fuzz it).
"""

from __future__ import annotations

import datetime
import math
import random
import uuid
from typing import Any, Mapping

import attrs
import yaml

__all__ = [
    "TEMPLATE_TYPE",
    "FAILURE_CODES",
    "MAX_TEMPLATE_CHARS",
    "TemplateError",
    "Parameter",
    "ResourceDef",
    "Simulation",
    "Template",
    "Instance",
    "parse_template",
]

TEMPLATE_TYPE = "simulated"

#: Ignition's failure codes; `Simulation.fail_create`/`fail_delete` take one of them.
FAILURE_CODES = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_NOT_FOUND", "INFRASTRUCTURE_ERROR", "INSUFFICIENT_CAPACITY", "INTERNAL_ERROR")

MAX_TEMPLATE_CHARS = 1_000_000
#: YAML aliases let a short text expand to a huge tree; walking it is bounded by these.
MAX_NODES = 20_000
MAX_DEPTH = 64
MAX_NAME = 255
#: One day: a longer "duration" is a typo, and a task that never ends is what `stuck` faults are for.
MAX_DURATION = 86_400.0

_TOP_LEVEL = ("heat_template_version", "description", "parameters", "resources", "outputs", "simulation")
_RESOURCE_KEYS = ("type", "properties", "depends_on", "metadata")
_SIMULATION_KEYS = ("create_duration", "delete_duration", "fail_create", "fail_delete", "failure_description")
_BUILTIN_ATTRIBUTES = ("id", "name", "type", "ip")
_FUNCTIONS = ("get_param", "get_resource", "get_attr")


class TemplateError(ValueError):
    """The template cannot be used; the message says why (it is shown to the client)."""


@attrs.frozen
class Parameter:
    name: str
    has_default: bool = False
    default: Any = None


@attrs.frozen
class ResourceDef:
    name: str
    type: str
    properties: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Simulation:
    create_duration: float | None = None
    delete_duration: float | None = None
    fail_create: str | None = None
    fail_delete: str | None = None
    failure_description: str | None = None


@attrs.frozen
class Instance:
    """What creating infrastructure from a template made: resources (with ids and addresses) and output values."""

    resources: Mapping[str, Mapping[str, Any]]
    outputs: Mapping[str, Any]


@attrs.frozen
class Template:
    description: str
    parameters: Mapping[str, Parameter]
    resources: Mapping[str, ResourceDef]
    #: Output name → the (unresolved) value expression.
    outputs: Mapping[str, Any]
    simulation: Simulation

    def instantiate(self, properties: Mapping[str, Any], rng: random.Random) -> Instance:
        """Resolve parameters from `properties` (or defaults), give each resource an id and an address, evaluate outputs."""
        values: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            if name in properties:
                values[name] = properties[name]
            elif parameter.has_default:
                values[name] = parameter.default
            else:
                raise TemplateError(f"parameter {name!r} has no default and the request's properties do not give it")
        resources: dict[str, dict[str, Any]] = {}
        for name, resource in self.resources.items():
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            resources[name] = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "name": name, "type": resource.type, "ip": ip}
        for name, resource in self.resources.items():
            resources[name]["properties"] = _evaluate(resource.properties, values, resources)
        outputs = {name: _evaluate(expression, values, resources) for name, expression in self.outputs.items()}
        return Instance(resources, outputs)


def _evaluate(value: Any, parameters: Mapping[str, Any], resources: Mapping[str, Mapping[str, Any]]) -> Any:
    function = _function(value)
    if function == "get_param":
        return parameters[value["get_param"]]
    if function == "get_resource":
        return resources[value["get_resource"]]["id"]
    if function == "get_attr":
        resource, attribute = value["get_attr"]
        found = resources[resource]
        if attribute in _BUILTIN_ATTRIBUTES:
            return found[attribute]
        return found["properties"][attribute]
    if isinstance(value, list):
        return [_evaluate(item, parameters, resources) for item in value]
    if isinstance(value, dict):
        return {key: _evaluate(item, parameters, resources) for key, item in value.items()}
    return value


def _function(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        if key in _FUNCTIONS:
            return key  # type: ignore[no-any-return]
    return None


# -- parsing ----------------------------------------------------------------------


def parse_template(text: Any, template_type: Any = TEMPLATE_TYPE) -> Template:
    """The `Template` in `text`, or a `TemplateError` saying what is wrong."""
    if not isinstance(template_type, str) or template_type.strip().lower() != TEMPLATE_TYPE:
        raise TemplateError(f"template type must be {TEMPLATE_TYPE!r}, not {template_type!r}")
    if not isinstance(text, str):
        raise TemplateError(f"the template must be a string of YAML, not {type(text).__name__}")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the template is longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TemplateError(f"not valid YAML: {_one_line(e)}") from None
    except RecursionError:
        raise TemplateError("not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError, AttributeError) as e:
        # PyYAML's constructors raise these for values such as 2001-13-40 or !!int 0b2.
        raise TemplateError(f"not valid YAML: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"the template must be a YAML mapping, not {_kind(data)}")
    data = _plain(data, "template", [0], 0)
    unknown = sorted(key for key in data if key not in _TOP_LEVEL)
    if unknown:
        raise TemplateError(f"unknown top-level key(s) {', '.join(map(repr, unknown))} (known: {', '.join(_TOP_LEVEL)})")
    description = data.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise TemplateError(f"description must be a string, not {_kind(description)}")
    parameters = _parameters(data.get("parameters"))
    if "resources" not in data:
        raise TemplateError("the template has no resources section")
    resources = _resources(data["resources"])
    outputs = _outputs(data.get("outputs"))
    simulation = _simulation(data.get("simulation"))
    for resource in resources.values():
        _check_references(resource.properties, f"resources.{resource.name}.properties", parameters, resources, outputs=False)
    for name, expression in outputs.items():
        _check_references(expression, f"outputs.{name}", parameters, resources, outputs=True)
    return Template(description, parameters, resources, outputs, simulation)


def _parameters(data: Any) -> dict[str, Parameter]:
    out: dict[str, Parameter] = {}
    for name, spec in _section(data, "parameters").items():
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise TemplateError(f"parameters.{name} must be a mapping (e.g. {{default: V}}), not {_kind(spec)}")
        out[name] = Parameter(name, "default" in spec, spec.get("default"))
    return out


def _resources(data: Any) -> dict[str, ResourceDef]:
    out: dict[str, ResourceDef] = {}
    for name, spec in _section(data, "resources").items():
        where = f"resources.{name}"
        if not isinstance(spec, dict):
            raise TemplateError(f"{where} must be a mapping with a type, not {_kind(spec)}")
        unknown = sorted(key for key in spec if key not in _RESOURCE_KEYS)
        if unknown:
            raise TemplateError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(_RESOURCE_KEYS)})")
        kind = spec.get("type")
        if not isinstance(kind, str) or not kind.strip():
            raise TemplateError(f"{where}.type must be a non-empty string, not {kind!r:.80}")
        properties = spec.get("properties")
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            raise TemplateError(f"{where}.properties must be a mapping, not {_kind(properties)}")
        out[name] = ResourceDef(name, kind, properties)
    return out


def _outputs(data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in _section(data, "outputs").items():
        if isinstance(spec, dict) and "value" in spec and set(spec) <= {"value", "description"}:
            spec = spec["value"]
        out[name] = spec
    return out


def _simulation(data: Any) -> Simulation:
    if data is None:
        return Simulation()
    if not isinstance(data, dict):
        raise TemplateError(f"simulation must be a mapping, not {_kind(data)}")
    unknown = sorted(key for key in data if key not in _SIMULATION_KEYS)
    if unknown:
        raise TemplateError(f"simulation: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(_SIMULATION_KEYS)})")
    values: dict[str, Any] = {}
    for key in ("create_duration", "delete_duration"):
        if data.get(key) is not None:
            values[key] = _duration(data[key], f"simulation.{key}")
    for key in ("fail_create", "fail_delete"):
        if data.get(key) is not None:
            if data[key] not in FAILURE_CODES:
                raise TemplateError(f"simulation.{key} must be one of {', '.join(FAILURE_CODES)}, not {data[key]!r:.80}")
            values[key] = data[key]
    if data.get("failure_description") is not None:
        if not isinstance(data["failure_description"], str):
            raise TemplateError(f"simulation.failure_description must be a string, not {_kind(data['failure_description'])}")
        values["failure_description"] = data["failure_description"]
    return Simulation(**values)


def _duration(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DURATION:
        raise TemplateError(f"{where} must be a number of seconds from 0 to {MAX_DURATION:g}, not {value!r:.80}")
    return float(value)


def _section(data: Any, name: str) -> dict[str, Any]:
    """A mapping of names (``parameters``, ``resources``, ``outputs``); null is empty."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TemplateError(f"{name} must be a mapping of names, not {_kind(data)}")
    for key in data:
        if not key.strip() or len(key) > MAX_NAME:
            raise TemplateError(f"{name}: names must be 1 to {MAX_NAME} characters, not {key!r:.80}")
    return data


def _check_references(value: Any, where: str, parameters: Mapping[str, Any], resources: Mapping[str, ResourceDef], outputs: bool) -> None:
    function = _function(value)
    if function == "get_param":
        name = value["get_param"]
        if not isinstance(name, str) or name not in parameters:
            raise TemplateError(f"{where}: get_param names an undeclared parameter {name!r:.80}")
        return
    if function == "get_resource":
        name = value["get_resource"]
        if not isinstance(name, str) or name not in resources:
            raise TemplateError(f"{where}: get_resource names an unknown resource {name!r:.80}")
        return
    if function == "get_attr":
        if not outputs:
            raise TemplateError(f"{where}: get_attr may only be used in outputs")
        arguments = value["get_attr"]
        if not (isinstance(arguments, list) and len(arguments) == 2 and all(isinstance(a, str) for a in arguments)):
            raise TemplateError(f"{where}: get_attr takes [RESOURCE, ATTRIBUTE], not {arguments!r:.80}")
        resource, attribute = arguments
        if resource not in resources:
            raise TemplateError(f"{where}: get_attr names an unknown resource {resource!r:.80}")
        if attribute not in _BUILTIN_ATTRIBUTES and attribute not in resources[resource].properties:
            known = ", ".join([*_BUILTIN_ATTRIBUTES, *resources[resource].properties])
            raise TemplateError(f"{where}: resource {resource!r} has no attribute {attribute!r:.80} (known: {known})")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_references(item, f"{where}[{index}]", parameters, resources, outputs)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_references(item, f"{where}.{key}", parameters, resources, outputs)


def _plain(value: Any, where: str, count: list[int], depth: int) -> Any:
    """`value` as JSON-able data (dates become ISO strings); a copy, so YAML aliases are expanded within bounds."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise TemplateError(f"the template is too large (more than {MAX_NODES} values once aliases are expanded)")
    if depth > MAX_DEPTH:
        raise TemplateError(f"{_at(where)}: nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateError(f"{_at(where)}: {value!r} is not a finite number")
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item, f"{where}[{index}]", count, depth + 1) for index, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TemplateError(f"{_at(where)}: keys must be strings, not {key!r:.80}")
            out[key] = _plain(item, f"{where}.{key}", count, depth + 1)
        return out
    raise TemplateError(f"{_at(where)}: a {_kind(value)} value cannot be used (use strings, numbers, booleans, lists and mappings)")


def _at(where: str) -> str:
    """A place in the template for a message (deep places are cut short)."""
    return where if len(where) <= 120 else where[:117] + "..."


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


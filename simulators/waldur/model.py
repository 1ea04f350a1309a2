"""
Waldur marketplace data: offerings, customers, projects and resources.

`generate` makes a realistic, seeded data set for storage offerings (the
CSCS layout: one service provider, offerings ``capstor``, ``vast`` and
``iopsstor``, customers with projects, resources with storage data types,
quotas, states and orders in progress).  Records are the JSON Waldur
serves (UUIDs as hex, times in ISO 8601); URLs hold `BASE` where the
serving simulator's own ``http://host:port`` goes.
"""

from __future__ import annotations

import datetime
import random
import uuid as uuidlib
from typing import Any

import attrs

__all__ = [
    "BASE",
    "Offering",
    "Customer",
    "Project",
    "WaldurData",
    "generate",
    "make_resource",
    "RESOURCE_STATES",
    "ORDER_STATES",
    "DATA_TYPES",
]

#: Placeholder for the simulator's origin in URLs; replaced when served.
BASE = "@@WALDUR_BASE@@"

RESOURCE_STATES = ("Creating", "OK", "Erred", "Updating", "Terminating", "Terminated")
ORDER_STATES = (
    "pending-consumer",
    "pending-provider",
    "pending-project",
    "pending-start-date",
    "executing",
    "done",
    "erred",
    "canceled",
    "rejected",
)
DATA_TYPES = ("store", "archive", "users", "scratch")

_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)

_ORGS = (
    "University of Zurich", "ETH Zurich", "EPFL", "University of Basel", "University of Bern",
    "University of Geneva", "MeteoSwiss", "Paul Scherrer Institute", "Empa", "University of Lugano",
    "CERN", "University of Lausanne", "ZHAW", "Swiss TPH", "Eawag", "WSL", "Idiap", "FHNW",
)
_UNITS = ("Physics", "Climate", "Biology", "Chemistry", "Materials", "Astro", "Neuro", "Geo", "Data Science", "HPC Lab")
_TOPICS = (
    "climate-sim", "lattice-qcd", "genomics", "cosmo", "turbulence", "protein-fold", "weather",
    "seismic", "ml-train", "plasma", "ocean", "materials-db", "imaging", "hydro", "fusion", "quantum",
)


def _slugify(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@attrs.frozen
class Offering:
    uuid: str  #: hex
    slug: str
    name: str
    provider_slug: str
    provider_name: str
    provider_uuid: str
    category_uuid: str
    plan_uuid: str


@attrs.frozen
class Customer:
    uuid: str
    slug: str
    name: str
    abbreviation: str
    email: str

    def as_offering_customer(self) -> dict[str, Any]:
        """The record of ``GET marketplace-provider-offerings/{uuid}/customers/``."""
        return {
            "uuid": self.uuid,
            "name": self.name,
            "slug": self.slug,
            "abbreviation": self.abbreviation,
            "phone_number": "",
            "email": self.email,
        }


@attrs.frozen
class Project:
    uuid: str
    slug: str
    name: str
    customer: Customer


@attrs.define
class WaldurData:
    offerings: list[Offering]
    customers: list[Customer]
    projects: list[Project]
    resources: list[dict[str, Any]]


def _uuid(rng: random.Random) -> str:
    return uuidlib.UUID(int=rng.getrandbits(128), version=4).hex


def make_resource(
    rng: random.Random,
    offering: Offering,
    project: Project,
    *,
    index: int,
    state: str = "OK",
    data_type: str = "store",
    storage_tb: float | int | None = 10,
    permissions: str | None = "775",
    options: dict[str, Any] | None = None,
    order_state: str | None = None,
    backend_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One marketplace resource as Waldur's ``ResourceSerializer`` renders it."""
    ru = _uuid(rng)
    customer = project.customer
    created = _EPOCH + datetime.timedelta(minutes=index * 7 + rng.randrange(5))
    modified = created + datetime.timedelta(hours=rng.randrange(1, 500))
    name = f"{project.slug} {data_type}"
    slug = _slugify(f"{offering.slug}-{project.slug}-{data_type}-{index}")
    attributes: dict[str, Any] = {"storage_data_type": data_type}
    if permissions is not None:
        attributes["permissions"] = permissions
    order: dict[str, Any] | None = None
    if order_state is not None:
        ou = _uuid(rng)
        order_type = {"Creating": "Create", "Terminating": "Terminate"}.get(state, "Update")
        order = {
            "uuid": ou,
            "url": f"{BASE}/api/marketplace-orders/{ou}/",
            "type": order_type,
            "state": order_state,
            "created": _iso(modified),
            "modified": _iso(modified),
            "offering_uuid": offering.uuid,
            "offering_name": offering.name,
            "resource_uuid": ru,
            "project_uuid": project.uuid,
            "customer_uuid": customer.uuid,
            "attributes": attributes,
            "limits": {"storage": storage_tb} if storage_tb is not None else {},
        }
    return {
        "offering": f"{BASE}/api/marketplace-public-offerings/{offering.uuid}/",
        "offering_name": offering.name,
        "offering_uuid": offering.uuid,
        "offering_description": f"{offering.name} at {offering.provider_name}",
        "offering_type": "Marketplace.Basic",
        "offering_shared": True,
        "offering_billable": True,
        "provider_name": offering.provider_name,
        "provider_uuid": offering.provider_uuid,
        "provider_slug": offering.provider_slug,
        "category_title": "Storage",
        "category_uuid": offering.category_uuid,
        "plan": f"{BASE}/api/marketplace-public-plans/{offering.plan_uuid}/",
        "plan_unit": "month",
        "plan_name": "Storage",
        "plan_uuid": offering.plan_uuid,
        "plan_description": "",
        "attributes": attributes,
        "limits": {"storage": storage_tb} if storage_tb is not None else {},
        "uuid": ru,
        "created": _iso(created),
        "modified": _iso(modified),
        "url": f"{BASE}/api/marketplace-resources/{ru}/",
        "scope": None,
        "description": "",
        "state": state,
        "resource_uuid": None,
        "backend_id": slug if state == "OK" else "",
        "effective_id": "",
        "resource_type": None,
        "project": f"{BASE}/api/projects/{project.uuid}/",
        "project_uuid": project.uuid,
        "project_name": project.name,
        "project_description": "",
        "project_end_date": None,
        "customer_uuid": customer.uuid,
        "customer_name": customer.name,
        "offering_slug": offering.slug,
        "backend_metadata": dict(backend_metadata or {}),
        "is_usage_based": False,
        "is_limit_based": True,
        "name": name,
        "slug": slug,
        "current_usages": {},
        "can_terminate": state in ("OK", "Erred"),
        "end_date": None,
        "end_date_requested_by": None,
        "username": None,
        "downscaled": False,
        "restrict_member_access": False,
        "paused": False,
        "endpoints": [],
        "error_message": "storage backend unreachable" if state == "Erred" else "",
        "error_traceback": "",
        "options": dict(options or {}),
        "available_actions": ["update_limits", "terminate"] if state == "OK" else [],
        "last_sync": _iso(modified),
        "order_in_progress": order,
        "creation_order": None,
        "project_slug": project.slug,
        "customer_slug": customer.slug,
        "user_requires_reconsent": False,
        "renewal_date": None,
    }


def _offerings(rng: random.Random, slugs: tuple[str, ...]) -> list[Offering]:
    provider_uuid, category_uuid = _uuid(rng), _uuid(rng)
    return [
        Offering(
            uuid=_uuid(rng),
            slug=slug,
            name=f"{slug.upper()} storage",
            provider_slug="cscs",
            provider_name="CSCS",
            provider_uuid=provider_uuid,
            category_uuid=category_uuid,
            plan_uuid=_uuid(rng),
        )
        for slug in slugs
    ]


def _customers(rng: random.Random, count: int) -> list[Customer]:
    out: list[Customer] = []
    seen: set[str] = set()
    for i in range(count):
        org = _ORGS[i % len(_ORGS)]
        unit = _UNITS[(i // len(_ORGS)) % len(_UNITS)]
        name = org if i < len(_ORGS) else f"{org} {unit}"
        slug = _slugify(name)
        n = 2
        while slug in seen:  # Waldur makes slugs unique the same way
            slug = f"{_slugify(name)}-{n}"
            n += 1
        seen.add(slug)
        abbreviation = "".join(w[0] for w in name.split() if w[0].isupper())[:8]
        out.append(Customer(_uuid(rng), slug, name, abbreviation, f"hpc@{slug}.example.org"))
    return out


def generate(
    resources: int,
    *,
    seed: int = 0,
    offering_slugs: tuple[str, ...] = ("capstor", "vast", "iopsstor"),
    customers: int | None = None,
) -> WaldurData:
    """A seeded data set of `resources` storage resources (the same seed gives the same data)."""
    rng = random.Random(seed)
    offerings = _offerings(rng, offering_slugs)
    customer_list = _customers(rng, customers if customers is not None else max(3, resources // 40))
    projects: list[Project] = []
    taken: set[str] = set()
    for customer in customer_list:
        for _ in range(rng.randint(1, 6)):
            topic = rng.choice(_TOPICS)
            slug = f"{customer.abbreviation.lower() or 'p'}-{topic}"
            n = 2
            while slug in taken:
                slug = f"{customer.abbreviation.lower() or 'p'}-{topic}-{n}"
                n += 1
            taken.add(slug)
            projects.append(Project(_uuid(rng), slug, f"{topic.replace('-', ' ').title()} ({customer.abbreviation})", customer))
    if not offerings:
        raise ValueError("at least one offering slug is needed")
    weights = ([5, 3, 2] + [1] * len(offerings))[: len(offerings)]
    records: list[dict[str, Any]] = []
    for index in range(resources):
        offering = rng.choices(offerings, weights=weights)[0]
        project = rng.choice(projects)
        state = rng.choices(RESOURCE_STATES, weights=[6, 80, 4, 4, 3, 3])[0]
        order_state = None
        if state in ("Creating", "Updating", "Terminating"):
            order_state = rng.choices(["pending-provider", "executing", "pending-consumer", "pending-project"], weights=[5, 3, 1, 1])[0]
        options: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.05:
            options = {"soft_quota_space": rng.choice([5, 10, 50]), "hard_quota_space": rng.choice([10, 20, 100])}
        elif roll < 0.08:
            options = {"permissions": "2750"}
        elif roll < 0.10:
            options = {"soft_quota_indoes": 1_000_000, "hard_quota_indoes": 2_000_000}
        storage: float | int = rng.choice([1, 2, 5, 10, 20, 50, 100, 200, 500])
        if rng.random() < 0.05:
            storage = rng.choice([0, 0.5, 2.5])
        records.append(
            make_resource(
                rng,
                offering,
                project,
                index=index,
                state=state,
                data_type=rng.choices(DATA_TYPES, weights=[45, 15, 20, 20])[0],
                storage_tb=storage,
                permissions=rng.choice(["775", "770", "2770", "755"]),
                options=options,
                order_state=order_state,
            )
        )
    return WaldurData(offerings, customer_list, projects, records)

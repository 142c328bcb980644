"""A policy read against the registry it will govern: names that do not exist, rules that match
nothing. Compiling already rejects values outside a vocabulary (a country that is not ISO, a
vendor nobody makes); this catches what only the registry knows.

- **error**: a ``tenant`` named without a wildcard that the registry does not have (with the
  closest tenant ids): the rule would never apply to anyone;
- **warning**: a condition none of whose values any entity of the registry has today (no
  deployment on ``huawei`` hardware, no model matching ``qwen/*``): the rule matches nothing
  now. It may be written ahead of a registry change, so this does not block saving.

Raw Cedar is checked against the schema only (``compiler``); its literals are the author's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from registry.snapshot import WEIGHTS, ModelSnap, RegistrySnapshot
from registry.vocabulary import did_you_mean, fold
from router.policy.compiler import CompiledPolicy
from router.policy.conditions import Condition

Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    level: Level
    message: str

    def __str__(self) -> str:
        return f"{self.level}: rule {self.rule_id!r}: {self.message}"


# What the registry has, per condition key: (which entities, their values of that fact).
Inventory = Callable[[RegistrySnapshot], tuple[str, Iterable[str]]]


def _orgs_country(snapshot: RegistrySnapshot) -> tuple[str, Iterable[str]]:
    return "organization", (o.hq_country for o in snapshot.orgs.values() if o.hq_country)


def _org_listings(snapshot: RegistrySnapshot) -> tuple[str, Iterable[str]]:
    return "organization", (i.list for o in snapshot.orgs.values() for i in o.listings)


def _accelerators(model: ModelSnap) -> Iterable[str]:
    return (part.accelerator for part in model.training_hardware or () if part.accelerator)


def _models(values: Callable[[ModelSnap], Iterable[str]]) -> Inventory:
    def inventory(snapshot: RegistrySnapshot) -> tuple[str, Iterable[str]]:
        return "model", (v for m in snapshot.models.values() for v in values(m))

    return inventory


def _deployments(field: str) -> Inventory:
    def values(snapshot: RegistrySnapshot) -> tuple[str, Iterable[str]]:
        found = (getattr(d, field) for d in snapshot.deployments.values())
        return "deployment", (str(v) for v in found if v is not None)

    return values


INVENTORIES: Mapping[str, Inventory] = {
    "tenant": lambda s: ("tenant", (fold(t) for t in s.tenants)),
    "tenant_region": lambda s: ("tenant", (t.region for t in s.tenants.values() if t.region)),
    "purpose": lambda s: ("tenant", (p for t in s.tenants.values() for p in t.purposes)),
    "caller_region": lambda s: ("tenant", (t.region for t in s.tenants.values() if t.region)),
    "developer_country": _orgs_country,
    "developer_country_any_ancestor": _orgs_country,
    "developer_country_all_ancestors": _orgs_country,
    "publisher_country": _orgs_country,
    "operator_country": _orgs_country,
    "jurisdiction_tag": lambda s: (
        "organization",
        (fold(tag) for o in s.orgs.values() for tag in o.jurisdiction_tags),
    ),
    "training_hardware_vendor": _models(lambda m: m.training_hardware_vendors),
    "training_hardware_vendor_any_ancestor": _models(lambda m: m.training_hardware_vendors),
    "training_accelerator": _models(_accelerators),
    "training_accelerator_any_ancestor": _models(_accelerators),
    "training_data_country": _models(lambda m: m.training_data_countries or ()),
    "training_data_country_any_ancestor": _models(lambda m: m.training_data_countries or ()),
    "restricted_topic": _models(lambda m: (r.topic for r in m.behavioral_restrictions)),
    "restricted_topic_on_weights": _models(
        lambda m: (r.topic for r in m.behavioral_restrictions if r.observed_on == WEIGHTS)
    ),
    "developer_listed_on": _org_listings,
    "operator_listed_on": _org_listings,
    "developer_controlled_by": lambda s: ("organization", (fold(o) for o in s.orgs)),
    "license": lambda s: ("license", (fold(i) for i in s.licenses)),
    "license_any": lambda s: ("license", (fold(i) for i in s.licenses)),
    "location_country": _deployments("location_country"),
    "hosting": _deployments("hosting"),
    "hardware_vendor": _deployments("hardware_vendor"),
    "accelerator": _deployments("accelerator"),
    "model": lambda s: ("model", (fold(m) for m in s.models)),
    "model_family": lambda s: ("model", (fold(m.family) for m in s.models.values() if m.family)),
    "deployment": lambda s: ("deployment", (fold(d) for d in s.deployments)),
}


def check_against_registry(
    compiled: CompiledPolicy, snapshot: RegistrySnapshot
) -> tuple[Finding, ...]:
    """Every finding of ``compiled`` against ``snapshot``, rule by rule, in policy order."""
    findings: list[Finding] = []
    for rule in compiled.rules:
        for condition in (*rule.selectors, *rule.requirements):
            findings += _check(rule.id, condition, snapshot)
    return tuple(findings)


def _check(rule_id: str, condition: Condition, snapshot: RegistrySnapshot) -> list[Finding]:
    inventory = INVENTORIES.get(condition.key)
    if inventory is None or not isinstance(condition.value, tuple):
        return []
    kind, values = inventory(snapshot)
    present = set(values)
    findings = []
    if condition.key == "tenant":
        for name in condition.value:
            if "*" not in name and name not in present:
                hint = did_you_mean(name, present)
                message = f"tenant: no tenant is called {name!r}{hint}"
                findings.append(Finding(rule_id, "error", message))
    if not any(_matches(value, present) for value in condition.value):
        shown = ", ".join(condition.value)
        findings.append(
            Finding(
                rule_id,
                "warning",
                f"{condition.key}: no {kind} of the registry has {shown}; "
                "the rule matches nothing today",
            )
        )
    return findings


def _matches(value: str, present: set[str]) -> bool:
    if "*" in value:
        return any(fnmatch.fnmatchcase(item, value) for item in present)
    return value in present

"""What-if: replay recorded routing decisions against a draft policy before rolling it out.

Each recorded ``RoutingDecision`` (as a dict) lists its candidates in the order the router
considered them, with what the live policy said. The draft decides the same candidates for the
same tenant, action and context; a record *changes* when the set of allowed deployments or the
first choice (the first allowed candidate) differs. Deployments since removed from the registry
are denied, as they would be live.

Recorded dict (extra keys are ignored)::

    {"request_id": "...", "tenant_id": "acme", "requested_model": "chat", "action": "infer",
     "context": {"classification": "internal", "purpose": null, "caller_region": null},
     "candidates": [{"deployment": "d1", "allowed": true, "rule_ids": ["baseline-approved"]}],
     "chosen_deployment": "d1", "status": "ok"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from registry.snapshot import PolicySnap, RegistrySnapshot
from registry.validation import check_purpose, check_region
from router.policy.context import RequestContext
from router.policy.engine import CandidateDecision, PolicyEngine
from router.policy.errors import PolicyError


@dataclass(frozen=True, slots=True)
class WhatIfChange:
    """One recorded request whose outcome the draft would change."""

    index: int  # position in the recorded sequence
    request_id: str | None
    tenant_id: str
    requested_model: str | None
    allowed_before: tuple[str, ...]
    allowed_after: tuple[str, ...]
    first_before: str | None
    first_after: str | None
    chosen_deployment: str | None
    newly_denied: tuple[CandidateDecision, ...]  # with the draft's rule ids and reasons
    newly_allowed: tuple[CandidateDecision, ...]

    @property
    def first_choice_changed(self) -> bool:
        return self.first_before != self.first_after

    @property
    def chosen_now_denied(self) -> bool:
        """The deployment that actually served the request would now be denied."""
        chosen = self.chosen_deployment
        return chosen is not None and chosen not in self.allowed_after


@dataclass(frozen=True, slots=True)
class WhatIfReport:
    policy_version: int
    registry_version: int
    examined: int
    changes: tuple[WhatIfChange, ...]
    skipped: int = 0  # records whose context no request could declare today (see what_if)

    @property
    def changed(self) -> int:
        return len(self.changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the admin API and ``policy what-if --json``."""
        return {
            "examined": self.examined,
            "skipped": self.skipped,
            "changed": self.changed,
            "registry_version": self.registry_version,
            "changes": [
                {
                    **asdict(change),
                    "first_choice_changed": change.first_choice_changed,
                    "chosen_now_denied": change.chosen_now_denied,
                }
                for change in self.changes
            ],
        }


def what_if(
    snapshot: RegistrySnapshot, draft: PolicySnap, recorded: Sequence[Mapping[str, Any]]
) -> WhatIfReport:
    """Which recorded requests would the draft policy decide differently?

    Records without candidates (refused before routing: bad key, unknown model, bad JSON) had
    no policy decision to replay and are skipped; ``examined`` counts the replayed ones. So are
    records whose declared purpose or region is outside today's vocabulary (free text recorded
    before vocabularies existed, which a request can no longer declare): ``skipped`` counts
    them."""
    engine = PolicyEngine.build(snapshot, draft)
    routed = [record for record in recorded if record.get("candidates")]
    replayable = [record for record in routed if _declared_in_vocabulary(record.get("context"))]
    changes = []
    for index, record in enumerate(replayable):
        change = _replay(engine, index, record)
        if change is not None:
            changes.append(change)
    skipped = len(routed) - len(replayable)
    return WhatIfReport(
        draft.version, snapshot.version, len(replayable), tuple(changes), skipped=skipped
    )


def _declared_in_vocabulary(raw: object) -> bool:
    fields = raw if isinstance(raw, Mapping) else {}
    try:
        for value, check in (
            (fields.get("purpose"), check_purpose),
            (fields.get("caller_region"), check_region),
        ):
            if value is not None:
                check(str(value))
    except ValueError:
        return False
    return True


def _replay(engine: PolicyEngine, index: int, record: Mapping[str, Any]) -> WhatIfChange | None:
    tenant_id, candidates = _required(record, index)
    before = {c["deployment"]: bool(c.get("allowed")) for c in candidates}
    after = engine.decide_many(
        tenant_id=tenant_id,
        action=str(record.get("action") or "infer"),
        deployment_ids=list(before),
        context=_context(record.get("context"), index),
    )
    allowed_before = tuple(d for d, allowed in before.items() if allowed)
    allowed_after = tuple(d.deployment_id for d in after if d.allowed)
    if allowed_before == allowed_after:
        return None
    return WhatIfChange(
        index=index,
        request_id=record.get("request_id"),
        tenant_id=tenant_id,
        requested_model=record.get("requested_model"),
        allowed_before=allowed_before,
        allowed_after=allowed_after,
        first_before=allowed_before[0] if allowed_before else None,
        first_after=allowed_after[0] if allowed_after else None,
        chosen_deployment=record.get("chosen_deployment"),
        newly_denied=tuple(d for d in after if before[d.deployment_id] and not d.allowed),
        newly_allowed=tuple(d for d in after if d.allowed and not before[d.deployment_id]),
    )


def _required(record: Mapping[str, Any], index: int) -> tuple[str, list[Mapping[str, Any]]]:
    tenant_id = record.get("tenant_id")
    candidates = record.get("candidates")
    if not isinstance(tenant_id, str) or not isinstance(candidates, list):
        raise PolicyError(f"recorded decision #{index}: needs tenant_id and a candidates list")
    named = (isinstance(c, Mapping) and isinstance(c.get("deployment"), str) for c in candidates)
    if not all(named):
        raise PolicyError(f"recorded decision #{index}: each candidate needs a deployment id")
    return tenant_id, candidates


def _context(raw: object, index: int) -> RequestContext:
    """The recorded context; a missing classification means the tenant's default."""
    fields = raw if isinstance(raw, Mapping) else {}
    try:
        return RequestContext(
            classification=fields.get("classification") or "public",
            purpose=fields.get("purpose"),
            caller_region=fields.get("caller_region"),
        )
    except ValueError as error:
        raise PolicyError(f"recorded decision #{index}: {error}") from None

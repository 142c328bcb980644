"""The request attributes a policy may read, and why they can only tighten a decision.

A caller chooses its own request headers, so nothing it sends may widen what its tenant is
allowed to use:

- ``classification`` is never below the tenant's ``default_classification``: the effective
  classification is the stricter of the two (``RequestContext.effective_for``). Compiled
  ``deny`` rules only match upward-closed sets of classifications and ``allow`` rules only
  downward-closed ones, so raising the classification can add denials, never remove one.
- ``purpose`` and ``caller_region`` are optional. A ``deny`` on them fires only when the caller
  declares a matching value; an ``allow`` on them holds when the caller declares nothing or a
  listed value. Declaring something can therefore only add denials.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from registry.snapshot import TenantSnap
from registry.validation import check_purpose, check_region
from router.policy.schema import CLASSIFICATIONS, classification_rank


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a request says about itself (from headers); becomes the Cedar ``context``."""

    classification: str
    purpose: str | None = None
    caller_region: str | None = None

    def __post_init__(self) -> None:
        """Every attribute in its canonical spelling (as rules spell it), or ValueError."""
        if self.classification not in CLASSIFICATIONS:
            raise ValueError(
                f"unknown data classification {self.classification!r}; "
                f"expected one of {', '.join(CLASSIFICATIONS)}"
            )
        if self.purpose is not None:
            object.__setattr__(self, "purpose", check_purpose(self.purpose))
        if self.caller_region is not None:
            object.__setattr__(self, "caller_region", check_region(self.caller_region))

    def effective_for(self, tenant: TenantSnap) -> RequestContext:
        """This context with the classification raised to the tenant's default if that is stricter.

        A tenant default that is not a known label counts as ``restricted`` (fail closed)."""
        floor = classification_rank(tenant.default_classification)
        if classification_rank(self.classification) >= floor:
            return self
        return replace(self, classification=CLASSIFICATIONS[floor])

    def cedar(self) -> dict[str, str]:
        """The Cedar ``context`` record; undeclared optional attributes are left out."""
        record = {"classification": self.classification}
        if self.purpose is not None:
            record["purpose"] = self.purpose
        if self.caller_region is not None:
            record["caller_region"] = self.caller_region
        return record

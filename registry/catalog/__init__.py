"""The built-in catalog: well-known organizations, licenses and models (``catalog.yaml``).

Applied once, on first start, into a registry that has no organizations; never pruned and never
re-applied, so edits made since (approvals, corrected facts, deletions) are never overwritten.
The facts and their sources are described at the top of ``catalog.yaml``.
"""

from __future__ import annotations

from importlib.resources import files

from sqlalchemy import Engine

from registry.db import session_scope
from registry.gitops import apply
from registry.service import ConflictError, read_all

CATALOG_ACTOR = "catalog"


def catalog_text() -> str:
    """The catalog file as shipped in the package."""
    return files("registry.catalog").joinpath("catalog.yaml").read_text(encoding="utf-8")


def load_catalog(engine: Engine) -> int | None:
    """Apply the catalog to an empty registry (no organizations); returns the new registry
    version, or None when the registry already had organizations (nothing is written).

    Safe when several replicas start at once: the loser of the race finds the catalog loaded."""
    if _has_organizations(engine):
        return None
    try:
        return apply(engine, catalog_text(), actor=CATALOG_ACTOR, prune=False).version
    except ConflictError:
        if _has_organizations(engine):
            return None
        raise


def _has_organizations(engine: Engine) -> bool:
    with session_scope(engine) as session:
        return bool(read_all(session=session, kind="organization"))

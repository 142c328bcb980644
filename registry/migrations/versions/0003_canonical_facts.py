"""Facts in their canonical spelling; the purposes a tenant's requests may declare.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Rewrites hardware vendors, accelerators, training hardware vendors, countries and regions to
their canonical spelling (``registry.vocabulary``: ``Huawei Technologies`` -> ``huawei``,
``Ascend 910B`` -> ``ascend-910b``). A stored value that maps to nothing becomes unknown
(NULL): it then fails closed, where before it was text that no rule matched. Every value
rewritten or cleared is reported (a warning) and recorded in ``registry_changes`` by the actor
``migration:0003`` under a new registry version, so the change log shows what was there.
The downgrade drops ``tenants.purposes``; spellings stay canonical.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from registry.migrations.changelog import record_changes
from registry.validation import check_region
from registry.vocabulary import (
    normalise_accelerator,
    normalise_country,
    normalise_hardware_vendor,
)

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ACTOR = "migration:0003"

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# (table, kind in the change log, key column, column, canonical spelling)
CANONICAL: tuple[tuple[str, str, str, str, Callable[[str], str]], ...] = (
    ("deployments", "deployment", "id", "hardware_vendor", normalise_hardware_vendor),
    ("deployments", "deployment", "id", "accelerator", normalise_accelerator),
    ("deployments", "deployment", "id", "location_country", normalise_country),
    ("deployments", "deployment", "id", "location_region", check_region),
    ("models", "model", "id", "training_hardware_vendor", normalise_hardware_vendor),
    ("organizations", "organization", "id", "hq_country", normalise_country),
    ("organizations", "organization", "id", "incorporation_country", normalise_country),
    ("tenants", "tenant", "id", "region", check_region),
)


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("purposes", JSON_TYPE, nullable=False, server_default=sa.text("'[]'")),
    )
    connection = op.get_bind()
    changes = [
        change
        for table, kind, key, column, canonical in CANONICAL
        for change in _canonicalise(connection, table, kind, key, column, canonical)
    ]
    record_changes(connection, ACTOR, changes)


def _canonicalise(
    connection: sa.Connection,
    table: str,
    kind: str,
    key: str,
    column: str,
    canonical: Callable[[str], str],
) -> list[dict[str, Any]]:
    rows = connection.execute(
        sa.text(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL")
    ).all()
    changes = []
    for entity_id, value in rows:
        try:
            new: str | None = canonical(value)
        except ValueError as error:
            new = None
            log.warning("%s %s: %s %r is now unknown: %s", kind, entity_id, column, value, error)
        if new == value:
            continue
        connection.execute(
            sa.text(f"UPDATE {table} SET {column} = :new WHERE {key} = :id"),
            {"new": new, "id": entity_id},
        )
        changes.append(
            {"kind": kind, "id": entity_id, "before": {column: value}, "after": {column: new}}
        )
    return changes


def downgrade() -> None:
    # Plain ALTER (SQLite >= 3.35 has it): a batch rebuild of `tenants` would break the
    # foreign keys of api_keys on SQLite.
    op.execute("ALTER TABLE tenants DROP COLUMN purposes")

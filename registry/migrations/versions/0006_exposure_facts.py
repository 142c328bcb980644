"""Exposure facts per registry version, and the exposure report's covering index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``exposure_facts`` holds, per (registry version, deployment), the facts the exposure report
groups by, as they stood at that version (``router.exposure``). Audit rows written before this
revision have no recorded facts: the report shows them as ``unknown`` rather than guess from
today's registry. The index lets both databases aggregate a time window of routing decisions
from the index alone; building it reads the audit table once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPORT_COLUMNS = [
    "created_at",
    "registry_version",
    "chosen_deployment",
    "tenant_id",
    "route",
    "total_tokens",
]

# SQLite groups with a sort unless rows arrive in the GROUP BY's order: this index holds them in
# exactly the report's order (UTC day, version, deployment, tenant, route), so the aggregation
# streams (about 3x faster on a large log). PostgreSQL hash-aggregates the covering index above.
# An expression index: the models cannot declare it (SQLAlchemy does not reflect it on SQLite).
SQLITE_DAY_INDEX = """
CREATE INDEX ix_routing_decisions_exposure_day ON routing_decisions (
    substr(created_at, 1, 10), registry_version, chosen_deployment, tenant_id, route,
    created_at, total_tokens
)"""


def upgrade() -> None:
    op.create_table(
        "exposure_facts",
        sa.Column("registry_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("deployment_id", sa.String(), nullable=False),
        sa.Column("dimension", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint(
            "registry_version",
            "deployment_id",
            "dimension",
            "value",
            name=op.f("pk_exposure_facts"),
        ),
    )
    op.create_index("ix_routing_decisions_exposure", "routing_decisions", REPORT_COLUMNS)
    if op.get_bind().dialect.name == "sqlite":
        op.execute(SQLITE_DAY_INDEX)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_routing_decisions_exposure_day")
    op.drop_index("ix_routing_decisions_exposure", table_name="routing_decisions")
    op.drop_table("exposure_facts")

"""Exposure facts per registry version, and the exposure report's covering index.

Revision ID: 0005
Revises: 0004
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

revision: str = "0005"
down_revision: str | None = "0004"
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


def downgrade() -> None:
    op.drop_index("ix_routing_decisions_exposure", table_name="routing_decisions")
    op.drop_table("exposure_facts")

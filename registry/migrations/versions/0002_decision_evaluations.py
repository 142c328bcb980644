"""Store each policy verdict on a request's candidates once, not in every audit row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Rows written before this revision keep their candidates inline in
``routing_decisions.candidates``; newer rows leave it ``[]`` and refer to a
``decision_evaluations`` row by digest. Nothing is rewritten, so the upgrade is instant on a
large audit log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decision_evaluations",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("candidates", JSON_TYPE, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_evaluations")),
    )
    op.add_column("routing_decisions", sa.Column("evaluation_id", sa.String(), nullable=True))


def downgrade() -> None:
    # Rows that refer to an evaluation get their candidates back inline first.
    op.execute(
        "UPDATE routing_decisions SET candidates = (SELECT e.candidates FROM decision_evaluations"
        " e WHERE e.id = routing_decisions.evaluation_id) WHERE evaluation_id IS NOT NULL"
    )
    with op.batch_alter_table("routing_decisions") as batch:
        batch.drop_column("evaluation_id")
    op.drop_table("decision_evaluations")

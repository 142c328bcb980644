"""Limits and budgets of tenants and API keys; deployment prices for cost budgets.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

``tenants.limits`` and ``api_keys.limits`` hold ``registry.limits.Limits`` as JSON (NULL: no
limit). ``deployments.input_cost_per_mtok_usd`` / ``output_cost_per_mtok_usd`` are prices in
US dollars per million tokens (NULL: unknown, such a deployment's traffic costs nothing in a
cost budget). Only new nullable columns: existing rows are unchanged. The index on
``routing_decisions (key_id, created_at)`` serves a key's spend over its budget period.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
PRICES = ("input_cost_per_mtok_usd", "output_cost_per_mtok_usd")


def upgrade() -> None:
    for table in ("tenants", "api_keys"):
        op.add_column(table, sa.Column("limits", JSON_TYPE, nullable=True))
    for column in PRICES:
        op.add_column("deployments", sa.Column(column, sa.Float(), nullable=True))
    op.create_index("ix_routing_decisions_key_spend", "routing_decisions", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_routing_decisions_key_spend", table_name="routing_decisions")
    # Plain ALTER (SQLite >= 3.35 has it): a batch rebuild of a referenced table would break
    # the foreign keys that point at it on SQLite (as in 0003).
    for column in PRICES:
        op.execute(f"ALTER TABLE deployments DROP COLUMN {column}")
    for table in ("tenants", "api_keys"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN limits")

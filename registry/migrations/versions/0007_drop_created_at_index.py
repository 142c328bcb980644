"""Drop the audit log's single-column ``created_at`` index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

The exposure report's covering index (0006) starts with ``created_at``, so it answers every
query the single-column index did (a time window, a prune's cut); keeping both cost every
request one more index update in the audit writer. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_routing_decisions_created_at", table_name="routing_decisions")


def downgrade() -> None:
    op.create_index("ix_routing_decisions_created_at", "routing_decisions", ["created_at"])

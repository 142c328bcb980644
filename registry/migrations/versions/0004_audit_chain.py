"""Hash-chained audit rows, signed checkpoints, and the ``sanitized`` flag.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Rows written before this revision keep NULL chain fields (``audit verify`` reports them as
unchained, not as tampered). Nothing is rewritten, so the upgrade is instant on a large log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

TIMESTAMP = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("routing_decisions") as batch:
        batch.add_column(
            sa.Column("sanitized", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch.add_column(sa.Column("chain_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(), nullable=True))
    op.create_index(
        op.f("ix_routing_decisions_chain_id"), "routing_decisions", ["chain_id"], unique=False
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("chain_id", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("signature", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index(
        op.f("ix_audit_checkpoints_chain_id"), "audit_checkpoints", ["chain_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_checkpoints_chain_id"), table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_index(op.f("ix_routing_decisions_chain_id"), table_name="routing_decisions")
    with op.batch_alter_table("routing_decisions") as batch:
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
        batch.drop_column("chain_id")
        batch.drop_column("sanitized")

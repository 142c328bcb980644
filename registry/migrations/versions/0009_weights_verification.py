"""Remembered weights checks (SHA-256 digests and signature verifications of local weights).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``weights_checks`` lets a gateway start verify the bundled model's weights without hashing
them again while the file keeps its size and modification time (``registry.weights``). The
results themselves are registry writes (claims, review status), in the change log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "weights_checks",
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_weights_checks")),
    )


def downgrade() -> None:
    op.drop_table("weights_checks")

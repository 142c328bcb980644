"""A note on a registry change: why a reviewer approved or blocked (the admin console).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

``registry_changes.note`` holds the free text a reviewer gives with a write (``Writer.update``
with ``note=``); it never decides anything, it is there for the humans reading the change log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registry_changes") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registry_changes") as batch:
        batch.drop_column("note")

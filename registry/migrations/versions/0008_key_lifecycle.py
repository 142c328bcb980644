"""API key lifecycle: owner, description, expiry, last use, allow-lists, rotation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

New columns of ``api_keys``, all nullable (existing keys keep working as before: no owner, no
expiry, no allow-list, never rotated):

- ``owner``, ``description``: free text for people;
- ``expires_at``: the key stops working at that time (checked at each request);
- ``last_used_at``: written in batches by the gateways (coarse; docs/keys.md);
- ``allowed_routes``, ``allowed_models``: JSON lists narrowing what the key may call;
- ``previous_key_hash`` (unique), ``previous_prefix``, ``previous_valid_until``: after a
  rotation, the replaced key's hash and how long it stays valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("owner", sa.String()),
    ("description", sa.String()),
    ("expires_at", TIMESTAMP),
    ("allowed_routes", JSON_TYPE),
    ("allowed_models", JSON_TYPE),
    ("last_used_at", TIMESTAMP),
    ("previous_key_hash", sa.String()),
    ("previous_prefix", sa.String()),
    ("previous_valid_until", TIMESTAMP),
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:  # SQLite: a unique constraint needs batch
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.create_unique_constraint(op.f("uq_api_keys_previous_key_hash"), ["previous_key_hash"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("uq_api_keys_previous_key_hash"), type_="unique")
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)

"""What a data migration rewrote, recorded in ``registry_changes`` under a new registry version
(actor ``migration:NNNN``), so the change log shows what was there before."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


def record_changes(
    connection: sa.Connection, actor: str, changes: Sequence[dict[str, Any]]
) -> None:
    """``changes``: ``{kind, id, before, after}`` each; nothing is recorded when empty."""
    if not changes:
        return
    version = connection.execute(
        sa.text("SELECT version FROM registry_state WHERE id = 1")
    ).scalar()
    version = (version or 0) + 1
    connection.execute(
        sa.text("UPDATE registry_state SET version = :v WHERE id = 1"), {"v": version}
    )
    now = datetime.now(UTC)
    for change in changes:
        connection.execute(
            sa.text(
                "INSERT INTO registry_changes (version, at, actor, kind, entity_id, op, before, "
                "after) VALUES (:version, :at, :actor, :kind, :entity_id, 'update', :before, "
                ":after)"
            ),
            {
                "version": version,
                "at": now,
                "actor": actor,
                "kind": change["kind"],
                "entity_id": change["id"],
                "before": json.dumps(change["before"]),
                "after": json.dumps(change["after"]),
            },
        )

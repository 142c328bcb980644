"""When API keys were last used: written in batches, never per request, never a registry change.

The gateway keeps the last use of each key in memory and hands the batch here every
``key_last_used_flush_s`` (and at shutdown). The write bumps no registry version and logs no
change (a key's use is not an edit of the registry, and replicas must not reload for it); a
later time never goes backwards, whichever replica writes last.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, or_, update

from registry.db import write_connection
from registry.models import ApiKey
from registry.reads import table


def record_key_use(*, engine: Engine, last_used: Mapping[str, float]) -> None:
    """Store ``{key id: UNIX time of its last use}`` (keys since deleted are skipped)."""
    if not last_used:
        return
    keys = table(ApiKey)
    at = bindparam("at", type_=keys.c.last_used_at.type)
    query = (
        update(keys)
        .where(keys.c.id == bindparam("key_id"))
        .where(or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < at))
        .values(last_used_at=at)
    )
    rows = [
        {"key_id": key_id, "at": datetime.fromtimestamp(moment, UTC)}
        for key_id, moment in sorted(last_used.items())  # one lock order for every writer
    ]
    with write_connection(engine) as connection:
        connection.execute(query, rows)

"""``audit prune`` also drops the exposure facts no remaining record needs: every version older
than the oldest remaining record and than the registry's current version (before, the table
grew by ~10 rows per deployment per registry version for ever)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from registry.audit_record import AuditRecord, ChainHead
from registry.audit_store import prune, store_records
from registry.exposure_store import record_facts
from registry.service import write_transaction

NOW = datetime.now(UTC)


def _versions(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        query = "SELECT DISTINCT registry_version FROM exposure_facts ORDER BY 1"
        return list(connection.execute(text(query)).scalars())


def _record(registry_version: int, age: timedelta) -> AuditRecord:
    return AuditRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        created_at=NOW - age,
        status="ok",
        registry_version=registry_version,
        chosen_deployment="d1",
    )


def test_prune_keeps_the_facts_of_remaining_records_and_of_the_current_version(
    engine: Engine,
) -> None:
    for n in range(4):  # registry versions 1..4
        with write_transaction(engine=engine, actor="test") as writer:
            writer.create("tenant", {"id": f"t{n}", "name": f"T{n}"})
    for version in range(1, 5):
        facts = {"d1": {"developer_country": ("US",)}}
        record_facts(engine=engine, registry_version=version, facts=facts)
    records = [_record(1, timedelta(days=30)), _record(2, timedelta(days=1))]
    store_records(engine=engine, head=ChainHead(uuid.uuid4().hex), records=records)

    pruned = prune(engine=engine, before=NOW - timedelta(days=7), marks=[])
    assert (pruned.rows, pruned.exposure_facts) == (1, 1)
    assert _versions(engine) == [2, 3, 4]  # version 2's row remains; 4 is current

    pruned = prune(engine=engine, before=NOW, marks=[])
    assert (pruned.rows, pruned.exposure_facts) == (1, 2)
    assert _versions(engine) == [4]

"""What docs/deploy.md ("Upgrades") says the code does when versions meet one database: an
older gateway does not start on a schema a newer one migrated (so a rollback needs the backup
taken before the upgrade). If this changes, the upgrade procedure in the docs must too."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from registry.db import current_revision, migrate
from registry.errors import SchemaTooNew

FUTURE_REVISION = "9999_from_a_newer_release"


def test_an_older_gateway_refuses_a_newer_schema(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE_REVISION}
        )
    with pytest.raises(SchemaTooNew, match=f"revision {FUTURE_REVISION}, which this version"):
        migrate(engine)
    assert current_revision(engine) == FUTURE_REVISION  # nothing was changed or downgraded

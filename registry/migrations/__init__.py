"""Alembic migrations of the registry schema, run by ``registry.db.migrate``.

A package (not just a folder) so that ``env.py`` and ``versions/`` ship inside the wheel."""

"""Every error the registry raises; import them through :mod:`registry.service`.

    RegistryError              .message
    ├── ValidationFailed       bad input (.field names it, or None); nothing changed
    ├── NotFoundError          no entity with that id
    ├── ConflictError          stale expected version, duplicate id, concurrent write
    ├── BusyError              the database did not answer in time: no pooled connection free
    │                          within the pool timeout, or the write lock still held by another
    │                          writer after the lock timeout; nothing changed, retry later
    └── SchemaTooNew           the database's schema revision is one this version does not know
                               (a newer version migrated it); nothing changed

They live in their own module so that :mod:`registry.db` (which turns pool and lock timeouts
into ``BusyError``) and :mod:`registry.service` share one hierarchy without importing each
other.
"""

from __future__ import annotations


class RegistryError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(RegistryError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(RegistryError):
    pass


class ConflictError(RegistryError):
    pass


class BusyError(RegistryError):
    pass


class SchemaTooNew(RegistryError):
    pass

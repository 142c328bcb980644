"""FastAPI dependencies of the admin API: context, session, the calling key, registry writes.

The admin app keeps one :class:`AdminContext` in ``app.state.admin`` (set by
``router.admin.build_admin_app``); routes reach it only through these ``Annotated`` aliases:

    ContextDep    the engine, settings and post-write hook
    SessionDep    a read session (committed, or rolled back on error)
    AdminCaller   the key behind ``Authorization: Bearer``, with the ``admin`` scope
    AuditCaller   ... with ``admin``, ``compliance`` or ``compliance_org`` (read-only audit
                  endpoints; see ``Caller.readable_tenant`` for whose records it may read)

Keys are looked up by hash in the database on every admin request: admin traffic is low and
this way a disabled key stops working at once, without waiting for a snapshot reload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, TypeVar, cast

from fastapi import Depends, Header, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.keys import hash_key
from registry.service import Writer, find_key, write_transaction
from router.errors import AuthenticationFailed, PermissionDenied
from router.settings import Settings

log = logging.getLogger("provenance_router.admin")
T = TypeVar("T")
ORG_WIDE_SCOPES = frozenset({"admin", "compliance_org"})


@dataclass(frozen=True, slots=True)
class AdminContext:
    engine: Engine
    settings: Settings
    on_change: Callable[[], None] | None = None  # e.g. reload the gateway's snapshot

    def write(self, *, actor: str, operation: Callable[[Writer], T]) -> T:
        """Run ``operation`` in one registry write transaction; after a commit that changed
        something, call ``on_change`` (a failing hook is logged: the write itself stands)."""
        with write_transaction(engine=self.engine, actor=actor) as writer:
            result = operation(writer)
            changed = writer.version is not None
        if changed and self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("registry change hook failed after a committed write")
        return result


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the API key, its tenant and scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        """How this caller appears in the registry change log."""
        return f"key:{self.key_id}"

    @property
    def reads_every_tenant(self) -> bool:
        """Admin keys and the organisation-wide grant read every tenant's audit records."""
        return not self.scopes.isdisjoint(ORG_WIDE_SCOPES)

    def readable_tenant(self, requested: str | None, *, param: str) -> str | None:
        """The tenant whose records a read asking for ``requested`` (``None``: any) may see;
        ``None`` means every tenant. A ``compliance`` key sees only its own tenant: asking for
        another one is refused (403), asking for none is narrowed to its own."""
        if self.reads_every_tenant:
            return requested
        if requested is not None and requested != self.tenant:
            raise PermissionDenied(
                f"this API key reads only tenant {self.tenant!r}; reading tenant {requested!r} "
                "needs scope admin or compliance_org",
                param=param,
            )
        return self.tenant


def get_context(request: Request) -> AdminContext:
    return cast(AdminContext, request.app.state.admin)


ContextDep = Annotated[AdminContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with session_scope(context.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
    return token.strip()


def current_caller(session: SessionDep, token: Annotated[str, Depends(bearer_token)]) -> Caller:
    key = find_key(session=session, key_hash=hash_key(token))
    if key is None or not key["enabled"]:
        raise AuthenticationFailed("invalid API key")
    return Caller(key_id=key["id"], tenant=key["tenant"], scopes=frozenset(key["scopes"]))


def require_scope(*scopes: str) -> Callable[[Caller], Caller]:
    """A dependency that admits callers holding any of ``scopes``."""

    def check(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if caller.scopes.isdisjoint(scopes):
            needed = " or ".join(scopes)
            raise PermissionDenied(f"this endpoint needs an API key with scope {needed}")
        return caller

    return check


AdminCaller = Annotated[Caller, Depends(require_scope("admin"))]
AuditCaller = Annotated[Caller, Depends(require_scope("admin", "compliance", "compliance_org"))]

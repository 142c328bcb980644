"""FastAPI dependencies of the admin API: context, session, the calling key, registry writes.

The admin app keeps one :class:`AdminContext` in ``app.state.admin`` (set by
``router.admin.build_admin_app``); routes reach it only through these ``Annotated`` aliases:

    ContextDep    the engine, settings and post-write hook
    SessionDep    a read session (committed, or rolled back on error)
    AdminCaller   the key behind ``Authorization: Bearer``, with the ``admin`` scope
    AuditCaller   ... with ``admin``, ``compliance`` or ``compliance_org`` (read-only audit
                  endpoints; see ``Caller.readable_tenant`` for whose records it may read)

Keys are looked up by hash in the database on every admin request: admin traffic is low and
this way a disabled key stops working at once, without waiting for a snapshot reload. Expiry
and a rotation's grace period are checked as on ``/v1`` (``router.keys.usable_key``).

No request holds one pooled connection while it waits for another (issue 14: 40 parallel
PATCHes each held the connection that authenticated them while their write waited for a second,
emptied the pool and answered 500 after its timeout). So the key lookup runs in its own short
transaction, and :meth:`AdminContext.write` runs in three steps:

1. ``check`` (optional, a worker thread, a short read): refuse what is already known to fail,
   e.g. a stale ``version`` (409), without waiting for the writers ahead;
2. the write turn: this process's writers queue in the event loop, holding no worker thread and
   no connection, for at most ``registry_lock_timeout_s`` (then 503 ``registry_busy``); reads
   keep the threads and connections meanwhile;
3. the write transaction itself (a worker thread, one connection), which still takes the
   database's write lock: other processes (replicas, ``apply``) write too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, TypeVar, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.db import session_scope
from registry.keys import hash_key
from registry.service import Writer, check_version, find_key_snap, write_transaction
from router.errors import (
    MISSING_API_KEY,
    AuthenticationFailed,
    PermissionDenied,
    RegistryBusy,
)
from router.keys import usable_key
from router.settings import Settings

log = logging.getLogger("provenance_router.admin")
T = TypeVar("T")
ORG_WIDE_SCOPES = frozenset({"admin", "compliance_org"})


@dataclass(frozen=True, slots=True)
class AdminContext:
    engine: Engine
    settings: Settings
    on_change: Callable[[], None] | None = None  # e.g. reload the gateway's snapshot
    on_key_use: Callable[[str, float], None] | None = None  # (key id, time): last-used record
    write_turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer at a time

    async def write(
        self,
        *,
        actor: str,
        operation: Callable[[Writer], T],
        check: Callable[[], object] | None = None,
    ) -> T:
        """Run ``check``, then ``operation`` in one registry write transaction, in turn with
        this process's other writers (see the module docstring); after a commit that changed
        something, call ``on_change`` (a failing hook is logged: the write itself stands)."""
        if check is not None:
            await run_in_threadpool(check)
        async with self._turn():
            result, changed = await run_in_threadpool(self._transaction, actor, operation)
        if changed:
            await run_in_threadpool(self._notify)
        return result

    def check_version(self, kind: str, id: str, version: int | None) -> None:
        """409 at once when ``id`` is no longer at ``version`` (a ``check`` for ``write``)."""
        with session_scope(self.engine) as session:
            check_version(session=session, kind=kind, id=id, expected_version=version)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.settings.registry_lock_timeout_s):
                await self.write_turn.acquire()
        except TimeoutError:
            raise RegistryBusy("the registry is busy with other writes; retry") from None
        try:
            yield
        finally:
            self.write_turn.release()

    def _transaction(self, actor: str, operation: Callable[[Writer], T]) -> tuple[T, bool]:
        with write_transaction(engine=self.engine, actor=actor) as writer:
            result = operation(writer)
        return result, writer.version is not None

    def _notify(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            log.exception("registry change hook failed after a committed write")


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


# Declares the ``bearer`` security scheme in the OpenAPI document; the errors are ours.
BEARER = HTTPBearer(scheme_name="bearer", auto_error=False, description="An API key")


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> str:
    """The key; none (no header, another scheme, ``Bearer`` and nothing after it) is 401."""
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise AuthenticationFailed(MISSING_API_KEY)
    return token


def current_caller(context: ContextDep, token: Annotated[str, Depends(bearer_token)]) -> Caller:
    # Its own transaction, not the request's SessionDep: the connection is back in the pool
    # before the route runs, so a write never waits for a second one while holding this one.
    with session_scope(context.engine) as session:
        found = find_key_snap(session=session, key_hash=hash_key(token))
    now = time.time()
    key = usable_key(found, now)  # revoked, expired or past a rotation's grace: 401
    if context.on_key_use is not None:
        context.on_key_use(key.id, now)
    return Caller(key_id=key.id, tenant=key.tenant_id, scopes=frozenset(key.scopes))


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

"""Persistence of the audit log: chained batches, signed checkpoints, reads for ``audit
verify``, export and pruning. Used by the audit writer's thread and the ``audit`` CLI; knows
nothing about HTTP or the request path.

A batch is stored in one transaction: its evaluations (skipping digests already there), its
rows (one bulk INSERT, each row chained: see :mod:`registry.audit_record`) and, when asked,
a signed checkpoint of the new chain head. Errors are told apart:

- the database is away (connection lost, locked, timed out): :class:`StoreUnavailable`; the
  writer keeps the batch and tries again;
- the database refused some row's *data* (anything else): each row is tried alone under a
  savepoint, those refused are stored in their :func:`unstorable` form, flagged, and the batch
  is written again, in the same flush. No row is dropped; no other row waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from registry.audit_record import (
    AuditRecord,
    ChainHead,
    Evaluation,
    chain,
    checkpoint_message,
    row_values,
    sanitize,
    unstorable,
)
from registry.models import (
    AuditCheckpoint,
    DecisionEvaluation,
    ExposureFact,
    RegistryState,
    RoutingDecision,
    utcnow,
)

Sign = Callable[[bytes], tuple[str, bytes]]  # message -> (key id, Ed25519 signature)


class StoreUnavailable(Exception):
    """The database could not be reached (or was locked): nothing of the batch was stored."""


def table(model: Any) -> Table:
    return cast(Table, model.__table__)


@dataclass(frozen=True, slots=True)
class Stored:
    head: ChainHead
    sanitized: int  # rows stored with an escaped or cut value


def store_records(
    *,
    engine: Engine,
    head: ChainHead,
    records: Sequence[AuditRecord],
    checkpoint: str | None = None,
    sign: Sign | None = None,
) -> Stored:
    """Append ``records`` to the chain at ``head`` (plus a signed ``checkpoint`` of the new
    head when a kind is given; a new chain also gets its ``open`` checkpoint)."""
    values = [sanitize(row_values(r)) for r in records]
    evaluations = {r.evaluation.id: r.evaluation for r in records if r.evaluation is not None}
    return _store(engine, head, values, evaluations, checkpoint, sign)


def _store(
    engine: Engine,
    head: ChainHead,
    values: list[dict[str, Any]],
    evaluations: Mapping[str, Evaluation],
    checkpoint: str | None,
    sign: Sign | None,
) -> Stored:
    try:
        new_head = _write(engine, head, values, evaluations, checkpoint, sign)
    except Exception as error:
        if _is_outage(error):
            raise StoreUnavailable(str(error)) from error
        refused = _refused_rows(engine, values, evaluations)
        if not refused:
            raise StoreUnavailable(str(error)) from error
        for index in refused:
            values[index] = unstorable(values[index])
        try:
            new_head = _write(engine, head, values, evaluations, checkpoint, sign)
        except Exception as again:
            raise StoreUnavailable(str(again)) from again
    return Stored(new_head, sum(1 for v in values if v["sanitized"]))


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | PoolTimeout | OSError)


def _write(
    engine: Engine,
    head: ChainHead,
    values: list[dict[str, Any]],
    evaluations: Mapping[str, Evaluation],
    checkpoint: str | None,
    sign: Sign | None,
) -> ChainHead:
    rows = [dict(v) for v in values]
    new_head = chain(head, rows)
    with engine.begin() as connection:
        _insert_evaluations(connection, evaluations)
        if head.seq == 0 and rows and sign is not None:  # unsigned tools open no chain mark
            _insert_checkpoint(connection, head, "open", sign)
        _insert_rows(connection, rows)
        if checkpoint is not None and (rows or checkpoint != "periodic"):
            _insert_checkpoint(connection, new_head, checkpoint, sign)
    return new_head


def _refused_rows(
    engine: Engine, values: list[dict[str, Any]], evaluations: Mapping[str, Evaluation]
) -> list[int]:
    """The indexes of the rows the database refuses on their own (each under a savepoint;
    everything is rolled back)."""
    rows = [dict(v) for v in values]
    chain(ChainHead("probe"), rows)
    refused = []
    with engine.connect() as connection, connection.begin() as transaction:
        _insert_evaluations(connection, evaluations)
        for index, row in enumerate(rows):
            savepoint = connection.begin_nested()
            try:
                _insert_rows(connection, [row])
            except Exception as error:
                if _is_outage(error):
                    raise
                savepoint.rollback()
                refused.append(index)
            else:
                savepoint.commit()
        transaction.rollback()
    return refused


def _insert_evaluations(connection: Connection, evaluations: Mapping[str, Evaluation]) -> None:
    if evaluations:
        now = utcnow()
        connection.execute(
            _evaluation_insert(connection.dialect),
            [
                {"id": e.id, "candidates": e.encoded, "created_at": now}
                for e in evaluations.values()
            ],
        )


def _insert_rows(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        statement = _decision_insert(connection.dialect)
        connection.exec_driver_sql(statement.sql, [statement.params(row) for row in rows])


def _insert_checkpoint(
    connection: Connection, head: ChainHead, kind: str, sign: Sign | None
) -> None:
    connection.execute(insert(table(AuditCheckpoint)).values(checkpoint_row(head, kind, sign)))


def checkpoint_row(head: ChainHead, kind: str, sign: Sign | None) -> dict[str, Any]:
    now = utcnow()
    row: dict[str, Any] = {
        "chain_id": head.chain_id,
        "seq": head.seq,
        "head_hash": head.hash,
        "created_at": now,
        "kind": kind,
        "key_id": None,
        "signature": None,
    }
    if sign is not None:
        message = checkpoint_message(
            chain_id=head.chain_id, seq=head.seq, head_hash=head.hash, created_at=now, kind=kind
        )
        row["key_id"], signature = sign(message)
        row["signature"] = signature.hex()
    return row


@cache
def _evaluation_insert(dialect: Dialect) -> postgresql.Insert | sqlite.Insert:
    """INSERT of evaluations that skips digests already stored (both dialects spell it alike)."""
    evaluations = table(DecisionEvaluation)
    if dialect.name == "postgresql":
        return postgresql.insert(evaluations).on_conflict_do_nothing(index_elements=["id"])
    return sqlite.insert(evaluations).on_conflict_do_nothing(index_elements=["id"])


@dataclass(frozen=True, slots=True)
class _BulkInsert:
    """A compiled INSERT of every audit column, with each column's bind processor resolved
    once. Rows go to the driver's executemany exactly as SQLAlchemy would store them (same
    JSON and datetime formats), without SQLAlchemy's per-row parameter machinery, which was
    most of the audit writer's cost at thousands of requests per second."""

    sql: str
    names: tuple[str, ...]
    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the values of ``names``, in order
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)
    positional: bool

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        row = list(self.pick(values))
        for position, process in self.processors:
            row[position] = process(row[position])
        if self.positional:
            return tuple(row)
        return dict(zip(self.names, row, strict=True))


DECISION_COLUMNS = tuple(sorted(set(table(RoutingDecision).columns.keys()) - {"id"}))


@cache
def _decision_insert(dialect: Dialect) -> _BulkInsert:
    decisions = table(RoutingDecision)
    compiled = (
        insert(decisions).values({name: None for name in DECISION_COLUMNS}).compile(dialect=dialect)
    )
    names = tuple(compiled.positiontup or ()) if compiled.positional else DECISION_COLUMNS
    processors = (
        (i, decisions.c[name].type.bind_processor(dialect)) for i, name in enumerate(names)
    )
    return _BulkInsert(
        sql=str(compiled),
        names=names,
        pick=itemgetter(*names),
        processors=tuple((i, process) for i, process in processors if process is not None),
        positional=compiled.positional,
    )


# --- plain rows (tools and tests) ----------------------------------------------------------

_DECISION_FIELDS = frozenset(DECISION_COLUMNS) - {
    "evaluation_id",
    "sanitized",
    "chain_id",
    "seq",
    "prev_hash",
    "row_hash",
}
_DECISION_REQUIRED = frozenset({"request_id", "status"})


def insert_decisions(
    *, engine: Engine, rows: Sequence[Mapping[str, Any]], chain_id: str | None = None
) -> ChainHead:
    """Store routing decisions given as plain rows (imports, tools, tests), chained like the
    gateway's. A row's ``candidates`` is a list or an :class:`Evaluation`. Unknown keys are
    refused, so nothing but the declared fields (never prompt or completion text) can reach
    the audit table. Appends to ``chain_id`` when given, else starts a new chain."""
    import uuid

    head = chain_head(engine, chain_id) if chain_id else ChainHead(uuid.uuid4().hex)
    if not rows:
        return head
    evaluations: dict[str, Evaluation] = {}
    values = [sanitize(_plain_row(row, evaluations)) for row in rows]
    return _store(engine, head, values, evaluations, None, None).head


def _plain_row(row: Mapping[str, Any], evaluations: dict[str, Evaluation]) -> dict[str, Any]:
    unknown = set(row) - _DECISION_FIELDS
    if unknown:
        raise ValueError(f"routing decision: unknown fields {sorted(unknown)}")
    missing = _DECISION_REQUIRED - set(row)
    if missing:
        raise ValueError(f"routing decision: missing fields {sorted(missing)}")
    values = row_values(AuditRecord(request_id="", created_at=utcnow(), status=""))
    values.update({"context": {}, **row})
    if values.get("created_at") is None:
        values["created_at"] = utcnow()
    candidates = values["candidates"]
    values["candidates"] = []
    if isinstance(candidates, Evaluation) or candidates:
        evaluation = candidates if isinstance(candidates, Evaluation) else Evaluation.of(candidates)
        evaluations[evaluation.id] = evaluation
        values["evaluation_id"] = evaluation.id
    return values


# --- reads for verify, export and prune ----------------------------------------------------


def chain_head(engine: Engine, chain_id: str) -> ChainHead:
    """The last stored row of a chain (or a pruned boundary), or a new chain's start."""
    t, c = table(RoutingDecision), table(AuditCheckpoint)
    with engine.connect() as connection:
        last = connection.execute(
            select(t.c.seq, t.c.row_hash)
            .where(t.c.chain_id == chain_id)
            .order_by(t.c.seq.desc())
            .limit(1)
        ).first()
        if last is None:
            last = connection.execute(
                select(c.c.seq, c.c.head_hash)
                .where(c.c.chain_id == chain_id)
                .order_by(c.c.seq.desc())
                .limit(1)
            ).first()
    return ChainHead(chain_id) if last is None else ChainHead(chain_id, int(last[0]), last[1])


def stored_request_ids(engine: Engine, chain_id: str, request_ids: Sequence[str]) -> set[str]:
    t = table(RoutingDecision)
    found: set[str] = set()
    with engine.connect() as connection:
        for start in range(0, len(request_ids), 500):
            chunk = request_ids[start : start + 500]
            query = select(t.c.request_id).where(
                and_(t.c.chain_id == chain_id, t.c.request_id.in_(chunk))
            )
            found.update(connection.execute(query).scalars())
    return found


def iter_rows(engine: Engine, *, before: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Every decision row, chained rows by (chain, seq), unchained rows last by id; with
    ``before``: only the rows a prune at that time would delete (see :func:`prune_bounds`)."""
    t = table(RoutingDecision)
    query = select(t).order_by(t.c.chain_id.is_(None), t.c.chain_id, t.c.seq, t.c.id)
    if before is not None:
        query = query.where(_prunable(engine, before))
    with engine.connect() as connection:
        for row in connection.execution_options(yield_per=1000).execute(query).mappings():
            yield dict(row)


def evaluations(engine: Engine, ids: set[str] | None = None) -> dict[str, Any]:
    e = table(DecisionEvaluation)
    with engine.connect() as connection:
        rows = connection.execute(select(e.c.id, e.c.candidates)).all()
    return {i: c for i, c in rows if ids is None or i in ids}


def checkpoints(engine: Engine) -> list[dict[str, Any]]:
    c = table(AuditCheckpoint)
    with engine.connect() as connection:
        query = select(c).order_by(c.c.chain_id, c.c.seq, c.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def prune_bounds(engine: Engine, before: datetime) -> dict[str, tuple[int, str]]:
    """Per chain, the last row a prune at ``before`` deletes: (seq, row_hash) of the highest
    ``seq`` created before that time. Everything up to it goes, so the chain that remains
    starts right after a boundary the prune records."""
    t = table(RoutingDecision)
    with engine.connect() as connection:
        tops = connection.execute(
            select(t.c.chain_id, func.max(t.c.seq))
            .where(and_(t.c.chain_id.is_not(None), t.c.created_at < before))
            .group_by(t.c.chain_id)
        ).all()
        bounds = {}
        for chain_id, seq in tops:
            hash_ = connection.execute(
                select(t.c.row_hash).where(and_(t.c.chain_id == chain_id, t.c.seq == seq))
            ).scalar_one()
            bounds[chain_id] = (int(seq), hash_)
    return bounds


def _prunable(engine: Engine, before: datetime) -> Any:
    t = table(RoutingDecision)
    bounds = prune_bounds(engine, before)
    chained = [and_(t.c.chain_id == c, t.c.seq <= seq) for c, (seq, _) in bounds.items()]
    return or_(and_(t.c.chain_id.is_(None), t.c.created_at < before), *chained)


def boundaries(*, engine: Engine, before: datetime, sign: Sign | None) -> list[dict[str, Any]]:
    """The signed ``pruned`` checkpoints a prune at ``before`` records, one per chain."""
    return [
        checkpoint_row(ChainHead(chain_id, seq, hash_), "pruned", sign)
        for chain_id, (seq, hash_) in prune_bounds(engine, before).items()
    ]


class Pruned(NamedTuple):
    rows: int
    evaluations: int
    exposure_facts: int


def prune(*, engine: Engine, before: datetime, marks: Sequence[Mapping[str, Any]]) -> Pruned:
    """Delete the rows of :func:`prune_bounds` (and unchained rows older than ``before``),
    record each chain's boundary (``marks``, from :func:`boundaries`; older checkpoints of
    the chain go), then delete the evaluations no row refers to any more and the exposure
    facts of registry versions older than every remaining row and than the registry's
    current version (the report attributes remaining rows by them; a gateway records the
    current version's). One transaction."""
    t, c, e = table(RoutingDecision), table(AuditCheckpoint), table(DecisionEvaluation)
    condition = _prunable(engine, before)
    with engine.begin() as connection:
        rows = connection.execute(delete(t).where(condition)).rowcount
        for mark in marks:
            connection.execute(
                delete(c).where(and_(c.c.chain_id == mark["chain_id"], c.c.seq <= mark["seq"]))
            )
            connection.execute(insert(c).values(dict(mark)))
        referenced = select(t.c.evaluation_id).where(t.c.evaluation_id.is_not(None))
        orphans = connection.execute(delete(e).where(e.c.id.not_in(referenced))).rowcount
        facts = _prune_exposure_facts(connection)
    return Pruned(rows, orphans, facts)


def _prune_exposure_facts(connection: Connection) -> int:
    t, f, s = table(RoutingDecision), table(ExposureFact), table(RegistryState)
    oldest_needed = [
        connection.execute(select(func.min(t.c.registry_version))).scalar(),
        connection.execute(select(func.max(s.c.version))).scalar(),
    ]
    needed = [int(v) for v in oldest_needed if v is not None]
    if not needed:
        return 0
    return int(connection.execute(delete(f).where(f.c.registry_version < min(needed))).rowcount)

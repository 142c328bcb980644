"""Checking an audit log (a database or an exported archive) against its hash chains and
signed checkpoints. Pure: rows, checkpoints and evaluations come in as plain dicts; the
signature check is a callable, so this module imports no cryptography or database code.

For each chain (rows in ``seq`` order, starting at :data:`GENESIS` or at a ``pruned``
checkpoint's head), the first bad record is named:

- ``modified``: a row's content no longer hashes to its ``row_hash``; or a signed checkpoint
  names a head the stored row no longer has (the chain was rewritten after it);
- ``deleted``: a ``seq`` is missing (the next row links to a record that is gone), or rows a
  checkpoint covers are gone from the end;
- ``inserted``: a ``seq`` appears twice, a row links to no record of its chain, a row has no
  chain position among chained rows, or a chain has no signed checkpoint at all;
- ``reordered``: the record that follows ``seq`` n (the one whose ``prev_hash`` is n's hash)
  is stored at another position.

Checkpoint signatures are checked with the public keys the gateway published
(``router.signing``); a bad or unknown signature is a failure. Rows after a chain's last
checkpoint are hash-linked but not yet signed: reported as ``unsigned_tail``, not a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from registry.audit_record import GENESIS, checkpoint_message, digest, row_hash

CheckSignature = Callable[[str, bytes, bytes], bool]  # (key id, message, signature) -> valid
CANDIDATE_KEYS = ("deployment", "allowed", "rule_ids", "reasons")  # router.table's order


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # modified | deleted | inserted | reordered | signature | evaluation
    chain_id: str | None
    seq: int | None
    request_id: str | None
    message: str


@dataclass
class Report:
    rows: int = 0
    chains: int = 0
    unchained: int = 0  # rows written before migration 0003
    checkpoints: int = 0
    signatures_ok: int = 0
    unsigned_tail: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Entry:
    id: Any
    seq: int
    request_id: str
    prev_hash: str
    stored_hash: str
    content_ok: bool


def verify(
    rows: Iterable[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    evaluations: Mapping[str, Any],
    check_signature: CheckSignature,
) -> Report:
    """Check everything; ``rows`` ordered by (chain, seq) with unchained rows last."""
    report = Report()
    by_chain: dict[str, list[Mapping[str, Any]]] = {}
    for checkpoint in checkpoints:
        by_chain.setdefault(checkpoint["chain_id"], []).append(checkpoint)
    _check_signatures(checkpoints, check_signature, report)
    chain_id: str | None = None
    entries: list[_Entry] = []
    first_chained_id: Any = None
    used: dict[str, tuple[str | None, int | None, str]] = {}
    for row in rows:
        report.rows += 1
        if row["evaluation_id"] is not None:
            used.setdefault(row["evaluation_id"], (row["chain_id"], row["seq"], row["request_id"]))
        if row["chain_id"] is None:
            _unchained(row, first_chained_id, report)
            continue
        if first_chained_id is None or row["id"] < first_chained_id:
            first_chained_id = row["id"]
        if row["chain_id"] != chain_id:
            if chain_id is not None:
                _check_chain(chain_id, entries, by_chain.pop(chain_id, []), report)
            chain_id, entries = row["chain_id"], []
        entries.append(_entry(row))
    if chain_id is not None:
        _check_chain(chain_id, entries, by_chain.pop(chain_id, []), report)
    for orphan_chain, orphan_checkpoints in by_chain.items():  # checkpoints, no rows left
        _check_tail(orphan_chain, [], orphan_checkpoints, report)
    _check_evaluations(used, evaluations, report)
    report.checkpoints = len(checkpoints)
    return report


def _entry(row: Mapping[str, Any]) -> _Entry:
    values = dict(row)
    if isinstance(values["created_at"], str):
        values["created_at"] = datetime.fromisoformat(values["created_at"])
    return _Entry(
        id=row["id"],
        seq=int(row["seq"]),
        request_id=row["request_id"],
        prev_hash=row["prev_hash"],
        stored_hash=row["row_hash"],
        content_ok=row_hash(values) == row["row_hash"],
    )


def _unchained(row: Mapping[str, Any], first_chained_id: Any, report: Report) -> None:
    if first_chained_id is not None and row["id"] > first_chained_id:
        report.problems.append(
            Problem(
                "inserted",
                None,
                None,
                row["request_id"],
                f"row id {row['id']} (request {row['request_id']}) has no chain position but"
                " was added after chained rows: inserted outside the audit writer",
            )
        )
    else:
        report.unchained += 1


def _start(checkpoints: Sequence[Mapping[str, Any]], first_seq: float) -> tuple[int, str]:
    """Where the rows of a chain begin: after the last prune boundary below them."""
    pruned = [c for c in checkpoints if c["kind"] == "pruned" and c["seq"] < first_seq]
    if not pruned:
        return 0, GENESIS
    last = max(pruned, key=lambda c: c["seq"])
    return int(last["seq"]), last["head_hash"]


def _check_chain(
    chain_id: str,
    entries: list[_Entry],
    checkpoints: list[Mapping[str, Any]],
    report: Report,
) -> None:
    report.chains += 1
    if not any(c["signature"] for c in checkpoints):
        first = entries[0]
        report.problems.append(
            Problem(
                "inserted",
                chain_id,
                first.seq,
                first.request_id,
                f"chain {chain_id} has no signed checkpoint: not written by a gateway",
            )
        )
        return
    problem = _first_break(chain_id, entries, _start(checkpoints, entries[0].seq))
    if problem is not None:
        report.problems.append(problem)
        return
    _check_tail(chain_id, entries, checkpoints, report)


def _first_break(chain_id: str, entries: list[_Entry], start: tuple[int, str]) -> Problem | None:
    successor: dict[str, _Entry] = {}
    for entry in entries:
        successor.setdefault(entry.prev_hash, entry)
    expected_seq, expected_prev = start
    for entry in entries:
        where = f"seq {entry.seq} (request {entry.request_id}, row id {entry.id})"
        if entry.seq <= expected_seq:
            return Problem(
                "inserted",
                chain_id,
                entry.seq,
                entry.request_id,
                f"{where}: a second record at seq {entry.seq} of chain {chain_id}",
            )
        if entry.prev_hash != expected_prev:
            true_next = successor.get(expected_prev)
            if true_next is not None and true_next is not entry:
                return Problem(
                    "reordered",
                    chain_id,
                    entry.seq,
                    entry.request_id,
                    f"{where}: out of place; the record recorded after seq {expected_seq} is"
                    f" request {true_next.request_id}, now stored at seq {true_next.seq}",
                )
            if entry.seq > expected_seq + 1:
                missing = _span(expected_seq + 1, entry.seq - 1)
                return Problem(
                    "deleted",
                    chain_id,
                    expected_seq + 1,
                    None,
                    f"record {missing} of chain {chain_id} deleted (before {where})",
                )
            return Problem(
                "inserted",
                chain_id,
                entry.seq,
                entry.request_id,
                f"{where}: does not link to seq {expected_seq} (inserted or relinked)",
            )
        if entry.seq != expected_seq + 1:
            return Problem(
                "deleted",
                chain_id,
                expected_seq + 1,
                None,
                f"record {_span(expected_seq + 1, entry.seq - 1)} of chain {chain_id} missing",
            )
        if not entry.content_ok:
            return Problem(
                "modified",
                chain_id,
                entry.seq,
                entry.request_id,
                f"{where}: content changed after it was written (hash mismatch)",
            )
        expected_seq, expected_prev = entry.seq, entry.stored_hash
    return None


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


def _check_tail(
    chain_id: str,
    entries: list[_Entry],
    checkpoints: list[Mapping[str, Any]],
    report: Report,
) -> None:
    """Each checkpoint's head must be the stored row at its seq (or its pruned boundary)."""
    by_seq = {e.seq: e for e in entries}
    start_seq = _start(checkpoints, entries[0].seq if entries else float("inf"))[0]
    last_seq = entries[-1].seq if entries else start_seq
    for checkpoint in checkpoints:
        seq = int(checkpoint["seq"])
        if seq <= start_seq:
            continue  # the open checkpoint, or covered by the pruned boundary
        entry = by_seq.get(seq)
        if entry is None:
            report.problems.append(
                Problem(
                    "deleted",
                    chain_id,
                    last_seq + 1,
                    None,
                    f"records {_span(last_seq + 1, seq)} of chain {chain_id} deleted: a signed"
                    f" checkpoint covers seq {seq}",
                )
            )
            return
        if entry.stored_hash != checkpoint["head_hash"]:
            report.problems.append(
                Problem(
                    "modified",
                    chain_id,
                    seq,
                    entry.request_id,
                    f"chain {chain_id} was rewritten up to seq {seq}: the signed checkpoint"
                    " names another head",
                )
            )
            return
    signed = max((int(c["seq"]) for c in checkpoints), default=0)
    report.unsigned_tail += max(0, last_seq - signed)


def _check_signatures(
    checkpoints: Sequence[Mapping[str, Any]], check: CheckSignature, report: Report
) -> None:
    for c in checkpoints:
        message = checkpoint_message(
            chain_id=c["chain_id"],
            seq=int(c["seq"]),
            head_hash=c["head_hash"],
            created_at=_moment(c["created_at"]),
            kind=c["kind"],
        )
        valid = bool(c["signature"]) and check(
            c["key_id"] or "", message, bytes.fromhex(c["signature"])
        )
        if valid:
            report.signatures_ok += 1
            continue
        report.problems.append(
            Problem(
                "signature",
                c["chain_id"],
                int(c["seq"]),
                None,
                f"checkpoint {c['kind']} at seq {c['seq']} of chain {c['chain_id']}:"
                f" {'bad signature' if c['signature'] else 'not signed'} (key {c['key_id']})",
            )
        )


def _moment(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _check_evaluations(
    used: Mapping[str, tuple[str | None, int | None, str]],
    evaluations: Mapping[str, Any],
    report: Report,
) -> None:
    for evaluation_id, (chain_id, seq, request_id) in used.items():
        candidates = evaluations.get(evaluation_id)
        if candidates is None or not _digest_matches(evaluation_id, candidates):
            what = "missing" if candidates is None else "modified"
            report.problems.append(
                Problem(
                    "evaluation",
                    chain_id,
                    seq,
                    request_id,
                    f"evaluation {evaluation_id} {what} (used by request {request_id})",
                )
            )


def _digest_matches(evaluation_id: str, candidates: Any) -> bool:
    """The id is the digest of the list as the router encoded it; PostgreSQL's JSONB gives
    objects back with their keys reordered, so the router's key order is tried too."""
    if digest(orjson.dumps(candidates)) == evaluation_id:
        return True
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        return False
    ordered = [
        {**{k: c[k] for k in CANDIDATE_KEYS if k in c}, **{k: v for k, v in c.items()}}
        for c in candidates
    ]
    return digest(orjson.dumps(ordered)) == evaluation_id

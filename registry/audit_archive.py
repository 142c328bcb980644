"""The audit archive: JSON Lines that ``audit verify --archive`` checks on their own.

    {"type": "archive", "version": 1, "created_at": ..., "before": ...}
    {"type": "checkpoint", "chain_id", "seq", "head_hash", "created_at", "kind", "key_id",
     "signature"}                                 every checkpoint of the archived chains up to
                                                  the archived seq, and the prune boundary
    {"type": "row", ...every routing_decisions column...}   in (chain, seq) order
    {"type": "evaluation", "id": ..., "candidates": [...]}  each one an archived row uses

Timestamps are UTC ISO 8601 strings. A chain in an archive starts at seq 1 or at the
``pruned`` checkpoint of an earlier prune, and ends at the boundary its ``pruned``
checkpoint names, so the rows it holds verify without the database.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from registry.audit_record import iso
from registry.audit_store import checkpoints, evaluations, iter_rows

VERSION = 1


def _line(kind: str, values: Mapping[str, Any]) -> bytes:
    plain = {k: iso(v) if isinstance(v, datetime) else v for k, v in values.items()}
    return orjson.dumps({"type": kind, **plain}) + b"\n"


def write_archive(
    *,
    engine: Engine,
    before: datetime,
    path: Path,
    boundaries: Iterable[Mapping[str, Any]] = (),
) -> int:
    """Write the rows a prune at ``before`` deletes (with their checkpoints, the given
    ``boundaries`` and their evaluations) to ``path``, synced to disk. Returns the row count."""
    rows = list(iter_rows(engine, before=before))
    last_seq: dict[str, int] = {}
    for row in rows:
        if row["chain_id"] is not None:
            last_seq[row["chain_id"]] = max(last_seq.get(row["chain_id"], 0), row["seq"])
    kept = [
        c
        for c in checkpoints(engine)
        if c["chain_id"] in last_seq and c["seq"] <= last_seq[c["chain_id"]]
    ]
    used = {r["evaluation_id"] for r in rows if r["evaluation_id"] is not None}
    staged = path.with_name(f".{path.name}.partial")
    with open(staged, "wb") as file:
        header = {"version": VERSION, "created_at": datetime.now().astimezone(), "before": before}
        file.write(_line("archive", header))
        for checkpoint in [*kept, *boundaries]:
            file.write(_line("checkpoint", {k: v for k, v in checkpoint.items() if k != "id"}))
        for row in rows:
            file.write(_line("row", row))
        for evaluation_id, candidates in sorted(evaluations(engine, used).items()):
            file.write(_line("evaluation", {"id": evaluation_id, "candidates": candidates}))
        file.flush()
        os.fsync(file.fileno())
    os.replace(staged, path)
    return len(rows)


def read_archive(
    path: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(rows, checkpoints, evaluations) of an archive, in the order ``verify`` expects."""
    rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    evaluation_map: dict[str, Any] = {}
    with open(path, "rb") as file:
        for line in file:
            item = orjson.loads(line)
            kind = item.pop("type")
            if kind == "row":
                rows.append(item)
            elif kind == "checkpoint":
                marks.append(item)
            elif kind == "evaluation":
                evaluation_map[item["id"]] = item["candidates"]
    rows.sort(key=lambda r: (r["chain_id"] is None, r["chain_id"] or "", r["seq"] or 0, r["id"]))
    return rows, marks, evaluation_map

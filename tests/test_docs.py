"""Every shell and Python block of the README and of ``docs/*.md`` runs as written.

Per document, in a fresh temporary directory and against a real gateway started for it (uvicorn,
SQLite, the built-in catalog; the bundled local model for the README), the blocks run in the
order they appear. Shell blocks run in ``bash -euo pipefail``; what one block exports, the next
one sees (as in the terminal the docs assume). Python blocks run with this interpreter.

The working directory holds what the docs refer to by relative path: ``examples/`` and
``.venv`` (this interpreter's environment). Only two things are substituted: the gateway's real
address for ``http://127.0.0.1:8000``, and the admin key it printed for the placeholder
``'pr-...'`` a reader pastes it over. A block that cannot run here (``make serve`` is the
gateway itself; ``make test`` runs this file) is preceded by
``<!-- docs-test: skip (why) -->``; a block without that line must pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from router.asgi import create_app
from router.settings import Settings
from tests.servers import serve_app

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\s*$")
SKIP = re.compile(r"^<!-- docs-test: skip \((.+)\) -->$")
SHELLS = ("bash", "sh")
LANGUAGES = (*SHELLS, "python")
ADMIN_KEY = "pr-docs-test-admin-key-0123456789abcdef"
DOCUMENTED_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip: str | None  # the reason given, when the block is not run

    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    """The shell and Python blocks of ``document``, in order."""
    lines = document.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        if opening.group(1) in LANGUAGES:
            before = lines[index - 1] if index else ""
            skip = SKIP.match(before)
            body = "\n".join(lines[index + 1 : end]) + "\n"
            found.append(
                Block(document, index + 1, opening.group(1), body, skip.group(1) if skip else None)
            )
        index = end + 1
    return found


def runnable_documents() -> list[Path]:
    return [d for d in DOCUMENTS if any(b.skip is None for b in blocks(d))]


def test_every_skip_says_why_and_sits_on_a_block() -> None:
    """A skip marker must name its reason and precede a block: it cannot silently hide prose."""
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if "docs-test:" in line:
                assert SKIP.match(line), f"{document}:{number + 1}: malformed marker {line!r}"
                following = lines[number + 1] if number + 1 < len(lines) else ""
                assert FENCE.match(following), f"{document}:{number + 1}: not before a block"


@pytest.mark.parametrize("document", runnable_documents(), ids=lambda d: d.name)
def test_document_blocks_run_as_written(document: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (work / ".venv").symlink_to(Path(sys.prefix))
    database_url = f"sqlite:///{tmp_path / 'registry.db'}"
    settings = Settings(
        database_url=database_url,
        admin_key=ADMIN_KEY,
        local_model=document.name == "README.md",  # the README talks to the bundled model
        signing_key_dir=tmp_path / "signing",
        snapshot_poll_s=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )
    env = {
        **os.environ,
        "PROVENANCE_ROUTER_DATABASE_URL": database_url,
        "PROVENANCE_ROUTER_SIGNING_KEY_DIR": str(tmp_path / "signing"),
        "COLUMNS": "100",
    }
    with serve_app(create_app(settings), lifespan="on") as base_url:
        for block in blocks(document):
            if block.skip is None:
                env = run(block, block.text.replace(DOCUMENTED_URL, base_url), env, work)


def run(block: Block, text: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Run one block; returns the environment the next block starts with."""
    text = text.replace("'pr-...'", f"'{ADMIN_KEY}'")
    if block.language == "python":
        done = subprocess.run(
            [sys.executable, "-c", text], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=TIMEOUT_S,
        )  # fmt: skip
        _check(block, done)
        return env
    exported = cwd / ".docs-test-env"
    script = f"{text}\nenv -0 > {exported}\n"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    _check(block, done)
    pairs = exported.read_text().split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def _check(block: Block, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, (
        f"{block.where()} ({block.language}) exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )

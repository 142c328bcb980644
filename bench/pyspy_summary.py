"""Summarise a py-spy ``--format raw`` file (collapsed stacks: ``frame;frame;... count``).

Prints the top self (leaf) frames, the top inclusive frames, inclusive share per module (file)
and per layer (the gateway's own code, aiohttp, uvicorn, asyncio/uvloop, cedarpy, SQLAlchemy,
...). With ``--json`` prints only the layer shares as JSON (for results.json).

    python bench/pyspy_summary.py pyspy_gateway_chat_c16.txt [N] [--json]
"""

from __future__ import annotations

import collections
import json
import re
import sys

FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
# The top-level package of a frame's file -> its layer (py-spy prints paths relative to the
# sys.path entry they were found in: "router/gateway.py", "aiohttp/client.py", "threading.py").
LAYERS = {
    "router": "gateway:router",
    "adapters": "gateway:adapters",
    "registry": "gateway:registry",
    "bench": "bench",
    "passthrough_raw.py": "bench",
    "aiohttp": "aiohttp",
    "multidict": "aiohttp",
    "yarl": "aiohttp",
    "propcache": "aiohttp",
    "aiohappyeyeballs": "aiohttp",
    "uvicorn": "uvicorn",
    "httptools": "uvicorn",
    "cedarpy": "cedarpy",
    "sqlalchemy": "sqlalchemy/sqlite",
    "sqlmodel": "sqlalchemy/sqlite",
    "sqlite3": "sqlalchemy/sqlite",
    "fastapi": "fastapi/starlette/pydantic",
    "starlette": "fastapi/starlette/pydantic",
    "pydantic": "fastapi/starlette/pydantic",
    "pydantic_core": "fastapi/starlette/pydantic",
    "asyncio": "asyncio/uvloop",
    "uvloop": "asyncio/uvloop",
    "json": "json (stdlib)",
    "inspect.py": "inspect/ast (stdlib)",
    "ast.py": "inspect/ast (stdlib)",
    "tokenize.py": "inspect/ast (stdlib)",
    "threading.py": "threads (stdlib)",
    "concurrent": "threads (stdlib)",
}


# What a sample was doing, from its whole stack (first match wins): the gateway's background
# work first, then the request path by the deepest layer that owns the leaf.
STAGES = [
    ("audit log write (worker thread)", re.compile(r"insert_decisions|router/audit\.py")),
    ("registry poll / reload", re.compile(r"_stored_version|Gateway\.reload|load_snapshot")),
    ("upstream call (adapter + HTTP client)", re.compile(r"\((adapters|aiohttp)/")),
    ("policy engine", re.compile(r"\(router/policy/")),
    ("routing plan", re.compile(r"^plan \(router/routing\.py|;plan \(router/routing\.py")),
]


def stage_of(frames: list[str]) -> str:
    joined = ";".join(frames)
    for name, pattern in STAGES:
        if pattern.search(joined):
            return name
    leaf = layer_of(frames[-1])
    if leaf.startswith("gateway:") or leaf == "bench":
        return "request path: own code (" + leaf.split(":")[-1] + ")"
    return "request path: " + leaf


def parse(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            try:
                stacks.append((stack.split(";"), int(count)))
            except ValueError:
                continue
    return stacks


def file_of(frame: str) -> str:
    m = FRAME.match(frame)
    return m.group("path") if m else frame


def layer_of(frame: str) -> str:
    path = re.sub(r"^.*(site-packages|lib/python3\.\d+|/work/[^/]+)/", "", file_of(frame))
    top = path.split("/", 1)[0]
    return LAYERS.get(top, "other stdlib" if top.endswith(".py") else "other")


def short(path: str) -> str:
    path = re.sub(r"^.*site-packages/", "", path)
    path = re.sub(r"^.*lib/python3\.\d+/", "", path)
    return re.sub(r"^.*/(router|adapters|registry|bench)/", r"\1/", path)


def summarise(stacks: list[tuple[list[str], int]]) -> dict[str, object]:
    total = sum(c for _, c in stacks) or 1
    self_layer: collections.Counter[str] = collections.Counter()
    incl_layer: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        self_layer[layer_of(frames[-1])] += count
        for layer in {layer_of(f) for f in frames}:
            incl_layer[layer] += count
    gateway = sum(c for k, c in self_layer.items() if k.startswith("gateway:"))
    stages: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        stages[stage_of(frames)] += count
    return {
        "stages_pct": {k: round(100 * c / total, 1) for k, c in stages.most_common()},
        "samples": total,
        "layers_self_pct": {k: round(100 * c / total, 1) for k, c in self_layer.most_common()},
        "layers_inclusive_pct": {k: round(100 * c / total, 1) for k, c in incl_layer.most_common()},
        "gateway_own_code_self_pct": round(100 * gateway / total, 1),
    }


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    path = args[0]
    n = int(args[1]) if len(args) > 1 else 25
    stacks = parse(path)
    summary = summarise(stacks)
    if as_json:
        print(json.dumps(summary))
        return
    total = int(summary["samples"])  # type: ignore[call-overload]
    self_c: collections.Counter[str] = collections.Counter()
    incl_c: collections.Counter[str] = collections.Counter()
    mod_c: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        self_c[frames[-1]] += count
        for f in set(frames):
            incl_c[f] += count
        for m in {short(file_of(f)) for f in frames}:
            mod_c[m] += count

    def pct(c: int) -> str:
        return f"{100 * c / total:6.1f}%"

    print(f"samples: {total}")
    print("\n-- by stage (whole stack; first match: background work, policy, routing, leaf) --")
    for k, v in summary["stages_pct"].items():  # type: ignore[attr-defined]
        print(f"{v:6.1f}%  {k}")
    print("\n-- by layer: self (leaf) / inclusive --")
    for k, v in summary["layers_self_pct"].items():  # type: ignore[attr-defined]
        print(f"{v:6.1f}% / {summary['layers_inclusive_pct'].get(k, 0):5.1f}%  {k}")  # type: ignore[attr-defined]
    print(f"\n-- top {n} self (leaf) frames --")
    for f, c in self_c.most_common(n):
        m = FRAME.match(f)
        print(f"{pct(c)}  {m.group('func') + ' (' + short(m.group('path')) + ')' if m else f}")
    print(f"\n-- top {n} inclusive frames --")
    for f, c in incl_c.most_common(n):
        m = FRAME.match(f)
        print(f"{pct(c)}  {m.group('func') + ' (' + short(m.group('path')) + ')' if m else f}")
    print(f"\n-- inclusive share by module (top {n}) --")
    for m_, c in mod_c.most_common(n):
        print(f"{pct(c)}  {m_}")


if __name__ == "__main__":
    main()

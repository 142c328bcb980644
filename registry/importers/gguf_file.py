"""GGUF files: the header (``gguf`` package) and the SHA-256 of the file, as found models.

From the header: ``general.name``, ``general.organization``, ``general.basename``,
``general.size_label``, ``general.finetune``, ``general.license``, ``general.base_model.N.*``
(``count``, ``name``, ``organization``, ``repo_url``), ``general.file_type`` (the quantization)
and ``<architecture>.context_length``. A file is a model of its own (its weights), ``derived``
from the model it is a quantization of: the catalog match of its name, else the first base
model its header names (``quantized_from``).

The digest is of the whole file, streamed in 1 MiB blocks; it is cached in a JSON file (a
setting, ``IMPORT_DIGEST_CACHE``) keyed by absolute path, with the size and modification time
it was computed at: a file that changed is hashed again, an unchanged one is not. A cache that
cannot be read is ignored (and rewritten), never trusted half-way.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from registry.importers.errors import ImportFailed
from registry.importers.found import Discovery, Fact, FoundModel, Parent, model_key, slug
from registry.weights import sha256_of

# llama.cpp's file name convention ends with the encoding: ``SmolLM2-135M-Instruct.Q4_1``,
# ``Llama-3.1-8B-Instruct-Q4_K_M``, ``model-f16``.
_ENCODING = re.compile(r"[.-](?:I?Q\d[A-Z0-9_]*|[BF]F?16|F32|F64|TQ\d_\d)$", re.IGNORECASE)
_HF_REPO = re.compile(r"https?://(?:www\.)?huggingface\.co/([^/\s]+/[^/\s]+?)/?$")


def discover_gguf(location: str, *, digest_cache: Path | None) -> Discovery:
    """Every ``*.gguf`` of a file or folder (not recursive)."""
    path = Path(location).expanduser().absolute()
    files = _gguf_files(path)
    discovery = Discovery(source="gguf", location=str(path))
    cache = DigestCache(digest_cache)
    for file in files:
        discovery.models.append(_read_file(file, cache))
    cache.save()
    return discovery


def _gguf_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if not files:
            raise ImportFailed(str(path), "no .gguf file in this folder")
        return files
    if not path.is_file():
        raise ImportFailed(str(path), "no such file or folder")
    return [path]


def _read_file(path: Path, cache: DigestCache) -> FoundModel:
    header = read_header(path)
    artifact = f"gguf:{path}"

    def fact(value: Any, key: str) -> Fact:
        return Fact(value, f"{artifact}#{key}")

    organization = header.get("general.organization")
    stem = _ENCODING.sub("", path.stem)
    names = [f"{organization}/{stem}" if organization else stem]
    described = "-".join(
        str(header[k])
        for k in ("general.basename", "general.size_label", "general.finetune")
        if header.get(k)
    )
    if described:
        names.append(f"{organization}/{described}" if organization else described)
    found = FoundModel(
        key=model_key(slug(organization) if organization else "gguf", path.stem),
        artifact=artifact,
        names=tuple(names),
        kinship="derived",
        relation="quantized_from",
        parents=_base_models(header, artifact),
    )
    found.facts["name"] = fact(str(header.get("general.name") or path.stem), "general.name")
    _put(found, "family", header.get("general.basename"), fact, "general.basename")
    _put(found, "organization", organization, fact, "general.organization")
    _put(found, "license", header.get("general.license"), fact, "general.license")
    _put(found, "size_label", header.get("general.size_label"), fact, "general.size_label")
    arch = header.get("general.architecture")
    context_key = f"{arch}.context_length"
    _put(found, "context_length", header.get(context_key), fact, context_key)
    _put(found, "quantization", _file_type(header), fact, "general.file_type")
    digest = cache.digest(path)
    found.facts["weights_digest"] = Fact(f"sha256:{digest}", f"{artifact}#sha256")
    return found


def _put(found: FoundModel, name: str, value: Any, fact: Any, key: str) -> None:
    if value is not None and value != "":
        found.facts[name] = fact(value, key)


def read_header(path: Path) -> dict[str, Any]:
    """The header's key/value pairs (plain Python values); a file that is not a complete
    GGUF (truncated, another format) is an ``ImportFailed`` naming it."""
    from gguf import GGUFReader  # numpy-backed; imported only when a GGUF is read

    try:
        reader = GGUFReader(path)
        values = {
            name: _plain(field.contents())
            for name, field in reader.fields.items()
            if name.startswith("general.") or name.endswith(".context_length")
        }
        end = max(
            (t.data_offset + int(t.n_bytes) for t in reader.tensors), default=reader.data_offset
        )
    except (ValueError, KeyError, IndexError, OSError, EOFError) as exc:
        raise ImportFailed(str(path), f"not a readable GGUF file ({_reason(exc)})") from exc
    if end > path.stat().st_size:
        raise ImportFailed(str(path), "truncated GGUF file (its tensors end past the file)")
    return values


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return value


def _file_type(header: dict[str, Any]) -> str | None:
    """``general.file_type`` as llama.cpp names it (``MOSTLY_Q4_1`` -> ``Q4_1``)."""
    code = header.get("general.file_type")
    if not isinstance(code, int):
        return None
    from gguf import LlamaFileType

    try:
        return LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"file_type {code}"


def _base_models(header: dict[str, Any], artifact: str) -> tuple[Parent, ...]:
    """``general.base_model.N.*``: each named base as a model id to resolve, where it can be
    told (``repo_url`` on Hugging Face, else organization/name, else name)."""
    count = header.get("general.base_model.count")
    parents: list[Parent] = []
    for index in range(count if isinstance(count, int) else 0):
        prefix = f"general.base_model.{index}"
        repo = _HF_REPO.match(str(header.get(f"{prefix}.repo_url") or ""))
        name, org = header.get(f"{prefix}.name"), header.get(f"{prefix}.organization")
        if repo is not None:
            parents.append(Parent("quantized_from", repo.group(1), f"{artifact}#{prefix}.repo_url"))
        elif name:
            text = f"{org}/{name}" if org else str(name)
            parents.append(Parent("quantized_from", text, f"{artifact}#{prefix}.name"))
    return tuple(parents)


class DigestCache:
    """SHA-256 digests by (absolute path, size, mtime), in one small JSON file."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._entries: dict[str, dict[str, Any]] = self._load()
        self._dirty = False

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._path is None or not self._path.is_file():
            return {}
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def digest(self, path: Path) -> str:
        stat = path.stat()
        entry = self._entries.get(str(path))
        if (
            isinstance(entry, dict)
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(entry.get("sha256"), str)
        ):
            return str(entry["sha256"])
        digest = sha256_of(path)
        self._entries[str(path)] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": digest,
        }
        self._dirty = True
        return digest

    def save(self) -> None:
        """Written atomically (a temporary file renamed over it); a cache we cannot write is
        no error: the next import hashes again."""
        if self._path is None or not self._dirty:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self._entries, indent=1), encoding="utf-8")
            os.replace(temporary, self._path)
        except OSError:
            return

"""The part of ``kustomize build`` the deploy/kubernetes kustomizations use, so the tests see
what ``kubectl apply -k`` would apply (no kustomize binary runs here).

Supported: ``resources`` (files, or folders holding a kustomization.yaml: overlays), ``labels``
(``pairs`` added to every object's metadata; to selectors and pod templates only with
``includeSelectors: true``), ``namespace``, ``images`` (``newTag``/``newName``) and
``patches`` given as a ``path`` to a strategic-merge-like patch (maps merged, lists replaced).
Any other field raises :class:`UnsupportedKustomization`: a kustomization that used it would
otherwise be rendered wrong and validated as something it is not.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
KNOWN_FIELDS = {"apiVersion", "kind", "resources", "labels", "namespace", "images", "patches"}


class UnsupportedKustomization(ValueError):
    """A kustomization field this renderer does not implement."""


def build(folder: Path) -> list[Manifest]:
    """The objects ``kustomize build folder`` would print, in resource order."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{folder}: unsupported fields {sorted(unknown)}")
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        manifests.extend(_load_resource(folder / resource))
    for patch in kustomization.get("patches", []):
        _apply_patch(manifests, folder, patch)
    for label in kustomization.get("labels", []):
        _add_labels(manifests, label)
    for manifest in manifests:
        if "namespace" in kustomization:
            manifest["metadata"]["namespace"] = kustomization["namespace"]
        _set_images(manifest, kustomization.get("images", []))
    return manifests


def load_file(path: Path) -> list[Manifest]:
    """The YAML documents of one manifest file (empty documents skipped)."""
    documents = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [document for document in documents if document is not None]


def _load_resource(path: Path) -> list[Manifest]:
    if path.is_dir():
        return build(path)
    return load_file(path)


def _apply_patch(manifests: list[Manifest], folder: Path, patch: Manifest) -> None:
    if set(patch) != {"path"}:
        raise UnsupportedKustomization(f"{folder}: only patches by path are supported: {patch}")
    for change in load_file(folder / patch["path"]):
        target = _find(manifests, change["kind"], change["metadata"]["name"])
        _merge(target, change)


def _find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise UnsupportedKustomization(f"a patch targets {kind}/{name}, which no resource defines")


def _merge(target: Manifest, change: Manifest) -> None:
    """Maps merge, scalars replace. A list in a patch is refused: kustomize merges lists of
    containers, ports, env... by their key, which this renderer does not imitate."""
    for key, value in change.items():
        if isinstance(value, list):
            raise UnsupportedKustomization(f"a patch sets a list ({key}): not supported")
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _add_labels(manifests: list[Manifest], label: Manifest) -> None:
    if label.get("includeSelectors"):
        raise UnsupportedKustomization("labels with includeSelectors are not supported")
    for manifest in manifests:
        manifest["metadata"].setdefault("labels", {}).update(label.get("pairs", {}))


def _set_images(manifest: Manifest, images: list[Manifest]) -> None:
    pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        name, tag = split_image(container["image"])
        for image in images:
            if image["name"] == name:
                new_tag = image.get("newTag", tag)
                new_name = image.get("newName", name)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def split_image(reference: str) -> tuple[str, str | None]:
    """``registry:5000/name:tag`` -> (``registry:5000/name``, ``tag``); no tag -> None."""
    name, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return reference, None
    return name, tag

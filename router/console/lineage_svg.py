"""A model's lineage drawn as an inline SVG graph, on the server (no script, no library).

Layers: the model's ancestors above it (nearest first), the models derived from it below, each
edge labelled with its relation (``finetune_of``, ``distilled_from``, ...). The page shows the
same edges as a table: the table is the source of truth, the drawing a picture of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from registry.snapshot import ModelSnap, OrgSnap

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 220, 44, 24, 56, 12


@dataclass(frozen=True, slots=True)
class Edge:
    child: str
    parent: str
    relation: str


def lineage_edges(models: Mapping[str, ModelSnap], model_id: str) -> list[Edge]:
    """Every edge among ``model_id``'s ancestors, plus the edges of the models derived from it."""
    edges: list[Edge] = []
    seen: set[str] = set()
    frontier = [model_id]
    while frontier:
        current = frontier.pop(0)
        if current in seen:
            continue
        seen.add(current)
        model = models.get(current)
        for link in model.parents if model else ():
            edges.append(Edge(current, link.parent_id, link.relation))
            frontier.append(link.parent_id)
    for child in models.values():
        edges.extend(
            Edge(child.id, model_id, link.relation)
            for link in child.parents
            if link.parent_id == model_id
        )
    return edges


def _layers(model_id: str, edges: list[Edge]) -> dict[str, int]:
    """Layer of each node: the model at 0, each ancestor at minus its distance (breadth
    first, so the nearest path wins), the models derived from it at +1."""
    parents: dict[str, list[str]] = {}
    for edge in edges:
        parents.setdefault(edge.child, []).append(edge.parent)
    layer = {model_id: 0}
    queue = [model_id]
    while queue:
        current = queue.pop(0)
        for parent in parents.get(current, []):
            if parent not in layer:
                layer[parent] = layer[current] - 1
                queue.append(parent)
    for edge in edges:
        if edge.parent == model_id:
            layer.setdefault(edge.child, 1)
    return layer


def lineage_svg(models: Mapping[str, ModelSnap], orgs: Mapping[str, OrgSnap], model_id: str) -> str:
    """The graph as an ``<svg role="img">`` with a title and description."""
    edges = lineage_edges(models, model_id)
    layer = _layers(model_id, edges)
    rows: dict[int, list[str]] = {}
    for node, depth in sorted(layer.items(), key=lambda item: (item[1], item[0])):
        rows.setdefault(depth, []).append(node)
    top = min(rows)
    width = max(len(r) for r in rows.values()) * (NODE_W + GAP_X) + PAD * 2
    height = len(rows) * (NODE_H + GAP_Y) + PAD * 2 - GAP_Y
    place: dict[str, tuple[float, float]] = {}
    for depth, nodes in rows.items():
        row_width = len(nodes) * (NODE_W + GAP_X) - GAP_X
        x0 = (width - row_width) / 2
        for i, node in enumerate(nodes):
            place[node] = (x0 + i * (NODE_W + GAP_X), PAD + (depth - top) * (NODE_H + GAP_Y))
    parts = [
        f'<svg role="img" aria-labelledby="lineage-title lineage-desc" class="lineage" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">',
        f'<title id="lineage-title">Lineage of {escape(model_id)}</title>',
        f'<desc id="lineage-desc">{len(edges)} lineage edges; see the table below.</desc>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="edge-head"/>'
        "</marker></defs>",
    ]
    parts.extend(_edge(edge, place) for edge in edges)
    parts.extend(_node(node, place[node], models, orgs, node == model_id) for node in place)
    parts.append("</svg>")
    return "".join(parts)


def _edge(edge: Edge, place: Mapping[str, tuple[float, float]]) -> str:
    (px, py), (cx, cy) = place[edge.parent], place[edge.child]
    x1, y1 = px + NODE_W / 2, py + NODE_H
    x2, y2 = cx + NODE_W / 2, cy
    if cy <= py:  # drawn upwards only in a (refused) cycle: keep it visible anyway
        y1, y2 = py, cy + NODE_H
    label = escape(edge.relation)
    return (
        f'<g class="edge" data-relation="{label}">'
        f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
        'marker-end="url(#arrow)"/>'
        f'<text x="{(x1 + x2) / 2 + 6:.0f}" y="{(y1 + y2) / 2 + 4:.0f}">{label}</text></g>'
    )


def _node(
    node: str,
    at: tuple[float, float],
    models: Mapping[str, ModelSnap],
    orgs: Mapping[str, OrgSnap],
    focus: bool,
) -> str:
    x, y = at
    model = models.get(node)
    org = orgs.get(model.developer_id) if model and model.developer_id else None
    country = (org.hq_country if org else None) or "unknown"
    detail = (
        f"{model.developer_id or 'developer unknown'} · {country}" if model else "not in registry"
    )
    css = "node focus" if focus else ("node" if model else "node missing")
    return (
        f'<g class="{css}" data-model="{escape(node)}">'
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
        f'<text x="{x + 8:.0f}" y="{y + 18:.0f}" class="name">{escape(node)}</text>'
        f'<text x="{x + 8:.0f}" y="{y + 35:.0f}" class="detail">{escape(detail)}</text></g>'
    )

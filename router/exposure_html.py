"""The exposure report as one self-contained HTML page: inline CSS and SVG charts drawn here,
no script, no font, no request to any host, so it opens offline and can be mailed as a file.

Accessible: every chart is an ``<svg role="img">`` with a title and a description, and is
followed by the table of the numbers it draws (the table is the source of truth; the chart a
picture of it). Every text from the registry or the audit log is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from router.exposure import (
    DIMENSIONS,
    SET_DIMENSIONS,
    Alternative,
    DayCount,
    ExposureReport,
    RouteReadiness,
    Share,
)

BAR_WIDTH = 360  # px of a 100 % bar
ROW_HEIGHT = 22
LABEL_WIDTH = 180
JURISDICTION = "developer jurisdiction"
HARDWARE = "hardware supply chain"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1a1a1a;max-width:70rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #bbb;padding:.25rem .6rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.25rem 0}
svg text{font-size:12px;fill:#1a1a1a}
.note{color:#444;font-size:.9rem}
"""


def render_html(report: ExposureReport) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>Provenance exposure report</title>",
            f"<style>{STYLE}</style></head><body>",
            "<h1>Provenance exposure report</h1>",
            render_sections(report),
            "</body></html>",
        ]
    )


def render_sections(report: ExposureReport) -> str:
    """The report's content without the page around it (the admin console shows it too)."""
    titles = dict(DIMENSIONS)
    sections = [_dimension(name, titles[name], report.dimensions[name]) for name, _ in DIMENSIONS]
    return "\n".join(
        [
            _summary(report),
            "<h2>Exposure by dimension</h2>",
            '<p class="note">Shares of the requests (and tokens) that reached a deployment. '
            "Dimensions along the lineage count a request once for every value it depends on, "
            "so their shares may sum to more than 100 %.</p>",
            *sections,
            _trends(report),
            _switching(report.switching),
        ]
    )


def _summary(report: ExposureReport) -> str:
    rows = [
        ("window", "Window", f"{report.since} to {report.until}"),
        ("tenant", "Tenant", report.tenant or "all"),
        ("route", "Route", report.route or "all"),
        ("requests", "Requests", str(report.requests)),
        ("tokens", "Tokens", str(report.tokens)),
        ("version", "Registry version (switching readiness)", str(report.registry_version)),
    ]
    cells = "".join(
        f'<tr><th scope="row">{escape(label)}</th><td id="summary-{key}">{escape(value)}</td></tr>'
        for key, label, value in rows
    )
    return f"<table><caption>Summary</caption>{cells}</table>"


def _dimension(name: str, title: str, shares: Sequence[Share]) -> str:
    kind = "any of its lineage" if name in SET_DIMENSIONS else "its own"
    chart = _bars(
        f"chart-{name}",
        f"{title}: share of requests",
        f"Horizontal bars, one per value, length proportional to the share of requests ({kind}).",
        [(s.value, s.request_share) for s in shares],
    )
    head = (
        '<tr><th scope="col">Value</th><th scope="col">Requests</th>'
        '<th scope="col">% of requests</th><th scope="col">Tokens</th>'
        '<th scope="col">% of tokens</th></tr>'
    )
    rows = "".join(
        f'<tr data-dimension="{escape(name)}" data-value="{escape(s.value)}">'
        f'<th scope="row">{escape(s.value)}</th><td class="num requests">{s.requests}</td>'
        f'<td class="num">{s.request_share:.2f}</td><td class="num tokens">{s.tokens}</td>'
        f'<td class="num">{s.token_share:.2f}</td></tr>'
        for s in shares
    )
    table = f'<table id="table-{name}"><caption>{escape(title)}</caption>{head}{rows}</table>'
    heading = f'<h3 id="h-{name}">{escape(title)}</h3>'
    return f'<section aria-labelledby="h-{name}">{heading}{chart}{table}</section>'


def _bars(chart_id: str, title: str, description: str, bars: Sequence[tuple[str, float]]) -> str:
    """A horizontal bar chart of percentages, labelled; empty data draws a note instead."""
    if not bars:
        return '<p class="note">No traffic in this window.</p>'
    height = ROW_HEIGHT * len(bars) + 4
    width = LABEL_WIDTH + BAR_WIDTH + 70
    parts = [
        f'<svg id="{chart_id}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(description)}</desc>',
    ]
    for index, (label, percent) in enumerate(bars):
        y = index * ROW_HEIGHT + 2
        length = BAR_WIDTH * min(percent, 100.0) / 100.0
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{ROW_HEIGHT - 6}" '
            'fill="#3b6ea5"></rect>'
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 15}">{percent:.2f} %</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _trends(report: ExposureReport) -> str:
    peak = max((d.requests for d in report.daily), default=0)
    chart = _bars(
        "chart-daily",
        "Requests per day",
        "Horizontal bars, one per day, length proportional to that day's requests "
        "relative to the busiest day.",
        [(d.day, 100.0 * d.requests / peak if peak else 0.0) for d in report.daily],
    )
    totals = _day_table("table-daily", "Requests and tokens per day", report.daily, False)
    per_dimension = "".join(
        f"<details><summary>{escape(title)} per day</summary>"
        f"{_day_table(f'trend-{name}', f'{title} per day', report.trends[name], True)}</details>"
        for name, title in DIMENSIONS
    )
    return f'<h2 id="trends">Daily trends</h2>{chart}{totals}{per_dimension}'


def _day_table(table_id: str, caption: str, days: Sequence[DayCount], by_value: bool) -> str:
    value_head = '<th scope="col">Value</th>' if by_value else ""
    head = (
        f'<tr><th scope="col">Day (UTC)</th>{value_head}<th scope="col">Requests</th>'
        '<th scope="col">Tokens</th></tr>'
    )
    rows = "".join(
        f'<tr data-day="{d.day}"><th scope="row">{d.day}</th>'
        + (f"<td>{escape(d.value)}</td>" if by_value else "")
        + f'<td class="num requests">{d.requests}</td><td class="num tokens">{d.tokens}</td></tr>'
        for d in days
    )
    return f'<table id="{table_id}"><caption>{escape(caption)}</caption>{head}{rows}</table>'


def _switching(routes: Sequence[RouteReadiness]) -> str:
    if not routes:
        return (
            '<h2 id="switching">Switching readiness</h2><p class="note">No route had traffic.</p>'
        )
    sections = [
        f'<section data-route="{escape(r.route)}"><h3>Route {escape(r.route)}</h3>'
        f"<p>Tenants: {escape(', '.join(r.tenants))}</p>"
        + _alternatives("Serves today", r.current)
        + _alternatives(f"Allowed alternatives of another {JURISDICTION}", r.other_jurisdiction)
        + _alternatives(f"Allowed alternatives of another {HARDWARE}", r.other_hardware)
        + "</section>"
        for r in routes
    ]
    return (
        '<h2 id="switching">Switching readiness</h2><p class="note">Alternatives are '
        "deployments the active policy allows for every tenant of the route; unknown facts "
        "never count as different. Replace a dependency by editing the route.</p>"
        + "".join(sections)
    )


def _alternatives(caption: str, alternatives: Sequence[Alternative]) -> str:
    if not alternatives:
        return f'<p class="note">{escape(caption)}: none.</p>'
    head = (
        '<tr><th scope="col">Deployment</th><th scope="col">Model</th>'
        '<th scope="col">Developer countries (lineage)</th>'
        '<th scope="col">Serving hardware</th><th scope="col">Training hardware</th></tr>'
    )
    rows = "".join(
        f'<tr><th scope="row">{escape(a.deployment)}</th><td>{escape(a.model)}</td>'
        f"<td>{escape(', '.join(a.lineage_developer_country))}</td>"
        f"<td>{escape(', '.join(a.serving_hardware_vendor))}</td>"
        f"<td>{escape(', '.join(a.training_hardware_vendor))}</td></tr>"
        for a in alternatives
    )
    return f"<table><caption>{escape(caption)}</caption>{head}{rows}</table>"

"""The provenance exposure report (issue 19), black box on SQLite and PostgreSQL.

Traffic goes through the real gateway with the official ``openai`` SDK to deployments of models
developed in the US, in China and in France (a French fine-tune of the Chinese model), plus one
deployment whose facts are unknown. Every share the report states is checked against counts
computed here with plain SQL over ``routing_decisions`` and the registry tables, never through
the report's code. Then: a fact edited after the traffic does not move that traffic; unknown
facts are counted as ``unknown``; the CSV, JSON and HTML forms, the CLI, the tenant scoping of
compliance keys, and switching readiness.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.fakes import FakeUpstream
from tests.router.conftest import REPORTED, RunningGateway, deployment

PROMPT = [{"role": "user", "content": "Where does this go?"}]
# (route, deployment, requests from tenant apps); each deployment replies with its own length,
# so token sums differ per deployment.
TRAFFIC = (("exp-us", "exp-d-us", 3), ("exp-cn", "exp-d-cn", 4), ("exp-fr", "exp-d-fr", 2))
UNKNOWN_TRAFFIC = ("exp-unk", "exp-d-unk", 2)
MOVING = ("exp-move", "exp-d-move")  # tenant limited's route, whose location is edited later


@dataclass(frozen=True)
class Setup:
    gw: RunningGateway
    backend: str


def _models(gw: RunningGateway) -> None:
    with gw.write() as w:
        w.create(
            "organization", {"id": "gaul", "name": "Gaul AI", "hq_country": "FR", "claim": REPORTED}
        )
        base = {"review_status": "approved", "claim": REPORTED}
        w.create(
            "model",
            {
                **base,
                "id": "acme/exp-us",
                "developer": "acme",
                "license": "Apache-2.0",
                "training_hardware": [{"vendor": "nvidia"}],
            },
        )
        w.create(
            "model",
            {
                **base,
                "id": "dragon/exp-cn",
                "developer": "dragon",
                "license": "MIT",
                "training_hardware": [{"vendor": "huawei"}],
            },
        )
        w.create(
            "model",
            {
                **base,
                "id": "gaul/exp-fr",
                "developer": "gaul",
                "license": "Apache-2.0",
                "lineage": [{"relation": "finetune_of", "model": "dragon/exp-cn"}],
            },
        )


def _deployments(gw: RunningGateway, stack: ExitStack) -> None:
    def up(words: int) -> str:
        upstream = stack.enter_context(FakeUpstream(reply=" ".join(["word"] * words)))
        return str(upstream.base_url)

    with gw.write() as w:
        w.create("deployment", deployment("exp-d-us", up(1), model="acme/exp-us"))
        w.create(
            "deployment",
            deployment(
                "exp-d-cn",
                up(2),
                model="dragon/exp-cn",
                hosting="third_party_api",
                location_country="CN",
                location_region="cn-north",
                hardware_vendor="huawei",
                accelerator="Ascend 910B",
                operator="dragon",
            ),
        )
        w.create(
            "deployment",
            deployment(
                "exp-d-fr",
                up(3),
                model="gaul/exp-fr",
                location_country="FR",
                location_region="eu-west-3",
                operator="gaul",
            ),
        )
        w.create(
            "deployment",
            {
                "id": "exp-d-unk",
                "model": "acme/exp-us",
                "adapter": "openai",
                "endpoint_url": up(4),
                "timeout_s": 5.0,
            },
        )
        w.create("deployment", deployment("exp-d-move", up(5), model="acme/exp-us"))
        # allowed by nothing (TEST_POLICY denies *-denied): never an alternative
        w.create("deployment", deployment("exp-d-x-denied", up(1), model="gaul/exp-fr"))
        for route, dep, _ in (*TRAFFIC, UNKNOWN_TRAFFIC, (*MOVING, 0)):
            w.create("route", {"name": route, "candidates": [dep]})


def _send(gw: RunningGateway, key: str, route: str, count: int) -> None:
    client = gw.openai(gw.keys[key])
    for _ in range(count):
        raw = client.chat.completions.with_raw_response.create(model=route, messages=PROMPT)  # type: ignore[arg-type]
        gw.decision(raw.headers["x-request-id"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> Iterator[Setup]:
    with ExitStack() as stack:
        gw = gateway_factory(backend=request.param)
        _models(gw)
        _deployments(gw, stack)
        for route, _, count in (*TRAFFIC, UNKNOWN_TRAFFIC):
            _send(gw, "apps", route, count)
        _send(gw, "limited", MOVING[0], 2)
        yield Setup(gw, request.param)


def report(setup: Setup, key: str | None = None, **params: Any) -> httpx.Response:
    with setup.gw.http(key or setup.gw.admin_key) as client:
        return client.get("/admin/reports/exposure", params={"since": "2000-01-01", **params})


def ok_json(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def shares(data: dict[str, Any], dimension: str) -> dict[str, tuple[int, int]]:
    return {s["value"]: (s["requests"], s["tokens"]) for s in data["dimensions"][dimension]}


# --- independent counts: SQL over the audit rows and today's registry (facts unchanged) --------

JOIN = """
FROM routing_decisions r
JOIN deployments d ON d.id = r.chosen_deployment
JOIN models m ON m.id = d.model
LEFT JOIN organizations o ON o.id = m.developer
LEFT JOIN organizations op ON op.id = d.operator
WHERE r.tenant_id = 'apps' AND r.chosen_deployment IS NOT NULL
"""
# For each dimension, the grouping expression (NULL reads as unknown).
GROUPED = {
    "developer_country": "o.hq_country",
    "developer": "m.developer",
    "hosting": "d.hosting",
    "operator_country": "op.hq_country",
    "serving_location": "d.location_country",
    "serving_hardware_vendor": "d.hardware_vendor",
}
# Countries along the lineage: the model's developer's, and each parent's developer's.
LINEAGE_COUNTRIES = """
SELECT country, count(*), sum(r.total_tokens) FROM routing_decisions r
JOIN deployments d ON d.id = r.chosen_deployment
JOIN (
    SELECT m.id AS model, o.hq_country AS country FROM models m
    JOIN organizations o ON o.id = m.developer
    UNION
    SELECT rel.child, o.hq_country FROM model_relations rel
    JOIN models p ON p.id = rel.parent JOIN organizations o ON o.id = p.developer
) lineage ON lineage.model = d.model
WHERE r.tenant_id = 'apps' AND r.chosen_deployment IS NOT NULL
GROUP BY country
"""


def counted(setup: Setup, sql: str) -> dict[str, tuple[int, int]]:
    with setup.gw.engine.connect() as connection:
        rows = connection.execute(text(sql)).all()
    return {(value or "unknown"): (int(n), int(tokens or 0)) for value, n, tokens in rows}


def independent(setup: Setup, dimension: str) -> dict[str, tuple[int, int]]:
    if dimension == "lineage_developer_country":
        return counted(setup, LINEAGE_COUNTRIES)
    expression = GROUPED[dimension]
    return counted(
        setup, f"SELECT {expression}, count(*), sum(r.total_tokens) {JOIN} GROUP BY {expression}"
    )


def total(setup: Setup) -> tuple[int, int]:
    return counted(setup, f"SELECT 'all', count(*), sum(r.total_tokens) {JOIN}")["all"]


@pytest.mark.parametrize("dimension", [*GROUPED, "lineage_developer_country"])
def test_shares_equal_independent_counts_of_the_audit_rows(setup: Setup, dimension: str) -> None:
    data = ok_json(report(setup, tenant="apps"))
    requests, tokens = total(setup)

    assert (data["requests"], data["tokens"]) == (requests, tokens) == (11, data["tokens"])
    assert shares(data, dimension) == independent(setup, dimension)
    for share in data["dimensions"][dimension]:
        assert share["request_share"] == round(100 * share["requests"] / requests, 2)
        assert share["token_share"] == round(100 * share["tokens"] / tokens, 2)


def test_a_lineage_counts_traffic_once_per_country_it_depends_on(setup: Setup) -> None:
    data = ok_json(report(setup, tenant="apps"))
    lineage = shares(data, "lineage_developer_country")
    own = shares(data, "developer_country")

    # the French fine-tune of the Chinese model depends on both countries
    assert lineage["CN"][0] == own["CN"][0] + own["FR"][0] == 6
    assert sum(s["request_share"] for s in data["dimensions"]["lineage_developer_country"]) > 100
    assert shares(data, "training_hardware_vendor") == {
        "huawei": independent_training(setup, "LIKE '%huawei%'"),
        "nvidia": independent_training(setup, "LIKE '%nvidia%'"),
        "unknown": independent_training(setup, "IN ('[]', 'null')"),  # the French fine-tune's
    }


def independent_training(setup: Setup, condition: str) -> tuple[int, int]:
    """Traffic whose model, or a parent of it, has a training hardware vendor ``condition``."""
    sql = f"""
    SELECT 'v', count(*), sum(r.total_tokens) FROM routing_decisions r
    JOIN deployments d ON d.id = r.chosen_deployment
    WHERE r.tenant_id = 'apps' AND (
        d.model IN (SELECT id FROM models WHERE CAST(training_hardware AS TEXT) {condition})
        OR d.model IN (SELECT rel.child FROM model_relations rel JOIN models p ON p.id = rel.parent
                       WHERE CAST(p.training_hardware AS TEXT) {condition}))
    """
    return counted(setup, sql)["v"]


def test_unknown_facts_are_counted_as_unknown(setup: Setup) -> None:
    data = ok_json(report(setup, tenant="apps", route="exp-unk"))

    assert data["requests"] == 2
    for dimension in ("hosting", "serving_location", "serving_hardware_vendor", "operator_country"):
        assert shares(data, dimension) == {"unknown": (2, data["tokens"])}, dimension
    # the model's facts are known, and reported as such
    assert shares(data, "developer_country") == {"US": (2, data["tokens"])}


def test_a_fact_edited_after_the_traffic_does_not_move_that_traffic(setup: Setup) -> None:
    gw = setup.gw
    before = ok_json(report(setup, tenant="limited"))
    assert shares(before, "hosting") == {"private_cloud": (2, before["tokens"])}

    with gw.write() as w:
        w.update("deployment", MOVING[1], {"hosting": "on_prem"}, expected_version=None)
    _send(gw, "limited", MOVING[0], 1)

    after = ok_json(report(setup, tenant="limited"))
    hosting = shares(after, "hosting")
    assert hosting["private_cloud"] == (2, before["tokens"]), hosting
    assert hosting["on_prem"][0] == 1


def test_the_csv_has_one_row_per_share_and_per_day(setup: Setup) -> None:
    response = report(setup, tenant="apps", format="csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    data = ok_json(report(setup, tenant="apps"))

    assert list(rows[0]) == [
        "section",
        "dimension",
        "day",
        "value",
        "requests",
        "request_share",
        "tokens",
        "token_share",
    ]
    share_rows = [r for r in rows if r["section"] == "share"]
    assert len(share_rows) == sum(len(v) for v in data["dimensions"].values())
    hosting = {r["value"]: int(r["requests"]) for r in share_rows if r["dimension"] == "hosting"}
    assert hosting == {k: v[0] for k, v in shares(data, "hosting").items()}
    daily = [r for r in rows if r["section"] == "daily" and r["dimension"] == "all"]
    assert sum(int(r["requests"]) for r in daily) == data["requests"]


def test_the_json_names_every_dimension_and_the_daily_trend(setup: Setup) -> None:
    data = ok_json(report(setup, tenant="apps"))

    assert set(data["dimensions"]) == set(data["titles"]) == set(data["trends"])
    assert {"requests", "tokens", "since", "until", "daily", "switching"} <= set(data)
    assert sum(d["requests"] for d in data["daily"]) == data["requests"]
    for name, days in data["trends"].items():
        by_value: dict[str, int] = {}
        for day in days:
            by_value[day["value"]] = by_value.get(day["value"], 0) + day["requests"]
        assert by_value == {k: v[0] for k, v in shares(data, name).items()}, name


def test_a_compliance_key_reads_only_its_own_tenants_exposure(setup: Setup) -> None:
    own = ok_json(report(setup, setup.gw.keys["no-inference"]))
    assert own["tenant"] == "apps" and own["requests"] == total(setup)[0]

    denied = report(setup, setup.gw.keys["no-inference"], tenant="limited")
    assert denied.status_code == 403
    assert denied.json()["error"]["param"] == "tenant"
    org_wide = ok_json(report(setup, setup.gw.keys["compliance-org"], tenant="limited"))
    assert org_wide["tenant"] == "limited"


def test_an_inference_key_may_not_read_the_report(setup: Setup) -> None:
    assert report(setup, setup.gw.keys["apps"]).status_code == 403


def test_switching_readiness_names_allowed_alternatives(setup: Setup) -> None:
    data = ok_json(report(setup, tenant="apps"))
    routes = {r["route"]: r for r in data["switching"]}

    chinese = routes["exp-cn"]
    assert [a["deployment"] for a in chinese["current"]] == ["exp-d-cn"]
    jurisdiction = {a["deployment"] for a in chinese["other_jurisdiction"]}
    # US models: yes; the French fine-tune of the Chinese model: no; denied: never
    assert {"exp-d-us", "exp-d-move"} <= jurisdiction
    assert "exp-d-fr" not in jurisdiction and "exp-d-x-denied" not in jurisdiction
    hardware = {a["deployment"] for a in chinese["other_hardware"]}
    assert "exp-d-us" in hardware and "exp-d-fr" not in hardware  # exp-fr's base: huawei
    assert "exp-d-unk" not in hardware  # its serving hardware is unknown: never "different"


def test_the_cli_prints_the_same_report(setup: Setup, tmp_path: Path) -> None:
    url = setup.gw.app.gateway.settings.database_url
    out = tmp_path / "exposure.json"
    command = [
        str(Path(sys.executable).with_name("provenance-router")),
        "report",
        "exposure",
        "--since",
        "3650d",
        "--tenant",
        "apps",
        "--format",
        "json",
        "--out",
        str(out),
        "--database-url",
        url,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    printed = json.loads(out.read_text(encoding="utf-8"))
    api = ok_json(report(setup, tenant="apps"))

    assert printed["dimensions"] == api["dimensions"]
    assert printed["switching"] == api["switching"]
    table = subprocess.run(
        [*command[:-6], "--format", "table", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert "Developer country along lineage" in table.stdout and "unknown" in table.stdout


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (make install-test installs it)",
)
def test_the_html_report_shows_the_independent_counts_offline(setup: Setup, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    response = report(setup, tenant="apps", format="html")
    assert response.headers["content-type"].startswith("text/html")
    page_file = tmp_path / "exposure.html"
    page_file.write_text(response.text, encoding="utf-8")
    fetched: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(page_file.as_uri())
            shown = {
                dimension: _shown(page, dimension)
                for dimension in (*GROUPED, "lineage_developer_country")
            }
            summary = int(page.locator("#summary-requests").inner_text())
            charts = page.locator("svg[role=img]").count()
            labelled = page.locator("svg[role=img] > title").count()
        finally:
            browser.close()

    assert fetched == [page_file.as_uri()]  # nothing but the file itself: works offline
    assert summary == total(setup)[0]
    for dimension, values in shown.items():
        assert values == independent(setup, dimension), dimension
    assert charts == labelled >= len(shown)


def _shown(page: Any, dimension: str) -> dict[str, tuple[int, int]]:
    """The (requests, tokens) the page's table shows for each value of ``dimension``."""
    rows = page.locator(f'#table-{dimension} tr[data-dimension="{dimension}"]')
    found = {}
    for index in range(rows.count()):
        row = rows.nth(index)
        value = row.locator("th").inner_text()
        requests = int(row.locator("td.requests").inner_text())
        found[value] = (requests, int(row.locator("td.tokens").inner_text()))
    return found

"""The admin console in a real browser: Debian's Chromium (``/usr/bin/chromium``, launched by
``executable_path``; never a browser download) driven by Playwright through sign-in, approving
a model, writing a policy and seeing its what-if, finding a decision by request id, and signing
out, against the real gateway with a request made by the official openai SDK.

Each page is saved as a screenshot under ``test-artifacts/console/`` (gitignored) and checked
with axe-core (``axe-playwright-python`` bundles ``axe.min.js``: nothing is downloaded): no
serious or critical violation. Every request the browser makes stays on the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeUpstream
from tests.router.conftest import REPORTED, RunningGateway, deployment, uid

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
SERIOUS = {"serious", "critical"}
LAPTOP_WIDTH = 1280

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (make install-test installs it)",
)


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": LAPTOP_WIDTH, "height": 800})
            yield context.new_page()
        finally:
            browser.close()


class Pages:
    """Screenshots and the accessibility check of every page visited."""

    def __init__(self, page: Any, tmp_path: Path) -> None:
        from axe_playwright_python.sync_playwright import Axe

        self.page, self.axe, self.tmp_path = page, Axe(), tmp_path
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.violations: dict[str, list[str]] = {}
        self.too_wide: dict[str, int] = {}  # pages that scroll sideways at laptop width

    def check(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        self.page.screenshot(path=str(self.tmp_path / f"{name}.png"), full_page=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}-top.png"))  # what docs/ shows
        width = self.page.evaluate("document.documentElement.scrollWidth")
        if width > LAPTOP_WIDTH:
            self.too_wide[name] = width
        results = self.axe.run(self.page)
        serious = [
            f"{v['id']} ({v['impact']}): {v['help']}"
            for v in results.response["violations"]
            if v["impact"] in SERIOUS
        ]
        if serious:
            self.violations[name] = serious


def test_an_admin_walks_through_the_console(
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    gw = gateway_factory()
    route, dep, pending = uid("browser"), uid("browser-dep"), f"acme/{uid('pending')}"
    with gw.write() as w:
        w.create("deployment", deployment(dep, up.base_url))
        w.create("route", {"name": route, "candidates": [dep]})
        w.create(
            "model",
            {
                "id": pending,
                "name": "Pending",
                "developer": "acme",
                "license": "Apache-2.0",
                "lineage": [{"relation": "distilled_from", "model": "dragon/beta"}],
                "claim": REPORTED,
            },
        )
    raw = gw.openai().chat.completions.with_raw_response.create(
        model=route,
        messages=[{"role": "user", "content": "hello from the browser test"}],
    )
    request_id = raw.headers["x-request-id"]
    gw.decision(request_id)

    page = browser_page
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    pages = Pages(page, tmp_path)
    console = f"{gw.url}/console"

    # sign in (a page of the console sends a stranger to the form first)
    page.goto(f"{console}/review")
    expect(page).to_have_url(f"{console}/login?next=/review")
    pages.check("login")
    page.get_by_label("API key").fill(gw.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{console}/review")

    # approve a model, with a note
    item = page.locator(f'section.review-item[data-entity="{pending}"]')
    expect(item.locator(".lineage-countries")).to_have_text("CN, US")  # distilled from dragon
    pages.check("review")
    item.get_by_label("Note for the change log").fill("card and lineage checked")
    item.get_by_role("button", name="Approve").click()
    expect(page.locator(f'section.review-item[data-entity="{pending}"]')).to_have_count(0)
    expect(page.locator("#review-history")).to_contain_text("card and lineage checked")
    assert gw.app.gateway.table.snapshot.models[pending].review_status == "approved" or _approved(
        gw, pending
    )

    # the overview and the registry pages, by keyboard and by link
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("h1")).to_have_text("Overview")
    pages.check("overview")
    page.keyboard.press("Tab")  # the first stop is the skip link, then it moves focus to main
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console}/#main")

    page.get_by_role("link", name="Models").click()
    page.get_by_label("Search").fill("pending")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#models-table tbody tr")).to_have_count(1)
    pages.check("models")
    page.get_by_role("link", name=pending).click()
    expect(page.locator('svg[role="img"] g.edge[data-relation="distilled_from"]')).to_have_count(1)
    expect(page.locator("#effective-countries")).to_contain_text("CN")
    pages.check("model")
    for name in ("Deployments", "Organizations"):
        page.get_by_role("navigation").get_by_role("link", name=name).click()
        expect(page.locator("h1")).to_have_text(name)
        pages.check(name.lower())

    # write a policy: checked as you type, then its what-if against the recorded request
    page.get_by_role("link", name="Policies").click()
    source = page.get_by_label("Policy source")
    source.fill("rules: [")
    expect(page.locator("#validation")).to_contain_text("Invalid")
    draft = (
        "rules:\n  - id: browser-deny\n    description: keep traffic off this deployment\n"
        f"    deny: {{deployment: [{dep}]}}\n"
    )
    source.fill(draft)
    expect(page.locator("#validation")).to_contain_text("Valid: rules")
    expect(page.locator("#draft-cedar")).to_contain_text("browser-deny")
    page.get_by_role("button", name="What if?").click()
    expect(page.locator(f'#what-if-table tr[data-request-id="{request_id}"]')).to_have_count(1)
    pages.check("policies")
    page.get_by_role("button", name="Review activation…").click()
    expect(page.locator("#diff")).to_contain_text("browser-deny")
    pages.check("activate")

    # find the decision by its request id, then open it
    page.get_by_role("link", name="Decisions").click()
    page.get_by_label("Request id").fill(request_id)
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#decisions-table tbody tr")).to_have_count(1)
    pages.check("decisions")
    page.get_by_role("link", name=request_id).click()
    expect(page.locator(f'tr[data-deployment="{dep}"]')).to_contain_text("allowed")
    pages.check("decision")

    page.get_by_role("link", name="Exposure").click()
    expect(page.locator("#summary-requests")).to_have_text("1")
    pages.check("exposure")

    # sign out: the console is closed again
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{console}/login")
    page.goto(f"{console}/")
    expect(page.get_by_label("API key")).to_be_visible()

    assert pages.violations == {}
    assert pages.too_wide == {}
    assert fetched and all(url.startswith(gw.url) for url in fetched), fetched


def _approved(gw: RunningGateway, model_id: str) -> bool:
    from registry.db import session_scope
    from registry.service import read_one

    with session_scope(gw.engine) as session:
        return read_one(session=session, kind="model", id=model_id)["review_status"] == "approved"


def test_a_compliance_officer_sees_a_read_only_console(
    gateway_factory: Callable[..., RunningGateway], browser_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    gw = gateway_factory()
    pending = f"acme/{uid('pending')}"
    with gw.write() as w:
        w.create(
            "model",
            {"id": pending, "name": "Pending", "developer": "acme", "claim": REPORTED},
        )
    page = browser_page
    pages = Pages(page, tmp_path)
    console = f"{gw.url}/console"
    page.goto(f"{console}/login")
    page.get_by_label("API key").fill(gw.keys["no-inference"])  # scope compliance, tenant apps
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who")).to_contain_text("(read-only)")

    page.get_by_role("link", name="Review").click()
    expect(page.locator(f'section.review-item[data-entity="{pending}"]')).to_contain_text(
        "Read-only"
    )
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    pages.check("review-read-only")
    page.get_by_role("link", name="Policies").click()
    expect(page.locator("#validation")).to_contain_text("Valid")  # checking is a read
    expect(page.get_by_role("button", name="Review activation…")).to_have_count(0)
    expect(page.get_by_label("Tenant")).to_have_value("apps")
    pages.check("policies-read-only")
    assert pages.violations == {}

"""The admin console (/console, docs/console.md) over HTTP, black box through the real gateway
on SQLite and PostgreSQL: sign-in, the session cookie, CSRF refusals, expiry and sign-out,
compliance keys read-only and tenant-scoped, and writes recorded in the registry change log."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from registry.db import session_scope
from registry.service import list_changes, list_policies, read_one
from tests.fakes import FakeUpstream
from tests.router.conftest import REPORTED, RunningGateway, deployment, uid, wait_for

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PROMPT = [{"role": "user", "content": "Hello console"}]


@dataclass(frozen=True)
class Setup:
    gw: RunningGateway
    route: str
    dep: str
    apps_request: str
    limited_request: str
    apps_receipt: str


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
) -> Setup:
    gw = gateway_factory(backend=request.param)
    route, dep = uid("console"), uid("console-dep")
    with gw.write() as w:
        w.create("deployment", deployment(dep, up.base_url))
        w.create("route", {"name": route, "candidates": [dep]})

    def served(key: str) -> tuple[str, str]:
        raw = gw.openai(gw.keys[key]).chat.completions.with_raw_response.create(
            model=route,
            messages=PROMPT,  # type: ignore[arg-type]
        )
        request_id: str = raw.headers["x-request-id"]
        gw.decision(request_id)
        return request_id, raw.headers["x-provenance-receipt"]

    (apps, receipt), (limited, _) = served("apps"), served("limited")
    return Setup(gw, route, dep, apps, limited, receipt)


def console(gw: RunningGateway) -> httpx.Client:
    return httpx.Client(base_url=f"{gw.url}/console", timeout=30.0, follow_redirects=False)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    form = client.get("/login")
    assert form.status_code == 200
    return client.post("/login", data={"csrf": csrf_of(form), "key": key, "next": "/"})


@pytest.fixture
def admin(setup: Setup) -> Iterator[httpx.Client]:
    with console(setup.gw) as client:
        assert sign_in(client, setup.gw.admin_key).status_code == 303
        yield client


@pytest.fixture
def auditor(setup: Setup) -> Iterator[httpx.Client]:
    """A ``compliance`` key of tenant ``apps``: read-only, its own tenant only."""
    with console(setup.gw) as client:
        assert sign_in(client, setup.gw.keys["no-inference"]).status_code == 303
        yield client


def under_review_model(gw: RunningGateway) -> str:
    model_id = f"acme/{uid('review')}"
    with gw.write() as w:
        w.create(
            "model",
            {
                "id": model_id,
                "name": "Pending",
                "developer": "acme",
                "license": "Apache-2.0",
                "review_status": "under_review",
                "claim": REPORTED,
            },
        )
    return model_id


def review_status(gw: RunningGateway, model_id: str) -> str:
    with session_scope(gw.engine) as session:
        return str(read_one(session=session, kind="model", id=model_id)["review_status"])


def test_pages_send_a_stranger_to_the_sign_in_form(setup: Setup) -> None:
    with console(setup.gw) as client:
        for path in ("/", "/models", "/decisions", "/policies", "/review"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/console/login?next=")
        assert client.post("/policies/validate", data={"source": "x"}).status_code == 401
        assert httpx.get(f"{setup.gw.url}/console").headers["location"] == "/console/"


def test_sign_in_sets_an_http_only_strict_session_cookie(setup: Setup) -> None:
    with console(setup.gw) as client:
        response = sign_in(client, setup.gw.admin_key)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/"
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if c.startswith("pr_console=")
        )
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert {"httponly", "samesite", "max-age", "path"} <= attributes
        assert "samesite=strict" in cookie.lower() and "path=/console" in cookie.lower()
        assert setup.gw.admin_key not in cookie  # the key itself never leaves the form
        page = client.get("/")
        assert page.status_code == 200
        assert "<h1>Overview</h1>" in page.text
        assert f'{setup.dep} <span class="muted">(acme/alpha)</span>' in page.text
        assert "content-security-policy" in page.headers


def test_only_admin_and_compliance_keys_sign_in(setup: Setup) -> None:
    with console(setup.gw) as client:
        assert sign_in(client, setup.gw.keys["apps"]).status_code == 401  # inference only
        assert sign_in(client, "pr-not-a-key").status_code == 401
        assert client.get("/").status_code == 303
        assert sign_in(client, setup.gw.keys["compliance-org"]).status_code == 303


def test_sign_in_without_the_forms_token_is_refused(setup: Setup) -> None:
    with console(setup.gw) as client:
        response = client.post("/login", data={"key": setup.gw.admin_key})
        assert response.status_code == 403
        assert "pr_console=" not in response.headers.get("set-cookie", "")


def test_approving_a_model_needs_this_sessions_csrf_token(
    setup: Setup, admin: httpx.Client
) -> None:
    gw = setup.gw
    model_id = under_review_model(gw)
    page = admin.get("/review")
    assert model_id in page.text
    version = read_version(gw, model_id)
    form = {"decision": "approve", "note": "checked the card", "version": str(version)}
    assert admin.post(f"/review/model/{model_id}", data=form).status_code == 403
    with console(gw) as other:  # another session's token does not fit this one
        sign_in(other, gw.admin_key)
        foreign = csrf_of(other.get("/review"))
    refused = admin.post(f"/review/model/{model_id}", data={**form, "csrf": foreign})
    assert refused.status_code == 403
    assert review_status(gw, model_id) == "under_review"

    done = admin.post(f"/review/model/{model_id}", data={**form, "csrf": csrf_of(page)})
    assert done.status_code == 303, done.text
    assert review_status(gw, model_id) == "approved"
    with session_scope(gw.engine) as session:
        change = list_changes(session=session, entity_id=model_id, limit=1)[0]
    assert change["note"] == "checked the card"
    assert change["actor"].startswith("key:") and change["after"]["review_status"] == "approved"
    assert "checked the card" in admin.get("/review").text
    stale = admin.post(f"/review/model/{model_id}", data={**form, "csrf": csrf_of(page)})
    assert stale.status_code == 409  # the version the form was read at is gone
    huge = {**form, "csrf": csrf_of(page), "version": "9" * 30}
    assert admin.post(f"/review/model/{model_id}", data=huge).status_code == 400


def read_version(gw: RunningGateway, model_id: str) -> int:
    with session_scope(gw.engine) as session:
        return int(read_one(session=session, kind="model", id=model_id)["version"])


def test_compliance_keys_are_read_only(setup: Setup, auditor: httpx.Client) -> None:
    gw = setup.gw
    model_id = under_review_model(gw)
    page = auditor.get("/review")
    assert page.status_code == 200 and "Read-only" in page.text
    token = csrf_of(page)
    form = {"decision": "approve", "csrf": token}
    assert auditor.post(f"/review/model/{model_id}", data=form).status_code == 403
    policy = {"csrf": token, "format": "yaml", "source": "rules: []", "confirm": "yes"}
    assert auditor.post("/policies/preview", data=policy).status_code == 403
    assert auditor.post("/policies/activate", data=policy).status_code == 403
    assert review_status(gw, model_id) == "under_review"
    for path in ("/", "/models", "/deployments", "/organizations", "/policies", "/exposure"):
        assert auditor.get(path).status_code == 200, path


def test_compliance_keys_see_their_own_tenants_decisions_only(
    setup: Setup, auditor: httpx.Client, admin: httpx.Client
) -> None:
    mine = auditor.get("/decisions")
    assert setup.apps_request in mine.text and setup.limited_request not in mine.text
    assert auditor.get("/decisions", params={"tenant": "limited"}).status_code == 403
    assert auditor.get(f"/decisions/{setup.limited_request}").status_code == 404
    assert auditor.get("/exposure", params={"tenant": "limited"}).status_code == 403
    everyone = admin.get("/decisions")
    assert setup.apps_request in everyone.text and setup.limited_request in everyone.text


def test_a_decision_is_found_by_request_id_with_every_candidate(
    setup: Setup, admin: httpx.Client
) -> None:
    found = admin.get("/decisions", params={"request_id": setup.apps_request})
    assert f'data-request-id="{setup.apps_request}"' in found.text
    assert found.text.count("data-request-id=") == 1
    detail = admin.get(f"/decisions/{setup.apps_request}")
    assert detail.status_code == 200
    assert f'data-deployment="{setup.dep}"' in detail.text
    assert admin.get("/decisions", params={"verdict": "denied"}).text.count(setup.apps_request) == 0
    by_route = admin.get("/decisions", params={"route": setup.route, "tenant": "limited"})
    assert setup.limited_request in by_route.text and setup.apps_request not in by_route.text
    assert admin.get("/decisions", params={"since": "not a time"}).status_code == 400
    decided = admin.get("/decisions", params={"rule": "baseline-approved", "route": setup.route})
    assert setup.apps_request in decided.text and setup.limited_request in decided.text
    assert setup.apps_request not in admin.get("/decisions", params={"rule": "no-such"}).text
    one = admin.get("/decisions", params={"route": setup.route, "limit": 1})
    assert one.text.count("data-request-id=") == 1 and setup.limited_request in one.text
    later = admin.get("/decisions", params={"since": "2999-01-01T00:00"})
    assert setup.apps_request not in later.text


def test_a_policy_draft_is_checked_replayed_and_activated_with_confirmation(
    setup: Setup, admin: httpx.Client
) -> None:
    gw = setup.gw
    token = csrf_of(admin.get("/policies"))
    bad = admin.post("/policies/validate", data={"csrf": token, "source": "rules: [oops"})
    assert bad.status_code == 200 and bad.json()["valid"] is False
    assert admin.post("/policies/validate", data={"source": "rules: []"}).status_code == 403
    draft = (
        "rules:\n  - id: console-deny-dep\n    description: test\n"
        f"    deny: {{deployment: [{setup.dep}]}}\n"
    )
    good = admin.post("/policies/validate", data={"csrf": token, "source": draft})
    assert good.json()["valid"] is True and "console-deny-dep" in good.json()["cedar"]

    form = {"csrf": token, "format": "yaml", "source": draft, "name": "console-test"}
    replay = admin.post("/policies/what-if", data=form)
    assert replay.status_code == 200
    assert f'data-request-id="{setup.apps_request}"' in replay.text

    preview = admin.post("/policies/preview", data=form)
    assert preview.status_code == 200 and "console-deny-dep" in preview.text
    before = gw.app.gateway.table.snapshot.policy
    assert admin.post("/policies/activate", data=form).status_code == 400  # not confirmed
    assert admin.post("/policies/activate", data={**form, "confirm": "yes"}).status_code == 303
    active = wait_for(
        lambda: (p := gw.app.gateway.table.snapshot.policy) and p.name == "console-test" and p,
        what="the console's policy to be active",
    )
    assert before is not None and active.version > before.version
    with gw.write() as w:  # put the module's policy back for the other tests
        w.activate_policy(version=before.version)


def test_a_model_page_draws_its_lineage(setup: Setup, admin: httpx.Client) -> None:
    gw = setup.gw
    child = f"acme/{uid('tuned')}"
    with gw.write() as w:
        w.create(
            "model",
            {
                "id": child,
                "name": "Tuned",
                "developer": "acme",
                "license": "Apache-2.0",
                "lineage": [{"relation": "finetune_of", "model": "dragon/beta"}],
                "claim": REPORTED,
            },
        )
    page = admin.get(f"/models/{child}")
    assert page.status_code == 200
    assert '<svg role="img"' in page.text and 'data-relation="finetune_of"' in page.text
    assert 'data-model="dragon/beta"' in page.text
    assert "CN" in page.text.split('id="effective-countries">')[1].split("<")[0]
    listed = admin.get("/models", params={"q": "tuned", "status": "under_review"})
    assert f'data-model="{child}"' in listed.text and 'data-model="acme/alpha"' not in listed.text
    assert admin.get("/models/acme/none-such").status_code == 404


def test_signing_out_ends_the_session(setup: Setup) -> None:
    with console(setup.gw) as client:
        sign_in(client, setup.gw.admin_key)
        token = client.cookies["pr_console"]
        page = client.get("/")
        out = client.post("/logout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
    with console(setup.gw) as replay:  # the old cookie, sent again, is refused
        response = replay.get("/", headers={"cookie": f"pr_console={token}"})
        assert response.status_code == 303


def test_a_forged_session_cookie_is_refused(setup: Setup) -> None:
    with console(setup.gw) as client:
        sign_in(client, setup.gw.keys["no-inference"])
        payload, signature = client.cookies["pr_console"].split(".")
    import base64
    import json

    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["k"] = "compliance-org"  # claim another key with the same signature
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    with console(setup.gw) as client:
        response = client.get("/", headers={"cookie": f"pr_console={forged}.{signature}"})
        assert response.status_code == 303


def test_sessions_expire(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(console_session_ttl_s=1.0)
    with console(gw) as client:
        sign_in(client, gw.admin_key)
        token = client.cookies["pr_console"]

    def status() -> int:
        with console(gw) as fresh:
            return fresh.get("/", headers={"cookie": f"pr_console={token}"}).status_code

    assert status() == 200
    wait_for(lambda: status() == 303, timeout_s=10.0, what="the session to expire")


def test_disabling_the_key_ends_its_sessions(setup: Setup) -> None:
    gw = setup.gw
    with gw.write() as w:
        _, raw = w.create_api_key(id=uid("console-key"), tenant="apps", scopes=["admin"])
    with console(gw) as client:
        sign_in(client, raw)
        assert client.get("/").status_code == 200
        key_id = next(
            k
            for k in gw.app.gateway.table.snapshot.keys_by_hash.values()
            if k.id.startswith("console-key")
        ).id
        with gw.write() as w:
            w.update("api_key", key_id, {"enabled": False}, expected_version=None)
        assert client.get("/").status_code == 303


def test_an_expired_key_neither_signs_in_nor_keeps_its_session(setup: Setup) -> None:
    """The console decides whether a key is usable as /v1 and /admin do (router.keys): before,
    it read only ``enabled`` and scopes, so an expired admin key still signed in and wrote."""
    gw = setup.gw
    past = datetime.now(UTC) - timedelta(minutes=1)
    soon = datetime.now(UTC) + timedelta(seconds=3)
    with gw.write() as w:
        _, expired = w.create_api_key(
            id=uid("console-expired"), tenant="apps", scopes=["admin"], expires_at=past
        )
        _, expiring = w.create_api_key(
            id=uid("console-expiring"), tenant="apps", scopes=["admin"], expires_at=soon
        )
    with console(gw) as client:
        refused = sign_in(client, expired)
        assert refused.status_code == 401 and "expired" in refused.text
    with console(gw) as client:
        assert sign_in(client, expiring).status_code == 303
        assert client.get("/").status_code == 200
        wait_for(lambda: client.get("/").status_code == 303, timeout_s=15, what="the expiry")
        assert datetime.now(UTC) >= soon


def test_sign_in_goes_back_only_to_a_console_page(setup: Setup) -> None:
    with console(setup.gw) as client:
        form = client.get("/login", params={"next": "//evil.example/x"})
        assert 'value="//evil.example/x"' not in form.text
        data = {"csrf": csrf_of(form), "key": setup.gw.admin_key, "next": "//evil.example/x"}
        assert client.post("/login", data=data).headers["location"] == "/console/"


def test_explain_and_policy_tests_use_the_live_engine(
    setup: Setup, admin: httpx.Client, auditor: httpx.Client
) -> None:
    page = admin.get("/explain", params={"tenant": "apps", "model": setup.route})
    assert page.status_code == 200
    assert f'data-deployment="{setup.dep}"' in page.text
    assert admin.get("/explain", params={"tenant": "apps", "model": "nope"}).status_code == 404
    refused = auditor.get("/explain", params={"tenant": "limited", "model": setup.route})
    assert refused.status_code == 403

    token = csrf_of(admin.get("/policies"))
    draft = f"rules:\n  - id: console-no-dep\n    deny: {{deployment: [{setup.dep}]}}\n"
    tests = (
        "tests:\n"
        f"  - name: denied by the draft\n    given: {{tenant: apps, deployment: {setup.dep}}}\n"
        "    expect: deny\n    rule: console-no-dep\n"
        f"  - name: wrongly expected\n    given: {{tenant: apps, deployment: {setup.dep}}}\n"
        "    expect: allow\n"
    )
    form = {"csrf": token, "format": "yaml", "source": draft, "tests": tests}
    report = admin.post("/policies/tests", data=form)
    assert report.status_code == 200, report.text
    assert report.text.count('data-passed="yes"') == 1
    assert report.text.count('data-passed="no"') == 1
    assert admin.post("/policies/tests", data={**form, "tests": "tests: ["}).status_code == 400


def test_a_receipt_is_verified_and_tied_to_its_decision(setup: Setup, admin: httpx.Client) -> None:
    page = admin.get("/receipt", params={"receipt": setup.apps_receipt})
    assert page.status_code == 200
    assert "Valid:" in page.text and setup.apps_request in page.text
    payload, *rest = setup.apps_receipt.split(".")
    altered = ".".join([payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), *rest])
    assert "Not valid" in admin.get("/receipt", params={"receipt": altered}).text


def test_the_exposure_page_shows_the_reports_numbers(setup: Setup, admin: httpx.Client) -> None:
    api = setup.gw.http(setup.gw.admin_key)
    with api:
        report = api.get("/admin/reports/exposure", params={"tenant": "apps"}).json()
    page = admin.get("/exposure", params={"tenant": "apps"})
    shown = page.text.split('id="summary-requests">')[1].split("<")[0]
    assert int(shown) == report["requests"] >= 1


def test_a_deployment_is_blocked_from_the_review_queue(
    setup: Setup, admin: httpx.Client, up: FakeUpstream
) -> None:
    gw = setup.gw
    dep = uid("console-review-dep")
    with gw.write() as w:
        w.create("deployment", deployment(dep, up.base_url, review_status="under_review"))
    page = admin.get("/review")
    assert f'data-entity="{dep}"' in page.text
    form = {"csrf": csrf_of(page), "decision": "block", "note": "operator unknown"}
    assert admin.post(f"/review/deployment/{dep}", data=form).status_code == 303
    with session_scope(gw.engine) as session:
        assert read_one(session=session, kind="deployment", id=dep)["review_status"] == "blocked"
    assert f'data-entity="{dep}"' not in admin.get("/review").text


def test_registry_pages_filter(setup: Setup, admin: httpx.Client) -> None:
    found = admin.get("/deployments", params={"q": setup.dep, "hosting": "private_cloud"})
    assert f'id="dep-{setup.dep}"' in found.text
    assert 'id="deployment-count">1 deployment<' in found.text
    none = admin.get("/deployments", params={"q": setup.dep, "country": "DE"})
    assert f'id="dep-{setup.dep}"' not in none.text
    orgs = admin.get("/organizations", params={"q": "dragon"})
    assert 'id="org-dragon"' in orgs.text and 'id="org-acme"' not in orgs.text


def test_a_saved_version_loads_into_the_editor(setup: Setup, admin: httpx.Client) -> None:
    with session_scope(setup.gw.engine) as session:
        oldest = list_policies(session=session)[-1]
    page = admin.get("/policies", params={"load": oldest["version"]})
    editor = page.text.split('id="source"')[1].split("</textarea>")[0]
    assert oldest["source"].splitlines()[0] in editor
    assert admin.get("/policies", params={"load": 99999}).status_code == 404

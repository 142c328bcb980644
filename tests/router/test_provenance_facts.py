"""Issue 19 through the real gateway: policies on the structured provenance facts (listings,
control chain, first-party services, training hardware, behavioural evidence), lineage-aware
and failing closed, and the provenance profile (admin API and CLI).

The world: ``hf`` (CN) controls ``dsk`` (CN), which developed ``dsk/v4`` (trained in part on
Huawei hardware; a topic filtered on its first-party API only, another on the weights). ``hf``
is on the US Entity List. ``acme`` (US) fine-tuned it. ``dsk/v4`` is served twice: by ``hf``
in CN (first-party: ``hf`` is in ``dsk``'s control chain) and by ``uscloud`` in the US. Each
deployment has its own fake upstream, so a test counts what reached which one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from router.cli import app
from tests.fakes import FakeUpstream
from tests.router.conftest import REPORTED, RunningGateway, deployment, uid

PROMPT = [{"role": "user", "content": "Say hello."}]


@dataclass
class World:
    gw: RunningGateway
    first_party: FakeUpstream  # dsk/v4 served by hf in CN
    us_cloud: FakeUpstream  # dsk/v4 served by uscloud in the US
    finetune: FakeUpstream  # acme's fine-tune of dsk/v4
    fp_id: str
    us_id: str
    ft_id: str
    route: str  # [first-party, us-cloud], in that order

    def reset(self) -> None:
        for upstream in (self.first_party, self.us_cloud, self.finetune):
            upstream.reset()

    def calls(self) -> tuple[int, int, int]:
        return self.first_party.calls, self.us_cloud.calls, self.finetune.calls


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> Iterator[World]:
    gw = gateway_factory(backend=request.param)
    with (
        FakeUpstream(reply="fp") as fp,
        FakeUpstream(reply="us") as us,
        FakeUpstream(reply="ft") as ft,
    ):
        yield _populate(gw, fp, us, ft)


def _populate(gw: RunningGateway, fp: FakeUpstream, us: FakeUpstream, ft: FakeUpstream) -> World:
    fp_id, us_id, ft_id, route = uid("dsk-api"), uid("dsk-us"), uid("ft"), uid("route")
    with gw.write() as w:
        entity_list = {"list": "us-entity-list", "since": "2025-01-15", "source": "https://x.test"}
        w.create("organization", _org("hf", "CN", listings=[entity_list]))
        w.create("organization", _org("dsk", "CN", parent="hf"))
        w.create("organization", _org("uscloud", "US"))
        w.create(
            "model",
            _model(
                "dsk/v4",
                "dsk",
                training_hardware=[{"vendor": "Huawei Technologies"}],
                behavioral_restrictions=[
                    {"topic": "Topic A", "observed_on": fp_id, "evidence_url": "https://e.test/a"},
                    {"topic": "topic-b", "observed_on": "weights", "observed_at": "2026-05-01"},
                ],
            ),
        )
        w.create(
            "model",
            _model(
                "acme/v4-ft",
                "acme",
                lineage=[{"relation": "finetune_of", "model": "dsk/v4"}],
                training_hardware=[{"accelerator": "H100"}],  # the fine-tuning's own
            ),
        )
        w.create("model", _model("acme/plain", "acme"))  # training hardware not stated
        cn = {"location_country": "CN", "location_region": "cn-north"}
        w.create("deployment", deployment(fp_id, fp.base_url, model="dsk/v4", operator="hf", **cn))
        w.create("deployment", deployment(us_id, us.base_url, model="dsk/v4", operator="uscloud"))
        w.create("deployment", deployment(ft_id, ft.base_url, model="acme/v4-ft", operator="acme"))
        w.create("route", {"name": route, "candidates": [fp_id, us_id]})
    return World(gw, fp, us, ft, fp_id, us_id, ft_id, route)


def _org(org_id: str, country: str, **fields: Any) -> dict[str, Any]:
    return {"id": org_id, "name": org_id, "hq_country": country, "claim": REPORTED, **fields}


def _model(model_id: str, developer: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "developer": developer,
        "license": "MIT",
        "review_status": "approved",
        "claim": REPORTED,
        **fields,
    }


def activate(world: World, rules: str) -> httpx.Response:
    with world.gw.http(world.gw.admin_key) as http:
        response = http.post(
            "/admin/policies",
            json={"name": uid("p"), "format": "yaml", "source": rules, "activate": True},
        )
    world.reset()
    return response


def ask(world: World, model: str, key: str | None = None) -> str:
    """The reply's text (which upstream answered), or the 403's message prefixed ``denied:``."""
    try:
        reply = world.gw.openai(key).chat.completions.create(model=model, messages=PROMPT)
    except openai.PermissionDeniedError as error:
        body = error.body
        assert isinstance(body, dict)
        return f"denied: {body['message']}"
    return str(reply.choices[0].message.content)


def test_deny_the_first_party_api_but_allow_the_weights_elsewhere(world: World) -> None:
    """Government restrictions target DeepSeek's own API, not the weights: the route's first
    candidate (first-party, CN) never sees the request; the US operator answers."""
    rules = (
        "rules:\n  - id: no-cn-first-party\n    deny: {first_party: true, operator_country: [CN]}\n"
    )
    assert activate(world, rules).status_code == 201
    assert ask(world, world.route) == "us"
    assert world.calls() == (0, 1, 0)


def test_only_first_party_services_operated_outside_cn(world: World) -> None:
    rules = (
        "rules:\n"
        "  - id: first-party-only\n    allow_only: {first_party: true}\n"
        "  - id: not-operated-in-cn\n    deny: {operator_country: [CN]}\n"
    )
    assert activate(world, rules).status_code == 201
    message = ask(world, world.route)
    assert message.startswith("denied:") and "not-operated-in-cn" in message
    assert "first-party-only" in message  # the US operator is not DeepSeek's group
    assert world.calls() == (0, 0, 0)


def test_developer_listed_on_a_list_via_parent_and_lineage(world: World) -> None:
    """hf is listed; dsk is controlled by hf; acme's fine-tune derives from dsk/v4: all three
    deployments are denied, although acme itself is listed nowhere."""
    rules = "rules:\n  - id: no-entity-list\n    deny: {developer_listed_on: [Entity List]}\n"
    assert activate(world, rules).status_code == 201
    for model in (world.route, "acme/v4-ft"):
        message = ask(world, model)
        assert message.startswith("denied:") and "no-entity-list" in message
        assert "us-entity-list" in message  # the reason quotes what the rule saw
    assert world.calls() == (0, 0, 0)


def test_developer_controlled_by_an_organization_along_lineage(world: World) -> None:
    rules = "rules:\n  - id: not-hf-controlled\n    deny: {developer_controlled_by: [HF]}\n"
    assert activate(world, rules).status_code == 201
    assert ask(world, "acme/v4-ft").startswith("denied:")  # its base's developer's parent
    assert world.calls() == (0, 0, 0)
    other = "rules:\n  - id: not-uscloud\n    deny: {developer_controlled_by: [uscloud]}\n"
    assert activate(world, other).status_code == 201
    assert ask(world, "acme/v4-ft") == "ft"


def test_training_hardware_vendor_for_one_tenant_including_lineage(world: World) -> None:
    rules = (
        "rules:\n  - id: limited-no-huawei-trained\n"
        "    deny: {training_hardware_vendor_any_ancestor: [huawei], tenant: [limited]}\n"
    )
    assert activate(world, rules).status_code == 201
    limited = world.gw.keys["limited"]
    assert ask(world, "acme/v4-ft", limited).startswith("denied:")
    assert world.calls() == (0, 0, 0)
    assert ask(world, "acme/v4-ft") == "ft"  # tenant apps is not concerned
    own_only = "rules:\n  - id: own-huawei\n    deny: {training_hardware_vendor: [huawei]}\n"
    assert activate(world, own_only).status_code == 201
    assert ask(world, "acme/v4-ft") == "ft"  # the fine-tune's own hardware: nvidia...
    assert ask(world, world.route).startswith("denied:")  # ...dsk/v4's own: huawei


def test_unknown_training_hardware_fails_closed(world: World) -> None:
    """acme/plain states no training hardware: it never meets a requirement on it, and a deny
    on it fires (the reason says the fact is not known)."""
    gw = world.gw
    plain = uid("plain")
    with gw.write() as w:
        w.create("deployment", deployment(plain, world.finetune.base_url, model="acme/plain"))
    rules = (
        "rules:\n  - id: nvidia-trained-only\n"
        "    allow_only: {training_hardware_vendor: [nvidia]}\n"
    )
    assert activate(world, rules).status_code == 201
    assert ask(world, "acme/plain").startswith("denied:")
    deny = "rules:\n  - id: no-huawei-trained\n    deny: {training_hardware_vendor: [huawei]}\n"
    assert activate(world, deny).status_code == 201
    message = ask(world, "acme/plain")
    assert message.startswith("denied:") and "not all known" in message
    assert world.calls() == (0, 0, 0)


def test_behavioural_restrictions_on_weights_and_on_one_service(world: World) -> None:
    """Topic A was observed on the first-party API only: it concerns that deployment, not the
    weights served elsewhere. Topic B was observed on the weights: it follows them everywhere,
    fine-tunes included."""
    on_service = "rules:\n  - id: no-topic-a\n    deny: {restricted_topic: [topic a]}\n"
    assert activate(world, on_service).status_code == 201
    assert ask(world, world.route) == "us"
    assert ask(world, "acme/v4-ft") == "ft"
    assert world.calls() == (0, 1, 1)
    on_weights = "rules:\n  - id: no-topic-b\n    deny: {restricted_topic_on_weights: [topic-b]}\n"
    assert activate(world, on_weights).status_code == 201
    assert ask(world, world.route).startswith("denied:")
    assert ask(world, "acme/v4-ft").startswith("denied:")
    assert world.calls() == (0, 0, 0)


def test_rules_naming_values_that_cannot_match_are_refused_or_flagged(world: World) -> None:
    admin = world.gw.http(world.gw.admin_key)
    with admin:
        refused = admin.post(
            "/admin/policies/validate",
            json={"source": "rules: [{id: r, deny: {developer_listed_on: [naughty-list]}}]"},
        )
        tag = admin.post(
            "/admin/policies/validate",
            json={"source": "rules: [{id: r, deny: {jurisdiction_tag: [us-entity-list]}}]"},
        )
        nobody = admin.post(
            "/admin/policies/validate",
            json={"source": "rules: [{id: r, deny: {operator_listed_on: [uk-sanctions]}}]"},
        )
    assert refused.status_code == 400 and "us-entity-list" in refused.text  # lists valid ones
    assert tag.status_code == 400 and "developer_listed_on" in tag.text
    assert nobody.status_code == 200, nobody.text
    assert any("matches nothing" in w for w in nobody.json()["warnings"])


def test_explain_shows_the_new_facts(world: World) -> None:
    with world.gw.http(world.gw.admin_key) as http:
        body = http.post("/admin/explain", json={"tenant": "apps", "model": world.route}).json()
    by_id = {c["deployment_id"]: c["provenance"] for c in body["candidates"]}
    assert by_id[world.fp_id]["first_party"] is True
    assert by_id[world.us_id]["first_party"] is False
    assert by_id[world.us_id]["developer_listings"] == ["us-entity-list"]
    assert by_id[world.us_id]["ancestor_training_hardware_vendors"] == ["huawei"]
    assert by_id[world.fp_id]["restricted_topics"] == ["topic-a", "topic-b"]
    assert by_id[world.us_id]["restricted_topics"] == ["topic-b"]


# --- the provenance profile ------------------------------------------------------------------


def test_profile_api_of_a_model_lists_every_dimension_with_sources(world: World) -> None:
    with world.gw.http(world.gw.keys["no-inference"]) as http:  # a compliance key may read
        response = http.get("/admin/profile/acme/v4-ft")
    assert response.status_code == 200, response.text
    profile = response.json()
    assert (profile["kind"], profile["model"]) == ("model", "acme/v4-ft")
    assert profile["deployments"] == [world.ft_id]
    rows = {row["dimension"]: row["facts"] for row in profile["rows"]}
    assert list(rows) == [
        "developer_jurisdiction",
        "license_terms",
        "training",
        "serving",
        "data_handling",
        "governance",
        "behavioral_evidence",
        "evidence",
    ]
    hardware = {
        (f["entity"], json.dumps(f["value"])): f
        for f in rows["training"]
        if f["fact"] == "training_hardware"
    }
    along = hardware[("model dsk/v4", json.dumps([{"vendor": "huawei"}]))]
    assert (along["confidence"], along["source"]) == ("reported", REPORTED["source"])
    nvidia_h100 = json.dumps([{"vendor": "nvidia", "accelerator": "h100"}])
    own = hardware[("model acme/v4-ft", nvidia_h100)]
    assert own["confidence"] == "reported"
    governance = {(f["entity"], f["fact"]): f["value"] for f in rows["governance"]}
    assert governance[("organization dsk", "control_chain")] == ["dsk", "hf"]
    (listing,) = governance[("organization hf", "listings")]
    assert (listing["list"], listing["since"], listing["source"]) == (
        "us-entity-list",
        "2025-01-15",
        "https://x.test",
    )
    assert "Entity List" in listing["name"] and listing["url"].startswith("https://")
    countries = {(f["entity"], f["fact"]): f["value"] for f in rows["developer_jurisdiction"]}
    assert (
        countries[("organization dsk", "hq_country")] == "CN"
    )  # lineage: the base's developer is shown
    assert "score" not in json.dumps(profile)


def test_profile_api_of_a_deployment_and_its_errors(world: World) -> None:
    with world.gw.http(world.gw.admin_key) as http:
        served = http.get(f"/admin/profile/{world.fp_id}").json()
        missing = http.get("/admin/profile/nobody/nothing")
    serving = {f["fact"]: f["value"] for f in served["rows"][3]["facts"]}
    assert (served["kind"], serving["location_country"], serving["first_party"]) == (
        "deployment",
        "CN",
        True,
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "no model or deployment is called 'nobody/nothing'",
        "type": "invalid_request_error",
        "param": "subject",
        "code": "not_found",
    }
    with world.gw.http(world.gw.keys["apps"]) as http:  # an inference key may not
        assert http.get(f"/admin/profile/{world.fp_id}").status_code == 403


def test_profile_cli_json_and_table(world: World) -> None:
    url = world.gw.engine.url.render_as_string(hide_password=False)
    as_json = CliRunner().invoke(app, ["profile", world.us_id, "--json", "--database-url", url])
    assert as_json.exit_code == 0, as_json.output
    profile = json.loads(as_json.output)
    assert profile["subject"] == world.us_id and profile["model"] == "dsk/v4"
    table = CliRunner().invoke(
        app, ["profile", world.us_id, "--database-url", url], env={"COLUMNS": "250"}
    )
    assert table.exit_code == 0, table.output
    for text in ("training", "governance", "us-entity-list", "huawei", "uscloud", "reported"):
        assert text in table.output
    missing = CliRunner().invoke(app, ["profile", "nobody/nothing", "--database-url", url])
    assert missing.exit_code == 1 and "no model or deployment" in missing.output

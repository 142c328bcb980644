"""``registry.gitops``: apply a registry file, export the registry as one, on SQLite and PostgreSQL.

Every test runs on both databases through the ``engine`` fixture (``tests/conftest.py``);
``registry_state`` (``tests/registry/conftest.py``) captures everything a write could touch,
so a failed apply can be shown to have changed nothing at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from registry.db import make_engine, migrate, session_scope
from registry.gitops import ApplyResult, apply, describe_error, export
from registry.gitops_schema import RegistryFileError, parse_document
from registry.keys import hash_key, key_prefix
from registry.service import KINDS, RegistryError, find_key, read_all, read_one
from router.cli_export import register as register_export
from router.cli_gitops import register

StateOf = Callable[[Engine], dict[str, Any]]

RAW_KEY = "pr-gitops-test-key-0123456789abcdefghijkl"
ENV = {"CI_BOT_KEY": RAW_KEY}

# Children are listed before their parents on purpose: apply must order them.
BASE = textwrap.dedent(
    """\
    apiVersion: provenance-router/v1
    organizations:
      - id: acme-labs
        name: Acme Labs
        parent: acme
        hq_country: de
      - id: acme
        name: Acme AG
        aliases: [ACME, Acme]
        hq_country: DE
        jurisdiction_tags: [eu]
        claim: {source: "https://acme.example", retrieved_at: 2026-11-25, confidence: reported}
    licenses:
      - id: LicenseRef-Acme
        name: Acme Community License
        commercial_use: conditional
        user_threshold: 700000000
        derivatives_inherit: true
      - id: mit
        name: MIT License
        commercial_use: yes
    models:
      - id: acme/acme-7b-instruct
        name: acme-7b-instruct
        developer: acme-labs
        license: MIT
        release_date: 2025-01-20
        lineage:
          - {relation: finetune_of, model: acme/acme-7b}
        claims:
          license: {source: "https://acme.example/card", confidence: reported}
      - id: acme/acme-7b
        name: acme-7b
        developer: acme
        license: LicenseRef-Acme
        review_status: approved
    deployments:
      - id: acme-fra
        model: acme/acme-7b-instruct
        endpoint_url: http://127.0.0.1:9/v1
        secret_ref: ACME_UPSTREAM_KEY
        operator: acme
        hosting: on_prem
        location: {country: DE, region: eu-central}
        hardware: {vendor: nvidia, accelerator: H100, count: 8}
        data_handling: {retention_days: 0, zero_data_retention: true, trains_on_inputs: false}
        timeout_s: 30
        claims:
          location.country: {source: "contract 42", confidence: verified}
    routes:
      - name: chat-default
        candidates: [acme-fra, acme/acme-7b]
    tenants:
      - id: retail
        name: Retail banking
        attributes: {business_unit: retail}
    """
)
KEYS = textwrap.dedent(
    """\
    api_keys:
      - id: ci-bot
        tenant: retail
        scopes: [inference]
        secret_ref: CI_BOT_KEY
    """
)
FULL = BASE + KEYS


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def entities(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every entity, without bookkeeping (versions, timestamps)."""
    skip = {"version", "created_at", "updated_at"}
    with session_scope(engine) as session:
        return {
            kind: [{k: v for k, v in row.items() if k not in skip} for row in rows]
            for kind in KINDS
            if (rows := read_all(session=session, kind=kind)) is not None
        }


def one(engine: Engine, kind: str, id: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind=kind, id=id)


def labels(result: ApplyResult, op: str) -> list[str]:
    return [f"{c.kind}:{c.id}" for c in result.changes if c.op == op]


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[Engine]:
    """A second, empty registry (SQLite) to apply exports into."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- apply


def test_apply_creates_in_dependency_order_and_flattens(engine: Engine) -> None:
    result = apply(engine, FULL, actor="test", env=ENV)

    assert result.version == 1 and not result.updates and not result.deletes
    assert labels(result, "create") == [
        "organization:acme",
        "organization:acme-labs",
        "license:LicenseRef-Acme",
        "license:MIT",
        "model:acme/acme-7b",
        "model:acme/acme-7b-instruct",
        "deployment:acme-fra",
        "route:chat-default",
        "tenant:retail",
        "api_key:ci-bot",
    ]
    deployment = one(engine, "deployment", "acme-fra")
    assert deployment["location_country"] == "DE"
    assert deployment["location_eea"] is True  # derived by the service
    assert (deployment["hardware_vendor"], deployment["accelerator_count"]) == ("nvidia", 8)
    assert deployment["claims"]["location_country"]["confidence"] == "verified"
    assert one(engine, "model", "acme/acme-7b-instruct")["lineage"] == [
        {"relation": "finetune_of", "model": "acme/acme-7b"}
    ]
    assert one(engine, "organization", "acme-labs")["hq_country"] == "DE"
    assert one(engine, "license", "MIT")["commercial_use"] == "yes"  # YAML 1.2: yes is a string


def test_same_file_twice_changes_nothing(engine: Engine, registry_state: StateOf) -> None:
    apply(engine, FULL, actor="test", env=ENV)
    before = registry_state(engine)

    again = apply(engine, FULL, actor="test", env=ENV)

    assert again.changes == () and again.version is None
    assert registry_state(engine) == before


def test_update_touches_only_the_listed_fields(engine: Engine) -> None:
    apply(engine, BASE, actor="test")
    amend = """\
apiVersion: provenance-router/v1
models:
  - id: acme/acme-7b-instruct
    review_status: approved
deployments:
  - id: acme-fra
    location: {country: FR}
"""
    result = apply(engine, amend, actor="test")

    assert result.version == 2 and not result.creates
    by_id = {c.id: c for c in result.updates}
    assert [(f.field, f.old, f.new) for f in by_id["acme/acme-7b-instruct"].fields] == [
        ("review_status", "under_review", "approved")
    ]
    assert [(f.field, f.old, f.new) for f in by_id["acme-fra"].fields] == [
        ("location.country", "DE", "FR")
    ]
    model = one(engine, "model", "acme/acme-7b-instruct")
    assert model["license"] == "MIT" and model["lineage"]  # untouched
    assert one(engine, "deployment", "acme-fra")["location_region"] == "eu-central"


def test_equivalent_spellings_are_no_change(engine: Engine) -> None:
    apply(engine, BASE, actor="test")
    respelled = (
        BASE.replace("hq_country: DE", "hq_country: de")
        .replace("aliases: [ACME, Acme]", "aliases: [Acme, ACME, Acme]")
        .replace("timeout_s: 30", "timeout_s: 30.0")
        .replace("license: MIT", "license: mit")
    )
    assert respelled != BASE

    assert apply(engine, respelled, actor="test").changes == ()


def test_dry_run_reports_the_plan_and_changes_nothing(
    engine: Engine, registry_state: StateOf
) -> None:
    apply(engine, BASE, actor="test")
    before = registry_state(engine)
    changed = BASE.replace("name: Acme AG", "name: Acme SE") + KEYS

    result = apply(engine, changed, dry_run=True, actor="test", env=ENV)

    assert result.dry_run and result.version is None
    assert labels(result, "update") == ["organization:acme"]
    assert labels(result, "create") == ["api_key:ci-bot"]
    assert registry_state(engine) == before


def test_dry_run_reports_what_the_service_would_refuse(
    engine: Engine, registry_state: StateOf
) -> None:
    before = registry_state(engine)
    dangling = BASE.replace("candidates: [acme-fra, acme/acme-7b]", "candidates: [nowhere]")

    with pytest.raises(RegistryError, match="nowhere"):
        apply(engine, dangling, dry_run=True, actor="test")

    assert registry_state(engine) == before


def test_prune_deletes_what_the_file_no_longer_lists(engine: Engine) -> None:
    apply(engine, FULL, actor="test", env=ENV)
    smaller = textwrap.dedent(
        """\
        apiVersion: provenance-router/v1
        deployments: []
        routes: []
        models:
          - id: acme/acme-7b
        """
    )
    result = apply(engine, smaller, prune=True, actor="test")

    assert labels(result, "delete") == [
        "route:chat-default",
        "deployment:acme-fra",
        "model:acme/acme-7b-instruct",
    ]
    assert result.version == 2
    state = entities(engine)
    assert [m["id"] for m in state["model"]] == ["acme/acme-7b"]
    # Sections absent from the file are not pruned; API keys only when listed.
    assert [t["id"] for t in state["tenant"]] == ["retail"]
    assert [k["id"] for k in state["api_key"]] == ["ci-bot"]
    assert len(state["organization"]) == 2


def test_prune_deletes_lineage_children_before_parents(engine: Engine) -> None:
    apply(engine, BASE, actor="test")
    only_orgs_and_licenses = (
        "apiVersion: provenance-router/v1\ndeployments: []\nroutes: []\nmodels: []\n"
    )

    result = apply(engine, only_orgs_and_licenses, prune=True, actor="test")

    assert labels(result, "delete")[-2:] == ["model:acme/acme-7b-instruct", "model:acme/acme-7b"]
    assert entities(engine)["model"] == []


def test_prune_of_api_keys_only_when_their_section_is_listed(engine: Engine) -> None:
    apply(engine, FULL, actor="test", env=ENV)

    result = apply(engine, BASE + "api_keys: []\n", prune=True, actor="test")

    assert labels(result, "delete") == ["api_key:ci-bot"]
    assert entities(engine)["api_key"] == []


def test_prune_refuses_to_delete_what_a_kept_entity_uses(
    engine: Engine, registry_state: StateOf
) -> None:
    apply(engine, BASE, actor="test")
    before = registry_state(engine)

    with pytest.raises(RegistryError) as raised:
        apply(engine, "apiVersion: provenance-router/v1\nlicenses: []\n", prune=True, actor="t")

    assert "still referenced" in describe_error(raised.value)
    assert registry_state(engine) == before


# --------------------------------------------------------------------------- failing applies


def _bad_country_on_third_org(text: str) -> str:
    third = "  - id: acme-third\n    name: Third\n    hq_country: XX\n"
    return text.replace("licenses:\n", third + "licenses:\n", 1)


def _parent_cycle(text: str) -> str:
    return text.replace("    hq_country: DE\n", "    parent: acme-labs\n    hq_country: DE\n", 1)


def _lineage_cycle(text: str) -> str:
    edge = "    lineage: [{relation: merge_of, model: acme/acme-7b-instruct}]\n"
    return text.replace("    review_status: approved\n", "    review_status: approved\n" + edge)


FAILURES: dict[str, tuple[Callable[[str], str], str, str | None]] = {
    # case: (how to break FULL, text the error must hold, text on the line it must name)
    "bad-country-on-3rd-entity": (_bad_country_on_third_org, "not an ISO 3166-1", "XX"),
    "dangling-reference": (
        lambda t: t.replace("[acme-fra, acme/acme-7b]", "[acme-fra, gone]"),
        "no deployment or model 'gone'",
        "[acme-fra, gone]",
    ),
    "eea-contradiction-found-by-the-service": (
        lambda t: t.replace("region: eu-central}", "region: eu-central, eea: false}"),
        "contradicts location_country",
        "eea: false",
    ),
    "lineage-cycle": (_lineage_cycle, "would form a cycle", "merge_of"),
    "organization-parent-cycle": (_parent_cycle, "would form a cycle", "parent: acme-labs"),
    "duplicate-id": (
        lambda t: t + "  - id: ci-bot\n    tenant: retail\n    scopes: [admin]\n",
        "duplicate id",
        "- id: ci-bot",
    ),
    "malformed-yaml": (
        lambda t: t.replace("name: Retail banking", "name: [Retail banking"),
        "malformed YAML",
        None,
    ),
    "unknown-field": (
        lambda t: t.replace("    timeout_s: 30\n", "    timeout_s: 30\n    timeout_ms: 30000\n"),
        "timeout_ms: unknown field",
        "timeout_ms",
    ),
    "unknown-nested-field": (
        lambda t: t.replace("count: 8}", "count: 8, watts: 700}"),
        "hardware.watts: unknown field",
        "watts",
    ),
    "missing-secret-env-var": (
        lambda t: t.replace("secret_ref: CI_BOT_KEY", "secret_ref: NOT_SET_ANYWHERE"),
        "environment variable NOT_SET_ANYWHERE is not set",
        "NOT_SET_ANYWHERE",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failing_apply_changes_nothing(engine: Engine, registry_state: StateOf, case: str) -> None:
    apply(engine, BASE, actor="test")  # an existing registry the bad file would change
    before = registry_state(engine)
    make_bad, expected, needle = FAILURES[case]
    bad = make_bad(FULL.replace("name: Acme AG", "name: Acme SE"))  # an update, too

    with pytest.raises(RegistryError) as raised:
        apply(engine, bad, actor="test", env=ENV)

    message = describe_error(raised.value)
    assert expected in message
    if needle is not None:  # the line of the needle's last occurrence is named
        line = max(i for i, text in enumerate(bad.splitlines(), 1) if needle in text)
        assert f"line {line}:" in message, message
    assert registry_state(engine) == before


def test_malformed_yaml_names_line_and_column() -> None:
    text = "apiVersion: provenance-router/v1\norganizations:\n  - id: a\n    name: [x\n"

    with pytest.raises(RegistryFileError) as raised:
        parse_document(text)

    assert "line 5, column 1: malformed YAML" in raised.value.message


def test_duplicate_mapping_key_is_an_error() -> None:
    text = "apiVersion: provenance-router/v1\ntenants:\n  - id: a\n    name: x\n    name: y\n"

    with pytest.raises(RegistryFileError, match=r"line 5, column 5.*duplicate key 'name'"):
        parse_document(text)


def test_every_problem_is_reported_at_once() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: provenance-router/v2
        organisations: []
        tenants:
          - id: a
            colour: red
          - name: no-id
          - just-a-string
        """
    )
    with pytest.raises(RegistryFileError) as raised:
        parse_document(text)

    assert raised.value.problems == (
        "line 1: apiVersion must be 'provenance-router/v1', got 'provenance-router/v2'",
        "line 2: unknown section 'organisations' (known: organizations, licenses, models, "
        "deployments, routes, tenants, api_keys)",
        "line 5: tenants[a].colour: unknown field",
        "line 6: tenants[1]: required field 'id' is missing",
        "line 3: tenants[2]: expected a mapping",
    )


def test_yaml_1_1_booleans_stay_strings() -> None:
    text = (
        "apiVersion: provenance-router/v1\norganizations:\n  - {id: nb, name: N, hq_country: NO}\n"
    )

    (entry,) = parse_document(text).of("organization")

    assert entry.values["hq_country"] == "NO"


def test_cycle_through_the_stored_registry_is_refused(
    engine: Engine, registry_state: StateOf
) -> None:
    apply(engine, BASE, actor="test")
    before = registry_state(engine)
    closing = textwrap.dedent(
        """\
        apiVersion: provenance-router/v1
        models:
          - id: acme/acme-7b
            lineage: [{relation: finetune_of, model: acme/acme-7b-instruct}]
        """
    )
    with pytest.raises(RegistryFileError, match=re.escape("line 4: models[acme/acme-7b].lineage")):
        apply(engine, closing, actor="test")
    assert registry_state(engine) == before


def test_reordering_lineage_through_an_update_is_ordered_correctly(engine: Engine) -> None:
    """Reverse a parent/child pair in one apply: the new parent must be updated first."""
    apply(engine, BASE, actor="test")
    reversed_lineage = textwrap.dedent(
        """\
        apiVersion: provenance-router/v1
        models:
          - id: acme/acme-7b
            lineage: [{relation: quantized_from, model: acme/acme-7b-instruct}]
          - id: acme/acme-7b-instruct
            lineage: []
        """
    )
    result = apply(engine, reversed_lineage, actor="test")

    assert labels(result, "update") == ["model:acme/acme-7b-instruct", "model:acme/acme-7b"]
    assert one(engine, "model", "acme/acme-7b")["lineage"][0]["model"] == "acme/acme-7b-instruct"


# --------------------------------------------------------------------------- api keys


def test_key_is_created_from_its_env_var_and_authenticates(engine: Engine) -> None:
    apply(engine, FULL, actor="test", env=ENV)

    with session_scope(engine) as session:
        found = find_key(session=session, key_hash=hash_key(RAW_KEY))
    assert found is not None and found["id"] == "ci-bot" and found["scopes"] == ["inference"]


def test_raw_key_is_stored_nowhere_but_as_its_hash(engine: Engine, registry_state: StateOf) -> None:
    apply(engine, FULL, actor="test", env=ENV)

    everything = repr(registry_state(engine))  # every entity and every change-log row

    assert RAW_KEY not in everything
    assert hash_key(RAW_KEY) not in everything  # not even the hash leaves through reads


def test_a_short_key_is_refused_without_echoing_it(engine: Engine, registry_state: StateOf) -> None:
    before = registry_state(engine)
    short = "pr-short-0123"

    with pytest.raises(RegistryError) as raised:
        apply(engine, FULL, actor="test", env={"CI_BOT_KEY": short})

    message = describe_error(raised.value)
    assert "at least 24 characters" in message and short not in message
    assert f"line {line_of(FULL, '- id: ci-bot')}: api_keys[ci-bot]" in message
    assert registry_state(engine) == before


def test_existing_key_is_updated_but_never_rekeyed(engine: Engine) -> None:
    apply(engine, FULL, actor="test", env=ENV)
    wider = FULL.replace("scopes: [inference]", "scopes: [inference, compliance]")

    result = apply(engine, wider, actor="test", env={"CI_BOT_KEY": "pr-another-key-" + "x" * 30})

    assert labels(result, "update") == ["api_key:ci-bot"]
    with session_scope(engine) as session:
        assert find_key(session=session, key_hash=hash_key(RAW_KEY)) is not None


def test_new_key_without_secret_ref_is_refused(engine: Engine) -> None:
    no_ref = FULL.replace("    secret_ref: CI_BOT_KEY\n", "")

    with pytest.raises(RegistryFileError, match="needs secret_ref"):
        apply(engine, no_ref, actor="test", env=ENV)


def test_a_pasted_key_is_not_a_secret_ref() -> None:
    pasted = FULL.replace("secret_ref: CI_BOT_KEY", f"secret_ref: {RAW_KEY}")

    with pytest.raises(RegistryFileError) as raised:
        parse_document(pasted)

    assert "not an environment variable name" in raised.value.message


def test_disabled_key_in_file_is_created_disabled(engine: Engine) -> None:
    apply(
        engine,
        FULL.replace("scopes: [inference]", "scopes: [inference]\n    enabled: false"),
        actor="t",
        env=ENV,
    )

    assert one(engine, "api_key", "ci-bot")["enabled"] is False


# --------------------------------------------------------------------------- export


def test_export_reapplied_to_the_same_registry_changes_nothing(
    engine: Engine, registry_state: StateOf
) -> None:
    apply(engine, FULL, actor="test", env=ENV)
    before = registry_state(engine)

    result = apply(engine, export(engine), actor="test", env={})

    assert result.changes == () and result.version is None
    assert registry_state(engine) == before


def test_export_applied_to_an_empty_registry_gives_the_same_state(
    engine: Engine, fresh_sqlite: Engine
) -> None:
    apply(engine, BASE, actor="test")

    apply(fresh_sqlite, export(engine), actor="test")

    assert entities(fresh_sqlite) == entities(engine)


def test_an_empty_registry_reaches_the_same_state_from_an_export(
    engine: Engine, fresh_sqlite: Engine
) -> None:
    """The other direction: the registry under test is the empty one."""
    apply(fresh_sqlite, BASE, actor="test")

    apply(engine, export(fresh_sqlite), actor="test")

    assert entities(engine) == entities(fresh_sqlite)
    assert export(engine) == export(fresh_sqlite)


def test_export_with_prune_makes_a_registry_equal(engine: Engine, fresh_sqlite: Engine) -> None:
    apply(engine, BASE, actor="test")
    apply(fresh_sqlite, BASE.replace("name: Acme AG", "name: Other"), actor="test")
    apply(fresh_sqlite, "apiVersion: provenance-router/v1\ntenants: [{id: extra}]\n", actor="t")

    apply(fresh_sqlite, export(engine), prune=True, actor="test")

    assert entities(fresh_sqlite) == entities(engine)


def test_export_has_no_secrets_and_no_bookkeeping(engine: Engine) -> None:
    apply(engine, FULL, actor="test", env=ENV)

    text = export(engine)

    for secret in (RAW_KEY, hash_key(RAW_KEY), key_prefix(RAW_KEY)):
        assert secret not in text
    document = yaml.safe_load(text)
    assert document["api_keys"] == [
        {"id": "ci-bot", "tenant": "retail", "scopes": ["inference"], "enabled": True}
    ]
    assert document["deployments"][0]["secret_ref"] == "ACME_UPSTREAM_KEY"  # a name, not a key
    for section in document.values():
        for entry in section if isinstance(section, list) else ():
            assert not {"version", "created_at", "updated_at", "prefix", "key_hash"} & set(entry)


def test_export_is_deterministic_and_nested(engine: Engine) -> None:
    apply(engine, BASE, actor="test")

    text = export(engine)

    assert text == export(engine)
    document = yaml.safe_load(text)
    assert list(document) == [
        "apiVersion",
        "organizations",
        "licenses",
        "models",
        "deployments",
        "routes",
        "tenants",
        "api_keys",
    ]
    assert [o["id"] for o in document["organizations"]] == ["acme", "acme-labs"]
    deployment = document["deployments"][0]
    assert deployment["location"] == {"country": "DE", "region": "eu-central", "eea": True}
    assert deployment["hardware"] == {"vendor": "nvidia", "accelerator": "h100", "count": 8}
    assert deployment["claims"] == {
        "location.country": {"source": "contract 42", "confidence": "verified"}
    }
    assert document["models"][1]["lineage"] == [
        {"relation": "finetune_of", "model": "acme/acme-7b"}
    ]
    assert document["organizations"][0]["claim"]["retrieved_at"].isoformat() == "2026-11-25"
    assert document["api_keys"] == []


def test_export_of_an_empty_registry_applies_to_nothing(engine: Engine) -> None:
    text = export(engine)

    assert apply(engine, text, prune=True, actor="test").changes == ()


def test_file_path_source_is_read(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(BASE, encoding="utf-8")

    assert apply(engine, path, actor="test").version == 1


def test_the_example_registry_applies_on_the_catalog(engine: Engine) -> None:
    from registry.catalog import catalog_text

    example = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"

    first = apply(engine, example, actor="test", bootstrap=catalog_text())
    second = apply(engine, example, actor="test", bootstrap=catalog_text())

    assert first.version == 1 and second.changes == ()
    assert {d["id"] for d in entities(engine)["deployment"]}


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def cli() -> typer.Typer:
    """The gitops commands (apply, and export with its YAML default) on their own app, as
    ``router.cli`` registers them."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """provenance-router (test)."""

    register(app)
    register_export(app)
    return app


def run(app: typer.Typer, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def test_cli_dry_run_then_apply_then_no_change(
    cli: typer.Typer, db_url: str, engine: Engine, registry_state: StateOf, tmp_path: Path
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(FULL, encoding="utf-8")
    before = registry_state(engine)
    common = ("-f", str(path), "--database-url", db_url, "--no-catalog")

    dry = run(cli, "apply", *common, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "+ organizations[acme]" in dry.stdout and "Dry run" in dry.stdout
    assert "    location.country: DE" in dry.stdout
    assert registry_state(engine) == before

    applied = run(cli, "apply", *common, "--actor", "ci:pipeline-7")
    assert applied.exit_code == 0, applied.output
    assert "Applied: 10 created, 0 updated, 0 deleted; registry version 1." in applied.stdout

    again = run(cli, "apply", *common)
    assert again.exit_code == 0 and "No changes" in again.stdout

    path.write_text(FULL.replace("name: Acme AG", "name: Acme SE"), encoding="utf-8")
    update = run(cli, "apply", *common)
    assert "~ organizations[acme]\n    name: Acme AG -> Acme SE" in update.stdout


def test_cli_failing_apply_exits_1_and_changes_nothing(
    cli: typer.Typer, db_url: str, engine: Engine, registry_state: StateOf, tmp_path: Path
) -> None:
    apply(engine, BASE, actor="test")
    before = registry_state(engine)
    path = tmp_path / "bad.yaml"
    bad = BASE.replace("[acme-fra, acme/acme-7b]", "[acme-fra, gone]")
    path.write_text(bad, encoding="utf-8")

    result = run(cli, "apply", "-f", str(path), "--database-url", db_url, "--no-catalog")

    assert result.exit_code == 1
    line = line_of(bad, "[acme-fra, gone]")
    assert (
        f"line {line}: routes[chat-default]: update refused: "
        "candidates: no deployment or model 'gone'"
    ) in result.stderr
    assert "nothing was changed" in result.stderr and result.stdout == ""
    assert registry_state(engine) == before


def test_cli_export_writes_a_file_that_reapplies_to_no_change(
    cli: typer.Typer, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    apply(engine, FULL, actor="test", env=ENV)
    out = tmp_path / "export.yaml"

    to_stdout = run(cli, "export", "--database-url", db_url)
    to_file = run(cli, "export", "-o", str(out), "--database-url", db_url)

    assert to_stdout.exit_code == 0 and to_file.exit_code == 0
    assert out.read_text(encoding="utf-8") == to_stdout.stdout == export(engine)
    assert RAW_KEY not in to_stdout.stdout
    reapply = run(cli, "apply", "-f", str(out), "--database-url", db_url, "--no-catalog")
    assert "No changes" in reapply.stdout


def test_cli_loads_the_catalog_under_the_first_file(
    cli: typer.Typer, db_url: str, engine: Engine
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"

    result = run(cli, "apply", "-f", str(example), "--database-url", db_url, "--catalog")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("+ built-in catalog: ")
    assert one(engine, "model", "mistralai/Mistral-7B-Instruct-v0.3")["review_status"] == "approved"


def test_installed_command_applies_and_exports(tmp_path: Path) -> None:
    """The real ``provenance-router`` entry point, in a subprocess, on a temp SQLite file."""
    command = Path(sys.executable).with_name("provenance-router")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    path = tmp_path / "registry.yaml"
    path.write_text(FULL, encoding="utf-8")
    env = {**os.environ, **ENV}

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(command), *args, "--database-url", url],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    applied = call("apply", "-f", str(path), "--no-catalog")
    assert applied.returncode == 0, applied.stderr
    exported = call("export")
    assert exported.returncode == 0 and "ci-bot" in exported.stdout
    assert RAW_KEY not in exported.stdout


def test_the_documented_example_applies_and_round_trips(engine: Engine) -> None:
    from registry.catalog import catalog_text

    doc = (Path(__file__).resolve().parents[2] / "docs" / "registry-format.md").read_text("utf-8")
    example = doc.split("```yaml\n")[-1].split("```")[0]
    env = {"PR_KEY_CI_BOT": RAW_KEY}

    first = apply(engine, example, actor="test", env=env, bootstrap=catalog_text())

    assert first.version == 1
    assert apply(engine, example, actor="test", env=env).changes == ()
    assert apply(engine, export(engine), actor="test").changes == ()

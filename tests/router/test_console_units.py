"""The console's pure parts: session tokens and CSRF tokens (``router.console.sessions``) with a
clock under the test's control, and the lineage graph's layout (``router.console.lineage_svg``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.snapshot import Lineage, ModelSnap, OrgSnap
from router.console.lineage_svg import lineage_edges, lineage_svg
from router.console.sessions import SessionSigner
from router.signing import Signer, load_or_create_signer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_or_create_signer(tmp_path / "signing")


def test_a_session_lasts_its_ttl_and_no_longer(signer: Signer) -> None:
    clock = Clock()
    sessions = SessionSigner(lambda: signer, ttl_s=60.0, clock=clock)
    token, session = sessions.issue("admin-key")
    assert sessions.check(token) == session
    clock.now += 59.9
    assert sessions.check(token) == session
    clock.now += 0.2
    assert sessions.check(token) is None


def test_a_revoked_or_altered_token_is_refused(signer: Signer, tmp_path: Path) -> None:
    sessions = SessionSigner(lambda: signer, ttl_s=60.0)
    token, session = sessions.issue("admin-key")
    payload, signature = token.split(".")
    assert sessions.check(f"{payload}.{signature[:-2]}AA") is None
    assert sessions.check(payload) is None and sessions.check("") is None
    assert sessions.check("a.b.c") is None and sessions.check("!!.??") is None
    other = load_or_create_signer(tmp_path / "other")  # another gateway's key
    assert SessionSigner(lambda: other, ttl_s=60.0).check(token) is None
    sessions.revoke(session)
    assert sessions.check(token) is None


def test_csrf_tokens_belong_to_one_session(signer: Signer) -> None:
    sessions = SessionSigner(lambda: signer, ttl_s=60.0)
    _, one = sessions.issue("k")
    _, two = sessions.issue("k")
    token = sessions.csrf_token(one.nonce)
    assert sessions.csrf_ok(one.nonce, token)
    assert not sessions.csrf_ok(two.nonce, token)
    assert not sessions.csrf_ok(one.nonce, None) and not sessions.csrf_ok(None, token)
    assert not sessions.csrf_ok(one.nonce, token[:-1])


def model(id: str, *parents: tuple[str, str], developer: str = "acme") -> ModelSnap:
    links = tuple(Lineage(relation, parent) for relation, parent in parents)
    return ModelSnap(id=id, developer_id=developer, parents=links)


def test_the_lineage_graph_holds_every_ancestor_and_child() -> None:
    models = {
        m.id: m
        for m in (
            model("a/base"),
            model("b/other", developer="dragon"),
            model("a/merged", ("merge_of", "a/base"), ("merge_of", "b/other")),
            model("a/tuned", ("finetune_of", "a/merged")),
            model("a/q4", ("quantized_from", "a/tuned")),
            model("z/unrelated"),
        )
    }
    orgs = {"acme": OrgSnap(id="acme", name="Acme", hq_country="US")}
    edges = {(e.child, e.relation, e.parent) for e in lineage_edges(models, "a/tuned")}
    assert edges == {
        ("a/tuned", "finetune_of", "a/merged"),
        ("a/merged", "merge_of", "a/base"),
        ("a/merged", "merge_of", "b/other"),
        ("a/q4", "quantized_from", "a/tuned"),
    }
    svg = lineage_svg(models, orgs, "a/tuned")
    for node in ("a/base", "b/other", "a/merged", "a/tuned", "a/q4"):
        assert f'data-model="{node}"' in svg
    assert "z/unrelated" not in svg
    assert svg.count('<g class="edge"') == 4
    assert "dragon · unknown" in svg  # an org not in the registry: its country is unknown


def test_a_parent_missing_from_the_registry_is_drawn_as_such() -> None:
    models = {"a/ft": model("a/ft", ("finetune_of", "x/gone"))}
    svg = lineage_svg(models, {}, "a/ft")
    assert '<g class="node missing" data-model="x/gone">' in svg
    assert "not in registry" in svg

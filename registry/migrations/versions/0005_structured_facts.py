"""Structured provenance facts: training hardware, data origin, compute, behavioural evidence,
listings on named sanctions and export lists.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- ``models.training_hardware_vendor`` (one vendor) becomes ``training_hardware``, a list of
  ``{vendor, accelerator, share}``: a stated vendor becomes one part, its claim moves along;
  the column is dropped (``RegistrySnapshot.training_hardware_vendors`` derives the set).
- ``models.behavioral_restrictions`` (free text) becomes a list of ``{topic, evidence_url,
  observed_at, observed_on}``: each text becomes its topic slug, with no evidence and
  ``observed_on`` not stated; text that makes no slug is dropped (reported).
- New: ``models.training_data_countries``, ``models.training_compute``,
  ``organizations.listings``.
- Facts have one canonical form: a jurisdiction tag that names a list of
  ``registry/data/listings.yaml`` (``us-entity-list``) moves to ``listings``, with the tags'
  claim source as its source.

Every entity rewritten is recorded in ``registry_changes`` (actor ``migration:0005``). The
downgrade puts the first training vendor and the listings' names back as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from registry.migrations.changelog import record_changes
from registry.vocabulary import named_lists, normalise_topic

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ACTOR = "migration:0005"

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

MODELS = sa.table(
    "models",
    sa.column("id", sa.String),
    sa.column("claims", JSON_TYPE),
    sa.column("training_hardware_vendor", sa.String),
    sa.column("training_hardware", JSON_TYPE),
    sa.column("behavioral_restrictions", JSON_TYPE),
)
ORGS = sa.table(
    "organizations",
    sa.column("id", sa.String),
    sa.column("claim", JSON_TYPE),
    sa.column("claims", JSON_TYPE),
    sa.column("jurisdiction_tags", JSON_TYPE),
    sa.column("listings", JSON_TYPE),
)
EMPTY_LIST = sa.text("'[]'")


def upgrade() -> None:
    op.add_column(
        "organizations", sa.Column("listings", JSON_TYPE, nullable=False, server_default=EMPTY_LIST)
    )
    for name in ("training_hardware", "training_data_countries"):
        op.add_column(
            "models", sa.Column(name, JSON_TYPE, nullable=False, server_default=EMPTY_LIST)
        )
    op.add_column("models", sa.Column("training_compute", JSON_TYPE, nullable=True))
    connection = op.get_bind()
    changes = [*_models_up(connection), *_orgs_up(connection)]
    op.execute("ALTER TABLE models DROP COLUMN training_hardware_vendor")
    record_changes(connection, ACTOR, changes)


def _models_up(connection: sa.Connection) -> Iterator[dict[str, Any]]:
    rows = connection.execute(
        sa.select(
            MODELS.c.id,
            MODELS.c.claims,
            MODELS.c.training_hardware_vendor,
            MODELS.c.behavioral_restrictions,
        )
    ).all()
    for model_id, claims, vendor, restrictions in rows:
        if vendor is None and not restrictions:
            continue
        hardware = (
            [] if vendor is None else [{"vendor": vendor, "accelerator": None, "share": None}]
        )
        structured = list(_restrictions(model_id, restrictions or []))
        claims = _renamed_claim(claims, "training_hardware_vendor", "training_hardware")
        connection.execute(
            MODELS.update()
            .where(MODELS.c.id == model_id)
            .values(training_hardware=hardware, behavioral_restrictions=structured, claims=claims)
        )
        yield {
            "kind": "model",
            "id": model_id,
            "before": {"training_hardware_vendor": vendor, "behavioral_restrictions": restrictions},
            "after": {"training_hardware": hardware, "behavioral_restrictions": structured},
        }


def _restrictions(model_id: str, texts: list[Any]) -> Iterator[dict[str, Any]]:
    for text in texts:
        try:
            topic = normalise_topic(str(text))
        except ValueError as error:
            log.warning("model %s: behavioural restriction %r dropped: %s", model_id, text, error)
            continue
        yield {"topic": topic, "evidence_url": None, "observed_at": None, "observed_on": None}


def _renamed_claim(claims: dict[str, Any] | None, old: str, new: str) -> dict[str, Any]:
    claims = dict(claims or {})
    if old in claims:
        claims[new] = claims.pop(old)
    return claims


def _orgs_up(connection: sa.Connection) -> Iterator[dict[str, Any]]:
    rows = connection.execute(
        sa.select(ORGS.c.id, ORGS.c.claim, ORGS.c.claims, ORGS.c.jurisdiction_tags)
    ).all()
    for org_id, claim, claims, tags in rows:
        lists = [(tag, named_lists().lookup(tag)) for tag in tags or []]
        listed = list(dict.fromkeys(name for _, name in lists if name is not None))
        if not listed:
            continue
        kept = [tag for tag, name in lists if name is None]
        tag_claim = (claims or {}).get("jurisdiction_tags") or claim or {}
        listings = [
            {"list": name, "since": None, "source": tag_claim.get("source")} for name in listed
        ]
        claims = dict(claims or {})
        if "jurisdiction_tags" in claims:
            claims["listings"] = claims["jurisdiction_tags"]
        connection.execute(
            ORGS.update()
            .where(ORGS.c.id == org_id)
            .values(jurisdiction_tags=kept, listings=listings, claims=claims)
        )
        yield {
            "kind": "organization",
            "id": org_id,
            "before": {"jurisdiction_tags": tags},
            "after": {"jurisdiction_tags": kept, "listings": listings},
        }


def downgrade() -> None:
    op.add_column("models", sa.Column("training_hardware_vendor", sa.String(), nullable=True))
    connection = op.get_bind()
    hardware = connection.execute(
        sa.select(MODELS.c.id, MODELS.c.training_hardware, MODELS.c.claims)
    ).all()
    for model_id, parts, claims in hardware:
        if parts:
            connection.execute(
                MODELS.update()
                .where(MODELS.c.id == model_id)
                .values(
                    training_hardware_vendor=parts[0]["vendor"],
                    claims=_renamed_claim(claims, "training_hardware", "training_hardware_vendor"),
                )
            )
    for org_id, tags, listings in connection.execute(
        sa.select(ORGS.c.id, ORGS.c.jurisdiction_tags, ORGS.c.listings)
    ).all():
        if listings:
            names = [item["list"] for item in listings]
            connection.execute(
                ORGS.update().where(ORGS.c.id == org_id).values(jurisdiction_tags=[*tags, *names])
            )
    # Plain ALTER (SQLite >= 3.35): a batch rebuild would break foreign keys on SQLite.
    for table, column in (
        ("models", "training_hardware"),
        ("models", "training_data_countries"),
        ("models", "training_compute"),
        ("organizations", "listings"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")

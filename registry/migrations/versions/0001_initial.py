"""Initial registry schema: entities, lineage, policies, audit, registry state.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written for both SQLite and PostgreSQL; types are spelled out here (not imported from the
application) so this revision stays valid whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "licenses",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("claim", JSON_TYPE, nullable=False),
        sa.Column("claims", JSON_TYPE, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=True),
        sa.Column("osi_approved", sa.Boolean(), nullable=True),
        sa.Column("open_weights", sa.Boolean(), nullable=True),
        sa.Column("commercial_use", sa.String(), nullable=True),
        sa.Column("user_threshold", sa.BigInteger(), nullable=True),
        sa.Column("use_restrictions", JSON_TYPE, nullable=False),
        sa.Column("geographic_restrictions", JSON_TYPE, nullable=False),
        sa.Column("attribution_required", sa.Boolean(), nullable=True),
        sa.Column("derivatives_inherit", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_licenses")),
    )
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("claim", JSON_TYPE, nullable=False),
        sa.Column("claims", JSON_TYPE, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("aliases", JSON_TYPE, nullable=False),
        sa.Column("hq_country", sa.String(), nullable=True),
        sa.Column("incorporation_country", sa.String(), nullable=True),
        sa.Column("parent", sa.String(), nullable=True),
        sa.Column("jurisdiction_tags", JSON_TYPE, nullable=False),
        sa.Column("state_affiliated", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent"], ["organizations.id"], name=op.f("fk_organizations_parent_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_index(op.f("ix_organizations_parent"), "organizations", ["parent"], unique=False)
    op.create_table(
        "policies",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policies")),
    )
    op.create_index(
        "ix_policies_one_active",
        "policies",
        ["active"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "registry_changes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("entity_id", sa.String(), nullable=False),
        sa.Column("op", sa.String(), nullable=False),
        sa.Column("before", JSON_TYPE, nullable=True),
        sa.Column("after", JSON_TYPE, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_changes")),
    )
    op.create_index(op.f("ix_registry_changes_actor"), "registry_changes", ["actor"], unique=False)
    op.create_index(
        op.f("ix_registry_changes_entity_id"), "registry_changes", ["entity_id"], unique=False
    )
    op.create_index(op.f("ix_registry_changes_kind"), "registry_changes", ["kind"], unique=False)
    op.create_index(
        op.f("ix_registry_changes_version"), "registry_changes", ["version"], unique=False
    )
    registry_state = op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_state")),
    )
    op.bulk_insert(registry_state, [{"id": 1, "version": 0}])
    op.create_table(
        "routes",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        sa.Column("candidates", JSON_TYPE, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_routes")),
    )
    op.create_table(
        "routing_decisions",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("tenant_id", sa.String(), nullable=True),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("requested_model", sa.String(), nullable=True),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("context", JSON_TYPE, nullable=False),
        sa.Column("candidates", JSON_TYPE, nullable=False),
        sa.Column("chosen_deployment", sa.String(), nullable=True),
        sa.Column("attempts", JSON_TYPE, nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("registry_version", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_decisions")),
    )
    op.create_index(
        op.f("ix_routing_decisions_created_at"), "routing_decisions", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_routing_decisions_request_id"), "routing_decisions", ["request_id"], unique=False
    )
    op.create_index(
        op.f("ix_routing_decisions_status"), "routing_decisions", ["status"], unique=False
    )
    op.create_index(
        op.f("ix_routing_decisions_tenant_id"), "routing_decisions", ["tenant_id"], unique=False
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("region", sa.String(), nullable=True),
        sa.Column("default_classification", sa.String(), nullable=False),
        sa.Column("attributes", JSON_TYPE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("scopes", JSON_TYPE, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("key_hash", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant"], ["tenants.id"], name=op.f("fk_api_keys_tenant_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant"), "api_keys", ["tenant"], unique=False)
    op.create_table(
        "models",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("claim", JSON_TYPE, nullable=False),
        sa.Column("claims", JSON_TYPE, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
        sa.Column("developer", sa.String(), nullable=True),
        sa.Column("publisher", sa.String(), nullable=True),
        sa.Column("family", sa.String(), nullable=True),
        sa.Column("parameters_total", sa.BigInteger(), nullable=True),
        sa.Column("parameters_active", sa.BigInteger(), nullable=True),
        sa.Column("context_length", sa.Integer(), nullable=True),
        sa.Column("modalities", JSON_TYPE, nullable=False),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("license", sa.String(), nullable=True),
        sa.Column("weights_digest", sa.String(), nullable=True),
        sa.Column("review_status", sa.String(), nullable=False),
        sa.Column("training_hardware_vendor", sa.String(), nullable=True),
        sa.Column("training_data_origin", sa.String(), nullable=True),
        sa.Column("behavioral_restrictions", JSON_TYPE, nullable=False),
        sa.ForeignKeyConstraint(
            ["developer"], ["organizations.id"], name=op.f("fk_models_developer_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["license"], ["licenses.id"], name=op.f("fk_models_license_licenses")
        ),
        sa.ForeignKeyConstraint(
            ["publisher"], ["organizations.id"], name=op.f("fk_models_publisher_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
    )
    op.create_index(op.f("ix_models_developer"), "models", ["developer"], unique=False)
    op.create_index(op.f("ix_models_license"), "models", ["license"], unique=False)
    op.create_index(op.f("ix_models_publisher"), "models", ["publisher"], unique=False)
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("claim", JSON_TYPE, nullable=False),
        sa.Column("claims", JSON_TYPE, nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("adapter", sa.String(), nullable=False),
        sa.Column("endpoint_url", sa.String(), nullable=True),
        sa.Column("upstream_model", sa.String(), nullable=True),
        sa.Column("secret_ref", sa.String(), nullable=True),
        sa.Column("operator", sa.String(), nullable=True),
        sa.Column("hosting", sa.String(), nullable=True),
        sa.Column("location_country", sa.String(), nullable=True),
        sa.Column("location_region", sa.String(), nullable=True),
        sa.Column("location_eea", sa.Boolean(), nullable=True),
        sa.Column("hardware_vendor", sa.String(), nullable=True),
        sa.Column("accelerator", sa.String(), nullable=True),
        sa.Column("accelerator_count", sa.Integer(), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("zero_data_retention", sa.Boolean(), nullable=True),
        sa.Column("trains_on_inputs", sa.Boolean(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("review_status", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["model"], ["models.id"], name=op.f("fk_deployments_model_models")),
        sa.ForeignKeyConstraint(
            ["operator"], ["organizations.id"], name=op.f("fk_deployments_operator_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index(op.f("ix_deployments_model"), "deployments", ["model"], unique=False)
    op.create_index(op.f("ix_deployments_operator"), "deployments", ["operator"], unique=False)
    op.create_table(
        "model_relations",
        sa.Column("child", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("parent", sa.String(), nullable=False),
        sa.Column("relation", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["child"],
            ["models.id"],
            name=op.f("fk_model_relations_child_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent"], ["models.id"], name=op.f("fk_model_relations_parent_models")
        ),
        sa.PrimaryKeyConstraint("child", "position", name=op.f("pk_model_relations")),
    )
    op.create_index(op.f("ix_model_relations_parent"), "model_relations", ["parent"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_model_relations_parent"), table_name="model_relations")
    op.drop_table("model_relations")
    op.drop_index(op.f("ix_deployments_operator"), table_name="deployments")
    op.drop_index(op.f("ix_deployments_model"), table_name="deployments")
    op.drop_table("deployments")
    op.drop_index(op.f("ix_models_publisher"), table_name="models")
    op.drop_index(op.f("ix_models_license"), table_name="models")
    op.drop_index(op.f("ix_models_developer"), table_name="models")
    op.drop_table("models")
    op.drop_index(op.f("ix_api_keys_tenant"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
    op.drop_index(op.f("ix_routing_decisions_tenant_id"), table_name="routing_decisions")
    op.drop_index(op.f("ix_routing_decisions_status"), table_name="routing_decisions")
    op.drop_index(op.f("ix_routing_decisions_request_id"), table_name="routing_decisions")
    op.drop_index(op.f("ix_routing_decisions_created_at"), table_name="routing_decisions")
    op.drop_table("routing_decisions")
    op.drop_table("routes")
    op.drop_table("registry_state")
    op.drop_index(op.f("ix_registry_changes_version"), table_name="registry_changes")
    op.drop_index(op.f("ix_registry_changes_kind"), table_name="registry_changes")
    op.drop_index(op.f("ix_registry_changes_entity_id"), table_name="registry_changes")
    op.drop_index(op.f("ix_registry_changes_actor"), table_name="registry_changes")
    op.drop_table("registry_changes")
    op.drop_index(
        "ix_policies_one_active",
        table_name="policies",
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.drop_table("policies")
    op.drop_index(op.f("ix_organizations_parent"), table_name="organizations")
    op.drop_table("organizations")
    op.drop_table("licenses")

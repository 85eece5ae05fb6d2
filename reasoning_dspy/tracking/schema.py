"""The tracking schema as SQLAlchemy Core tables, built for the vector sizes a database was created
with. Column types adapt to the dialect: JSONB and pgvector's VECTOR with HNSW indexes on
PostgreSQL; JSON and float32 bytes on SQLite (searched with numpy)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from reasoning_dspy.tracking.vector import VectorType

#: Bump with each new entry in `migrate.MIGRATIONS`.
SCHEMA_VERSION = 2

#: HNSW build settings (pgvector's defaults, stated so the index is reproducible).
HNSW_OPTIONS = {"m": 16, "ef_construction": 64}

_json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")  # None is SQL NULL


@dataclass(frozen=True)
class Schema:
    """Every tracking table, for one pair of vector sizes."""

    embedding_dim: int
    activation_dim: int
    metadata: MetaData
    schema_version: Table
    settings: Table
    runs: Table
    trials: Table
    generations: Table
    feature_activations: Table
    annotations: Table  # analysts' flags and scores (`tracking.annotations`); written directly, not journaled

    @property
    def data_tables(self) -> list[Table]:
        """The tables the journal's records go into, parents first (migration 1 creates exactly these)."""
        return [self.runs, self.trials, self.generations, self.feature_activations]


def _hnsw(name: str, column: Column) -> Index:
    return Index(name, column, postgresql_using="hnsw", postgresql_with=HNSW_OPTIONS,
                 postgresql_ops={column.name: "vector_cosine_ops"}).ddl_if(dialect="postgresql")


def build_schema(embedding_dim: int, activation_dim: int) -> Schema:
    """Tables whose vector columns hold `embedding_dim` and `activation_dim` floats."""
    md = MetaData()
    schema_version = Table(
        "schema_version", md,
        Column("version", Integer, primary_key=True),
        Column("description", Text, nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )
    settings = Table(
        "tracking_settings", md,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    runs = Table(
        "runs", md,
        Column("id", String(64), primary_key=True),
        Column("name", Text, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("folder", Text),
        Column("config", _json, nullable=False),
        Column("result", _json),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
    )
    trials = Table(
        "trials", md,
        Column("id", String(64), primary_key=True),
        Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("number", Integer, nullable=False),
        Column("params", _json, nullable=False),
        Column("candidate", _json, nullable=False),
        Column("kind", Text),
        Column("score", Float),
        Column("activation", Float),
        Column("accuracy", Float),
        Column("tokens", Float),
        Column("reflect", Float),
        Column("word_rate", Float),
        Column("n", Integer),
        Column("wall_s", Float),
        Column("feasible", Boolean, nullable=False),
        Column("cached", Boolean, nullable=False),
        Column("extra", _json, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("run_id", "number", name="trials_run_number"),
    )
    generations = Table(
        "generations", md,
        Column("id", String(64), primary_key=True),
        Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("label", Text),
        Column("index", Integer),
        Column("trial_number", Integer),
        Column("prompt", Text, nullable=False),
        Column("output", Text),
        Column("steering", _json),
        Column("reasoning_activation", Float),
        Column("correct", Float),
        Column("tokens", Integer),
        Column("prompt_embedding", VectorType(embedding_dim)),
        Column("activation_vector", VectorType(activation_dim)),
        Column("extra", _json, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("generations_run_label", "run_id", "label"),
    )
    _hnsw("generations_prompt_embedding_hnsw", generations.c.prompt_embedding)
    _hnsw("generations_activation_vector_hnsw", generations.c.activation_vector)
    feature_activations = Table(
        "feature_activations", md,
        Column("generation_id", String(64), ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True),
        Column("feature", Integer, primary_key=True),
        Column("value", Float, nullable=False),
        Index("feature_activations_feature", "feature", "value"),
    )
    annotations = Table(
        "annotations", md,
        Column("id", String(64), primary_key=True),
        Column("kind", String(16), nullable=False),  # flag, score, rescore or steer
        Column("prompt", Text, nullable=False),
        Column("run_id", String(64)),  # no foreign keys: an annotation may name a prompt no run holds
        Column("generation_id", String(64)),
        Column("trial_number", Integer),
        Column("score", Float),
        Column("output", Text),
        Column("steering", _json),
        Column("note", Text),
        Column("author", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Index("annotations_run_created", "run_id", "created_at"),
    )
    return Schema(embedding_dim, activation_dim, md, schema_version, settings, runs, trials, generations,
                  feature_activations, annotations)

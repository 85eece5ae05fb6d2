"""Tracking settings as one pydantic model: the `tracking:` section of an experiment config, and
the keyword arguments of `Tracker.open`. Only pydantic is imported, so configs load fast."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Prompt embeddings: 384 matches MiniLM sentence embeddings; the built-in hashing embedder fits any size.
EMBEDDING_DIM = 384
#: all-MiniLM-L6-v2's embedding length.
MINILM_DIM = 384
#: Feature-activation vectors: the mean activations of a fixed, ordered list of SAE features.
ACTIVATION_DIM = 64


class TrackingConfig(BaseModel):
    """Where runs are tracked and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="record runs, trials and generations in a database")
    database_url: str | None = Field(None, description=(
        "postgresql://user@host:port/db (pgvector) or sqlite:///path; None: $DATABASE_URL, else a SQLite "
        "file beside the runs"))
    mlflow: bool = Field(False, description="also log params, per-trial metrics and the best program to MLflow")
    embedding_dim: int = Field(EMBEDDING_DIM, ge=1, le=2000,
                               description="length of prompt embedding vectors (HNSW indexes at most 2000)")
    activation_dim: int = Field(ACTIVATION_DIM, ge=1, le=2000,
                                description="length of feature-activation vectors (HNSW indexes at most 2000)")
    batch_size: int = Field(64, ge=1, description="records written to the database per transaction")
    embedder: Literal["hashing", "minilm"] = Field("hashing", description=(
        "prompt embeddings: hashed character n-grams (no model, any length) or all-MiniLM-L6-v2 sentence "
        "embeddings (reasoning_dspy.rag, 384 dimensions, loaded offline)"))

    @model_validator(mode="after")
    def _check_embedder(self) -> TrackingConfig:
        if self.embedder == "minilm" and self.embedding_dim != MINILM_DIM:
            raise ValueError(f"embedder 'minilm' gives {MINILM_DIM}-dimensional vectors, but embedding_dim is "
                             f"{self.embedding_dim}")
        return self

"""Nearest neighbours by cosine distance: pgvector (HNSW index, or an exact scan on request) on
PostgreSQL, numpy over every stored vector on SQLite. Both return the same `Match` rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, Select, func, select, type_coerce

from reasoning_dspy.tracking.schema import Schema
from reasoning_dspy.tracking.vector import as_vector

VectorColumn = Literal["prompt_embedding", "activation_vector"]


@dataclass(frozen=True)
class Match:
    """One stored generation near the query; `distance` is cosine distance (0 = same direction)."""

    id: str
    run_id: str
    label: str | None
    prompt: str
    output: str | None
    reasoning_activation: float | None
    correct: float | None
    extra: dict[str, Any]
    distance: float


def _dim(schema: Schema, column: VectorColumn) -> int:
    return schema.embedding_dim if column == "prompt_embedding" else schema.activation_dim


def _rows(schema: Schema) -> Select[Any]:
    g = schema.generations
    return select(g.c.id, g.c.run_id, g.c.label, g.c.prompt, g.c.output, g.c.reasoning_activation, g.c.correct,
                  g.c.extra)


def _set_local(conn: Connection, settings: dict[str, str]) -> None:
    """Planner settings for the current transaction only, in one round trip."""
    conn.execute(select(*(func.set_config(name, value, True) for name, value in settings.items())))


def nearest(conn: Connection, schema: Schema, column: VectorColumn, query: Any, k: int, *,
            run_id: str | None = None, exclude_id: str | None = None, exact: bool = False,
            ef_search: int | None = None) -> list[Match]:
    """The `k` generations whose `column` is nearest `query`, nearest first. Run inside a
    transaction (`engine.begin()`): on PostgreSQL the planner settings are set for it alone.
    `ef_search` is HNSW's candidate list (default max(40, 2k)): larger is slower and finds more of
    the true nearest."""
    vector = as_vector(query, _dim(schema, column), f"query {column}")
    if k < 1:
        return []
    if conn.dialect.name == "postgresql":
        return _nearest_pgvector(conn, schema, column, vector, k, run_id=run_id, exclude_id=exclude_id, exact=exact,
                                 ef_search=ef_search or max(40, 2 * k))
    return _nearest_numpy(conn, schema, column, vector, k, run_id=run_id, exclude_id=exclude_id)


def _nearest_pgvector(conn: Connection, schema: Schema, column: VectorColumn, vector: np.ndarray, k: int, *,
                      run_id: str | None, exclude_id: str | None, exact: bool, ef_search: int) -> list[Match]:
    from pgvector.sqlalchemy import VECTOR

    g = schema.generations
    distance = type_coerce(g.c[column], VECTOR(_dim(schema, column))).cosine_distance(vector)
    if exact:
        _set_local(conn, {"enable_indexscan": "off"})  # every row compared: the reference the index is checked against
    else:
        settings = {"enable_seqscan": "off", "hnsw.ef_search": str(ef_search)}  # the index even on small tables
        if run_id is not None or exclude_id is not None:
            settings["hnsw.iterative_scan"] = "strict_order"  # filtered: keep scanning until k match (pgvector 0.8+)
        _set_local(conn, settings)
    stmt = _rows(schema).add_columns(distance.label("distance")).where(g.c[column].is_not(None))
    if run_id is not None:
        stmt = stmt.where(g.c.run_id == run_id)
    if exclude_id is not None:
        stmt = stmt.where(g.c.id != exclude_id)
    return [Match(*row) for row in conn.execute(stmt.order_by(distance).limit(k))]


def _nearest_numpy(conn: Connection, schema: Schema, column: VectorColumn, vector: np.ndarray, k: int, *,
                   run_id: str | None, exclude_id: str | None) -> list[Match]:
    g = schema.generations
    stmt = select(g.c.id, g.c[column]).where(g.c[column].is_not(None))
    if run_id is not None:
        stmt = stmt.where(g.c.run_id == run_id)
    if exclude_id is not None:
        stmt = stmt.where(g.c.id != exclude_id)
    pairs = conn.execute(stmt).all()
    if not pairs:
        return []
    ids = [p[0] for p in pairs]
    distances = cosine_distances(np.stack([p[1] for p in pairs]), vector)
    top = _top_k(distances, min(k, len(ids)))
    wanted = [ids[i] for i in top]
    found = {row.id: row for row in conn.execute(_rows(schema).where(g.c.id.in_(wanted)))}
    return [Match(*found[ids[i]], float(distances[i])) for i in top]


def _top_k(distances: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(distances, k - 1)[:k]
    return part[np.argsort(distances[part], kind="stable")]


def cosine_distances(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """1 − cos(row, vector) per row of `matrix` [n, d]; a zero vector is at distance 1 from everything."""
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector))
    dots = matrix @ vector
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dots / norms, 0.0)
    return np.clip(1.0 - cos, 0.0, 2.0).astype(np.float64)


def vector_of(conn: Connection, schema: Schema, column: VectorColumn, generation_id: str) -> np.ndarray:
    """The stored `column` of one generation; `KeyError` when it has none."""
    g = schema.generations
    value = conn.execute(select(g.c[column]).where(g.c.id == generation_id)).scalar()
    if value is None:
        raise KeyError(f"generation {generation_id!r} is not stored or has no {column}")
    return np.asarray(value, dtype=np.float32)

"""A vector column that is pgvector's `VECTOR(dim)` on PostgreSQL and float32 bytes on SQLite, so
one schema serves both databases and values always come back as numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def as_vector(value: Any, dim: int, what: str = "vector") -> np.ndarray:
    """`value` as a float32 array of length `dim`; a clear error for anything else."""
    array = np.asarray(value, dtype=np.float32).reshape(-1)
    if array.shape[0] != dim:
        raise ValueError(f"{what} has {array.shape[0]} values; this database stores {dim}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} holds a NaN or infinite value")
    return array


class VectorType(TypeDecorator[np.ndarray]):
    """`VECTOR(dim)` (pgvector) on PostgreSQL, little-endian float32 bytes elsewhere."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import VECTOR

            return dialect.type_descriptor(VECTOR(self.dim))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        array = as_vector(value, self.dim)
        return array if dialect.name == "postgresql" else array.astype("<f4").tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, dtype=np.float32)
        return np.frombuffer(value, dtype="<f4").astype(np.float32)

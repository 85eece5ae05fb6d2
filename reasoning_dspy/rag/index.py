"""Vector retrieval behind a two-method interface, with an exact numpy implementation.

`VectorIndex` is all the filter uses: `add(ids, vectors, payload)` and `search(vector, k)`, by
cosine similarity. `NumpyIndex` keeps everything in memory and searches exactly; a PostgreSQL +
pgvector store implements the same two methods (the tracking package), so the filter works the
same on either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

Hit = tuple[str, float, dict[str, Any]]  # (id, cosine similarity, payload)


@runtime_checkable
class VectorIndex(Protocol):
    """Vectors by id, each with a JSON-able payload, searched by cosine similarity."""

    def add(self, ids: Sequence[str], vectors: np.ndarray, payload: Sequence[Mapping[str, Any]]) -> None:
        """Store `vectors` (`[len(ids), dim]`) under `ids`, one payload each; an id already present
        is replaced. Nothing is written when any input is wrong."""
        ...

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """The `k` stored vectors most similar to `vector` (`[dim]`), most similar first."""
        ...


def prompt_id(text: str) -> str:
    """A stable id for a prompt text: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class NumpyIndex:
    """Exact in-memory `VectorIndex`: rows normalised on the way in, search is one matrix product.

    Args:
        dim: vector width (None: set by the first `add`).
    """

    def __init__(self, dim: int | None = None):
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._vectors = np.zeros((0, dim or 0), dtype=np.float32)
        self._payload: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Sequence[str], vectors: np.ndarray, payload: Sequence[Mapping[str, Any]] | None = None) -> None:
        ids = list(ids)
        vectors = self._matrix(vectors, len(ids))
        payload = [{} for _ in ids] if payload is None else [dict(p) for p in payload]
        if len(payload) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(payload)} payloads: give one payload per id")
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise ValueError(f"ids must be non-empty strings, got {bad[:3]!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"ids repeat within one add: {sorted({i for i in ids if ids.count(i) > 1})[:3]}")
        # everything is checked: now write
        if self.dim is None:
            self.dim = vectors.shape[1]
            self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        new = [j for j, i in enumerate(ids) if i not in self._rows]
        for j, i in enumerate(ids):
            if i in self._rows:
                row = self._rows[i]
                self._vectors[row], self._payload[row] = vectors[j], payload[j]
        for j in new:
            self._rows[ids[j]] = len(self._ids)
            self._ids.append(ids[j])
            self._payload.append(payload[j])
        self._vectors = np.concatenate([self._vectors, vectors[new]]) if new else self._vectors

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query = self._matrix(np.asarray(vector).reshape(1, -1), 1)[0]
        if not self._ids:
            return []
        sims = self._vectors @ query  # [n]
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.lexsort((top, -sims[top]))]  # most similar first; ties: earliest added first
        return [(self._ids[i], float(sims[i]), dict(self._payload[i])) for i in top]

    def _matrix(self, vectors: Any, n: int) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"expected {n} vector{'s' if n != 1 else ''} as an array of shape [{n}, dim], "
                             f"got shape {list(x.shape)}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(f"vectors have {x.shape[1]} dimensions but this index holds {self.dim}: "
                             "use the same embedder for every add and search")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"vector {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros: it has no direction "
                             "to compare by")
        return x / norms

"""The RAG filter's `VectorIndex` on the tracking database: past prompts and their scores are
stored as generations of one run (label "rag/prompt"), so retrieval goes through pgvector's HNSW
index on PostgreSQL and numpy on SQLite, and the prompts an optimizer has scored stay queryable
beside its trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reasoning_dspy.tracking.records import stable_id
from reasoning_dspy.tracking.tracker import Tracker

LABEL = "rag/prompt"


class TrackedPromptIndex:
    """`reasoning_dspy.rag.VectorIndex` backed by a `Tracker`: `add` records, `search` queries.

    >>> index = TrackedPromptIndex(tracker, tracker.start_run("prompts", kind="rag"))
    >>> PromptFilter(MiniLMEmbedder(), index=index)
    """

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id

    def add(self, ids: Sequence[str], vectors: np.ndarray, payload: Sequence[Mapping[str, Any]] | None = None) -> None:
        ids = list(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        payload = list(payload) if payload is not None else [{} for _ in ids]
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(payload) != len(ids):
            raise ValueError(f"add needs one vector and one payload per id: {len(ids)} ids, vectors of shape "
                             f"{vectors.shape}, {len(payload)} payloads")
        for key, vector, data in zip(ids, vectors, payload, strict=True):
            self.tracker.log_generation(self.run_id, str(data.get("prompt", key)), id=stable_id(self.run_id, LABEL, key),
                                        label=LABEL, prompt_embedding=vector, extra={**data, "index_id": key},
                                        replace=True)  # a prompt scored again keeps its latest score
        self.tracker.flush()  # searchable at once

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float, dict[str, Any]]]:
        matches = self.tracker.similar_prompts(np.asarray(vector, dtype=np.float32), k, run_id=self.run_id)
        return [(m.extra.get("index_id", m.id), 1.0 - m.distance, dict(m.extra)) for m in matches]

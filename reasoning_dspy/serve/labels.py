"""Human-readable labels for SAE features, read from the ReasonScore table (and its feature analysis).

A feature's label is the reasoning words whose windows it fires on most (`FeatureScores.top_words`),
e.g. "hmm/wait/let me", plus its kind (`features.kinds.feature_kind`: reflection, verification,
punctuation, single token, other) where a feature analysis (`analysis.json`) covers it. Without a ReasonScore table a
feature is labelled by its index only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from reasoning_dspy.features.analysis import FeatureReport
from reasoning_dspy.features.reasonscore import FeatureScores


class FeatureLabels:
    """`describe(i)` / `label(i)` for every feature of one SAE; thread-safe, computed on first use."""

    def __init__(self, scores: FeatureScores | None, analysis: Sequence[FeatureReport] = ()):
        self.scores = scores
        self._reports = {r.index: r for r in analysis}
        self._rank = {int(f): r for r, f in enumerate(scores.ranking.tolist(), start=1)} if scores is not None else {}
        self._cache: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def describe(self, feature: int) -> dict[str, Any]:
        """`{index, label, top_words, kind, rank, score, max_activation}` of one feature (JSON-ready)."""
        feature = int(feature)
        with self._lock:
            if feature in self._cache:
                return self._cache[feature]
        info: dict[str, Any] = {"index": feature, "label": f"#{feature}", "top_words": [], "kind": None,
                                "rank": None, "score": None, "max_activation": None}
        if self.scores is not None and 0 <= feature < self.scores.d_sae:
            words = [w for w, _ in self.scores.top_words(feature, 3)]
            info.update(top_words=words, rank=self._rank.get(feature),
                        score=float(self.scores.reason_score[feature]),
                        max_activation=float(self.scores.max_activation[feature]))
            report = self._reports.get(feature)
            if report is not None:
                from reasoning_dspy.features.kinds import feature_kind

                info["kind"] = feature_kind(report)
            info["label"] = "/".join(words) if words else f"#{feature}"
            if info["kind"] is not None:
                info["label"] += f" ({info['kind']})"
        with self._lock:
            self._cache[feature] = info
        return info

    def label(self, feature: int) -> str:
        return self.describe(feature)["label"]

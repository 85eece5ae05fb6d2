"""Bootstrap confidence intervals over problems, and the pooled word rate the reports plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap(columns: Sequence[np.ndarray], statistic: Callable[..., float], *, n_resamples: int = 2000,
              confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap over problems: the same resampled rows for every column, so paired
    statistics (a condition minus the baseline on the same problems) keep their pairing."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    columns = [np.asarray(c, dtype=float) for c in columns]
    n = len(columns[0])
    if n == 0 or any(len(c) != n for c in columns):
        raise ValueError(f"bootstrap needs equal, non-empty columns, got lengths {[len(c) for c in columns]}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_resamples, n))
    stats = np.array([statistic(*(c[row] for c in columns)) for row in index])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(float(statistic(*columns)), float(low), float(high))


def rate_per_100(words: np.ndarray, tokens: np.ndarray) -> float:
    """Reasoning words per 100 generated tokens, pooled over traces (a ratio of sums, so long traces
    weigh in proportion to their length)."""
    total = float(np.sum(tokens))
    return 100.0 * float(np.sum(words)) / total if total else 0.0

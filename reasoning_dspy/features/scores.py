"""`FeatureScores`: ReasonScore and per-feature statistics over a whole cache, and their files
(`scores.safetensors`, `features.json`, `features.csv`; the format is described in
`reasoning_dspy.features.reasonscore`)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json, atomic_write_text

SCORES_FILE = "scores.safetensors"
FEATURES_JSON = "features.json"
FEATURES_CSV = "features.csv"


@dataclass
class FeatureScores:
    """ReasonScore and per-feature statistics over a whole cache. Vectors are `[d_sae]`."""

    reason_score: Tensor
    mu_pos_by_group: Tensor  # [d_sae, n_groups]
    mu_pos: Tensor
    mu_neg: Tensor
    entropy: Tensor
    max_activation: Tensor  # over every cached token, unit-norm-decoder units: steering's f_max
    density: Tensor  # fraction of tokens with activation > 0
    selected: Tensor  # [n_selected] int64, best first
    threshold: float
    groups: list[str]
    group_token_counts: Tensor  # [n_groups] window tokens per group
    n_pos_tokens: int
    n_neg_tokens: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return int(self.reason_score.shape[0])

    @property
    def ranking(self) -> Tensor:
        """All feature indices, best ReasonScore first: `[d_sae]` int64."""
        return torch.argsort(self.reason_score, descending=True, stable=True)

    def top(self, n: int = 10) -> list[int]:
        return self.ranking[:n].tolist()

    def top_words(self, feature: int, n: int = 3) -> list[tuple[str, float]]:
        """The word groups whose windows feature `feature` fires on most: `[(word, mean activation)]`."""
        mu = self.mu_pos_by_group[feature]
        order = torch.argsort(mu, descending=True, stable=True)[:n]
        return [(self.groups[j], float(mu[j])) for j in order.tolist() if mu[j] > 0]

    def feature_rows(self, n: int | None = None) -> list[dict[str, Any]]:
        """One row per reported feature: every selected one, and at least the top `n` (default 10)."""
        n = max(len(self.selected), 10 if n is None else n)
        selected = set(self.selected.tolist())
        rows = []
        for rank, i in enumerate(self.ranking[: min(n, self.d_sae)].tolist(), start=1):
            rows.append({
                "index": i, "rank": rank, "score": float(self.reason_score[i]), "selected": i in selected,
                "max_activation": float(self.max_activation[i]), "density": float(self.density[i]),
                "mu_pos": float(self.mu_pos[i]), "mu_neg": float(self.mu_neg[i]),
                "entropy": float(self.entropy[i]),
                "top_words": [{"word": w, "mean_activation": a} for w, a in self.top_words(i, 5)],
            })
        return rows

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `scores.safetensors`, `features.json` and `features.csv` (format: module docstring)."""
        from safetensors.torch import save

        folder = Path(folder)
        tensors = {
            "reason_score": self.reason_score, "mu_pos": self.mu_pos, "mu_neg": self.mu_neg,
            "mu_pos_by_group": self.mu_pos_by_group, "entropy": self.entropy,
            "max_activation": self.max_activation, "density": self.density,
            "selected": self.selected.to(torch.int64), "ranking": self.ranking,
            "group_token_counts": self.group_token_counts.to(torch.int64),
        }
        atomic_write_bytes(folder / SCORES_FILE, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
        rows = self.feature_rows()
        settings = {**self.settings, "threshold": self.threshold, "d_sae": self.d_sae,
                    "n_selected": len(self.selected), "n_window_tokens": self.n_pos_tokens,
                    "n_other_tokens": self.n_neg_tokens}
        atomic_write_json(folder / FEATURES_JSON, {
            "format_version": 1, "settings": settings, "groups": self.groups,
            "group_token_counts": self.group_token_counts.tolist(), "features": rows,
        })
        buf = io.StringIO()
        columns = ["rank", "index", "score", "selected", "max_activation", "density", "mu_pos", "mu_neg",
                   "entropy", "top_words"]
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            words = ";".join(f"{w['word']}:{w['mean_activation']:.4g}" for w in row["top_words"])
            writer.writerow({**{k: row[k] for k in columns[:-1]}, "top_words": words})
        atomic_write_text(folder / FEATURES_CSV, buf.getvalue())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FeatureScores:
        """Read a folder written by `save`."""
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (SCORES_FILE, FEATURES_JSON):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} holds no feature scores: {name} is missing "
                                        "(write them with `reasoning-dspy score`)")
        from safetensors import SafetensorError

        try:
            t = load_file(folder / SCORES_FILE)
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{str(folder / SCORES_FILE)!r} is not a readable safetensors file ({err}); "
                             "write the scores again with `reasoning-dspy score`") from None
        try:
            meta = json.loads((folder / FEATURES_JSON).read_text(encoding="utf-8"))
            settings = dict(meta["settings"])
            threshold, groups = float(settings["threshold"]), list(meta["groups"])
            n_pos, n_neg = int(settings["n_window_tokens"]), int(settings["n_other_tokens"])
        except (ValueError, KeyError, TypeError) as err:  # JSON and UTF-8 errors are ValueErrors
            raise ValueError(f"{str(folder / FEATURES_JSON)!r} is not a ReasonScore table ({type(err).__name__}: "
                             f"{err}); write the scores again with `reasoning-dspy score`") from None
        missing = [k for k in _SCORE_TENSORS if k not in t]
        if missing:
            raise ValueError(f"{str(folder / SCORES_FILE)!r} lacks the tensors {missing}; write the scores again "
                             "with `reasoning-dspy score`")
        for key in ("threshold", "d_sae", "n_selected", "n_window_tokens", "n_other_tokens"):
            settings.pop(key, None)
        return cls(
            reason_score=t["reason_score"], mu_pos_by_group=t["mu_pos_by_group"], mu_pos=t["mu_pos"],
            mu_neg=t["mu_neg"], entropy=t["entropy"], max_activation=t["max_activation"], density=t["density"],
            selected=t["selected"], threshold=threshold, groups=groups, group_token_counts=t["group_token_counts"],
            n_pos_tokens=n_pos, n_neg_tokens=n_neg, settings=settings,
        )


_SCORE_TENSORS = ("reason_score", "mu_pos_by_group", "mu_pos", "mu_neg", "entropy", "max_activation", "density",
                  "selected", "group_token_counts")

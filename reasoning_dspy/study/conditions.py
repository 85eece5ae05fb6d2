"""Steering conditions of the study: the top ReasonScore features over a strength sweep, random
features matched to them in density and f_max, and negative strength.

With residual-relative strength units every condition at the same strength adds a perturbation of
the same norm, so the random controls differ from the top features in direction only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from reasoning_dspy.features.reasonscore import FeatureScores


@dataclass(frozen=True)
class Condition:
    """One arm of the study: which features, at what strength (None = the unsteered baseline)."""

    name: str
    kind: str  # "baseline" | "top" | "random" | "negative"
    features: tuple[int, ...] = ()
    strength: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, data: dict) -> Condition:
        return cls(data["name"], data["kind"], tuple(data["features"]), float(data["strength"]))

    def steering(self, units: str, layer: int | None, **window: int | None) -> Any:
        """The `SteeringSpec` this condition applies (None for the baseline). Each feature's γ: in
        residual units the perturbation's size is ‖γ‖₂, so m features at s/√m add a perturbation of
        norm s·‖x‖ whatever m is; in f_max units each feature gets s. `window`: the spec's token
        window (`tokens`, `skip_tokens`, `skip_lines`; none given: every position)."""
        from reasoning_dspy.steering import SteeringSpec

        if self.kind == "baseline":
            return None
        gamma = self.strength / len(self.features) ** 0.5 if units == "residual" else self.strength
        return SteeringSpec(features=dict.fromkeys(self.features, gamma), units=units, layer=layer, **window)


def pick_top_features(scores: FeatureScores, n: int, density_cap: float | None = None) -> list[int]:
    """The `n` best features by ReasonScore that fire at all, skipping those denser than
    `density_cap` (our extension: very dense features are usually punctuation or token identity)."""
    chosen = []
    for i in scores.ranking.tolist():
        density = float(scores.density[i])
        if density <= 0 or (density_cap is not None and density > density_cap):
            continue
        chosen.append(i)
        if len(chosen) == n:
            return chosen
    cap = f" with density <= {density_cap}" if density_cap is not None else ""
    raise ValueError(f"only {len(chosen)} live features{cap} to steer, but top_features={n}")


def matched_random_features(scores: FeatureScores, targets: list[int], *, exclude: int, seed: int,
                            pool: int = 10) -> list[int]:
    """For each target feature, a random feature with similar density and f_max: drawn from the
    `pool` nearest in (log density, log f_max) among live features outside the top `exclude` by
    ReasonScore, without repeats."""
    density = scores.density.double().clamp_min(1e-12).log()
    fmax = scores.max_activation.double().clamp_min(1e-12).log()
    banned = set(scores.ranking[:exclude].tolist()) | set(targets)
    live = torch.nonzero(scores.density > 0).flatten().tolist()
    candidates = np.array([i for i in live if i not in banned])
    if len(candidates) < len(targets):
        raise ValueError(f"only {len(candidates)} live features outside the top {exclude} to draw random controls from")
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for t in targets:
        distance = (density[candidates] - density[t]).abs() + (fmax[candidates] - fmax[t]).abs()
        order = [int(candidates[j]) for j in torch.argsort(distance).tolist() if int(candidates[j]) not in picked]
        picked.append(int(rng.choice(order[:pool])))
    return picked


def build_conditions(scores: FeatureScores, *, top_features: int, strengths: list[float],
                     negative_strengths: list[float], random_sets: int, density_cap: float | None,
                     seed: int) -> list[Condition]:
    """Baseline, then top features at each strength, matched random sets at each strength, and
    the top features at each negative strength."""
    top = tuple(pick_top_features(scores, top_features, density_cap))
    conditions = [Condition("baseline", "baseline")]
    conditions += [Condition(f"top@{s:g}", "top", top, s) for s in strengths]
    for r in range(random_sets):
        # one matched set per r, reused across strengths so the sweep varies strength only
        random = tuple(matched_random_features(scores, list(top), exclude=max(100, 10 * top_features),
                                               seed=seed + r))
        conditions += [Condition(f"random{r}@{s:g}", "random", random, s) for s in strengths]
    conditions += [Condition(f"top@{s:g}", "negative", top, s) for s in negative_strengths]
    return conditions

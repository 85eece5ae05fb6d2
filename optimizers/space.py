"""What the optimizer searches: an instruction, and steering (which top features, how strong, add or clamp).

`SearchSpace.suggest` asks an optuna trial for one `Candidate`, define-by-run: the steering
parameters exist only when the trial steers at all, and the strength range depends on the mode.
`SearchSpace.distributions` rebuilds the distributions of recorded parameters, so a resumed run can
hand its finished trials back to optuna exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasoning_dspy.steering import SteeringSpec

Mode = Literal["add", "clamp"]


class Candidate(BaseModel):
    """One point of the search: the instruction and the steering (no features: no steering).

    `strength` is per feature: in multiples of the residual norm split over the features
    (`add`, units='residual', so the total ‖γ‖₂ equals `strength` whatever the number of features),
    or in multiples of each feature's f_max (`clamp`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instruction: str
    features: tuple[int, ...] = ()
    strength: float = 0.0
    mode: Mode = "add"
    layer: int | None = None
    tokens: int | None = None  # the steering's token window (`SteeringSpec.tokens`); None: every position
    skip_lines: int = 0  # the window opens after the answer's first lines (`SteeringSpec.skip_lines`)

    def steering(self) -> SteeringSpec | None:
        """The `SteeringSpec` this candidate applies (None when it does not steer)."""
        if not self.features or self.strength == 0:
            return None
        if self.mode == "clamp":
            return SteeringSpec(features=dict.fromkeys(self.features, self.strength), mode="clamp", units="fmax",
                                layer=self.layer, tokens=self.tokens, skip_lines=self.skip_lines)
        per_feature = self.strength / len(self.features) ** 0.5
        return SteeringSpec(features=dict.fromkeys(self.features, per_feature), mode="add", units="residual",
                            layer=self.layer, tokens=self.tokens, skip_lines=self.skip_lines)

    def steering_label(self) -> str:
        """The steering in a few words, with its features: 'add 0.094 on 1649' ('none' without)."""
        if not self.features:
            return "none"
        window = (f", {self.tokens} tokens after {self.skip_lines} lines" if self.tokens and self.skip_lines else
                  f", first {self.tokens} tokens" if self.tokens else
                  f", after {self.skip_lines} lines" if self.skip_lines else "")
        return f"{self.mode} {self.strength:.3g} on {', '.join(map(str, self.features))}{window}"

    def label(self) -> str:
        steer = (f"top {len(self.features)} {self.mode} {self.strength:g}" if self.steering() else "no steering")
        return f"{self.instruction!r} + {steer}"


class SearchSpace(BaseModel):
    """Instructions (by index into the pool) and steering of the top ReasonScore features.

    `n_features` lists how many of `features` (best first) a trial may steer; 0 means none.
    """

    model_config = ConfigDict(extra="forbid")

    instructions: list[str] = Field(min_length=1)
    features: list[int] = Field(default_factory=list, description="candidate features, best ReasonScore first")
    n_features: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    modes: list[Mode] = Field(default_factory=lambda: ["add"])
    add_strength: tuple[float, float] = (0.05, 0.3)
    clamp_strength: tuple[float, float] = (0.5, 3.0)
    layer: int | None = None
    tokens: int | None = Field(None, ge=1, description="every candidate's steering token window (None: all positions)")
    skip_lines: int = Field(0, ge=0, description="every candidate's window opens after the answer's first lines")

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if any(n < 0 or n > len(self.features) for n in self.n_features):
            raise ValueError(f"n_features {self.n_features} must lie in 0..{len(self.features)} "
                             f"(the number of candidate features)")
        for name, (low, high) in (("add_strength", self.add_strength), ("clamp_strength", self.clamp_strength)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        return self

    @property
    def steers(self) -> bool:
        return any(n > 0 for n in self.n_features)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        dists: dict[str, Any] = {"instruction": optuna.distributions.CategoricalDistribution(
            list(range(len(self.instructions))))}
        if self.steers:
            dists["n_features"] = optuna.distributions.CategoricalDistribution(sorted(set(self.n_features)))
            dists["mode"] = optuna.distributions.CategoricalDistribution(list(self.modes))
            dists["add_strength"] = optuna.distributions.FloatDistribution(*self.add_strength)
            dists["clamp_strength"] = optuna.distributions.FloatDistribution(*self.clamp_strength)
        return dists

    def suggest(self, trial: optuna.trial.BaseTrial) -> Candidate:
        instruction = self.instructions[trial.suggest_categorical("instruction", list(range(len(self.instructions))))]
        if not self.steers:
            return Candidate(instruction=instruction, layer=self.layer)
        n = trial.suggest_categorical("n_features", sorted(set(self.n_features)))
        if n == 0:
            return Candidate(instruction=instruction, layer=self.layer)
        mode = trial.suggest_categorical("mode", list(self.modes)) if len(self.modes) > 1 else self.modes[0]
        low, high = self.add_strength if mode == "add" else self.clamp_strength
        strength = trial.suggest_float(f"{mode}_strength", low, high)
        return Candidate(instruction=instruction, features=tuple(self.features[:n]), strength=round(strength, 4),
                         mode=mode, layer=self.layer, tokens=self.tokens, skip_lines=self.skip_lines)

    def params_of(self, candidate: Candidate) -> dict[str, Any]:
        """The optuna parameters that produce `candidate` (to enqueue the baseline, or replay one)."""
        params: dict[str, Any] = {"instruction": self.instructions.index(candidate.instruction)}
        if self.steers:
            params["n_features"] = len(candidate.features)
            if candidate.features:
                if len(self.modes) > 1:
                    params["mode"] = candidate.mode
                params[f"{candidate.mode}_strength"] = candidate.strength
        return params


def feature_indices(features: Sequence[int], d_sae: int) -> list[int]:
    """Check feature indices against the SAE width, with the message users need."""
    bad = [f for f in features if not 0 <= int(f) < d_sae]
    if bad:
        raise ValueError(f"feature indices {bad[:5]} are outside the SAE (d_sae={d_sae}: valid 0..{d_sae - 1})")
    return [int(f) for f in features]

"""What to steer: `SteeringSpec` (features, strengths, mode, units, layer), checked on its own
before any model is involved."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)


class SteeringError(ValueError):
    """A steering spec does not fit the model or SAE it is applied to."""


#: Largest |γ| a spec accepts. γ is in multiples of a feature's largest activation, so beyond this the
#: added direction dwarfs anything the feature produces (and can overflow a half-precision model).
MAX_STRENGTH = 1000.0

#: Largest |γ| and α a residual-units spec accepts: beyond ten times the residual's own norm the
#: original signal is gone, whatever the direction.
MAX_RESIDUAL_STRENGTH = 10.0

Units = Literal["fmax", "residual"]


class SteeringSpec(BaseModel):
    """What to steer: SAE features with strengths (γ), or a raw residual-space vector.

    Serialises to plain JSON, so it travels in DSPy's `metadata={"steering": spec.model_dump()}` and
    becomes part of DSPy's cache key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: dict[int, float] = Field(
        default_factory=dict, description="SAE feature index -> strength γ, in the spec's units"
    )
    vector: list[float] | None = Field(None, description="raw residual-space direction added as is (add mode only)")
    layer: int | None = Field(None, description="decoder layer to steer; None = the SAE's hook_layer")
    mode: Literal["add", "clamp"] = Field("add", description="add: x + γ f_max W_dec,i; clamp: set f_i = γ f_max")
    units: Units = Field(
        "fmax", description="fmax: γ in multiples of each feature's f_max; residual (add only): each token moves "
                            "by ‖γ‖₂·‖x_t‖ along Σ γ_i W_dec,i (+ vector)",
    )
    tokens: int | None = Field(
        None, ge=1, description="steer only the positions that predict the first `tokens` generated tokens, "
                                "not the prompt before them (None: every position, the prompt's included); a "
                                "decision made early in a trace is steered, the question and the work after it "
                                "are not",
    )
    skip_tokens: int = Field(
        0, ge=0, description="leave the positions that predict the first `skip_tokens` generated tokens "
                             "unsteered, and steer from there on (with `tokens`: the `tokens` after them); a "
                             "trace's fixed opening, such as DSPy's `[[ ## reasoning ## ]]` field header, is "
                             "then written as the model would write it",
    )
    skip_lines: int = Field(
        0, ge=0, description="leave every position unsteered until the model has ended `skip_lines` lines of "
                             "its answer, and steer from there on (with `tokens`: the `tokens` after them); "
                             "unlike `skip_tokens` it finds a trace's fixed opening whatever its length, such as "
                             "DSPy's field header and an instruction the model restates on the next line",
    )

    @field_validator("features")
    @classmethod
    def _check_features(cls, value: dict[int, float]) -> dict[int, float]:
        for index, strength in value.items():
            if index < 0:
                raise ValueError(f"feature indices must be >= 0, got {index}")
            if not torch.isfinite(torch.tensor(float(strength))):
                raise ValueError(f"strength of feature {index} must be finite, got {strength}")
        return dict(sorted(value.items()))

    @field_validator("vector")
    @classmethod
    def _check_vector(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            bad = [i for i, v in enumerate(value) if not math.isfinite(v)]
            if bad:
                raise ValueError(f"the steering vector must be finite, but entries {bad[:5]} are NaN or inf")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> SteeringSpec:
        if self.skip_tokens and self.skip_lines:
            raise ValueError(
                f"give skip_tokens ({self.skip_tokens}) or skip_lines ({self.skip_lines}), not both: each says "
                "where the token window opens"
            )
        if self.mode == "clamp" and self.vector is not None:
            raise ValueError("a raw vector can only be added (mode='add'); clamp works on SAE features")
        if self.mode == "clamp" and self.units == "residual":
            raise ValueError(
                "clamp sets a feature's activation, which is measured in f_max units: use units='fmax' with "
                "mode='clamp', or mode='add' with units='residual'"
            )
        limit, unit = ((MAX_STRENGTH, "multiples of the feature's largest activation f_max") if self.units == "fmax"
                       else (MAX_RESIDUAL_STRENGTH, "multiples of the residual norm ‖x‖ (units='residual')"))
        for index, strength in self.features.items():
            if abs(strength) > limit:
                raise ValueError(
                    f"strength {strength:g} of feature {index} is out of range: |γ| must be at most {limit:g} "
                    f"(γ is in {unit})"
                )
        if self.units == "residual" and self.residual_strength > MAX_RESIDUAL_STRENGTH:
            raise ValueError(
                f"the total strength α = ‖γ‖₂ = {self.residual_strength:g} is out of range: with units='residual' "
                f"it must be at most {MAX_RESIDUAL_STRENGTH:g} (each token moves by α times its norm; "
                "0.05-0.5 is a useful range)"
            )
        return self

    @classmethod
    def from_features(
        cls, features: Iterable[int], strength: float = 2.0, *, mode: Literal["add", "clamp"] = "add",
        layer: int | None = None, units: Units = "fmax",
    ) -> SteeringSpec:
        """The same strength γ for every feature in `features` (the paper's setting).

        With `units="residual"` and m features, each token moves by α = γ·√m times its norm."""
        return cls(features={int(i): float(strength) for i in features}, mode=mode, layer=layer, units=units)

    @property
    def residual_strength(self) -> float:
        """α = √(Σ γ_i² + ‖vector‖²): with `units="residual"`, each steered token moves by α·‖x_t‖."""
        return math.sqrt(sum(g * g for g in self.features.values()) + sum(v * v for v in self.vector or ()))

    @property
    def is_noop(self) -> bool:
        """True when applying the spec cannot change anything (no features, no vector)."""
        return not self.features and self.vector is None

    @model_serializer(mode="wrap")
    def _omit_default_units(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """f_max units and an unlimited token window that skips nothing are left out of the dump, so such a
        spec serialises (and keys DSPy's cache and fingerprints) exactly as it did before they existed."""
        data = handler(self)
        if self.units == "fmax":
            data.pop("units", None)
        if self.tokens is None:
            data.pop("tokens", None)
        if self.skip_tokens == 0:
            data.pop("skip_tokens", None)
        if self.skip_lines == 0:
            data.pop("skip_lines", None)
        return data

    @property
    def steers_prompt(self) -> bool:
        """True when the prompt's positions are steered too (no token window and nothing skipped)."""
        return self.tokens is None and self.skip_tokens == 0 and self.skip_lines == 0

    def fingerprint(self) -> str:
        """A stable short hash of the spec (for cache keys and model names)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def as_spec(value: SteeringSpec | dict | None) -> SteeringSpec | None:
    """Coerce a spec given as a dict (e.g. from DSPy metadata) with a clear error; None/{} -> None."""
    if value is None or isinstance(value, SteeringSpec):
        return None if value is None or value.is_noop else value
    if isinstance(value, str) and value.lower() in {"off", "none", "baseline"}:
        return None
    if not isinstance(value, dict):
        raise SteeringError(
            f"steering must be a SteeringSpec, a dict such as {{'features': {{12: 2.0}}}} or None, "
            f"got {type(value).__name__}"
        )
    try:
        spec = SteeringSpec.model_validate(value)
    except Exception as err:  # pydantic's message lists every bad field
        raise SteeringError(f"invalid steering spec {value!r}: {err}") from None
    return None if spec.is_noop else spec

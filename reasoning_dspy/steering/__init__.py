"""Steer a model with SAE features: what to add (`SteeringSpec`) and the hooks that add it (`Steerer`).

Two modes, both applied to the residual stream after decoder layer L at *every* position — the
prompt and each KV-cached decode step (a length-1 forward), so nothing here depends on absolute
positions:

- `add` (Galichin et al. 2025): `x' = x + Σ_i γ_i · f_i^max · W_dec,i` (+ an optional raw vector).
- `clamp` (the paper's official code): encode, set `f_i = γ_i · f_i^max`, decode, and add the SAE's
  reconstruction error back, which reduces to `x' = x + Σ_i (γ_i f_i^max − f_i(x)) · W_dec,i`.

`f_i^max` is feature i's largest activation on the reference corpus (ReasonScore records it), so
γ is in units of "the strongest this feature ever fires". The SAE is read through its unit-norm view
(`SAE.unit_norm_view()`: trained latents times ‖W_dec,i‖, decoder rows of unit norm), the units
ReasonScore's activations use; `f · W_dec` and which latents fire are the trained SAE's.

On a small model a few features at γ ≈ 1 already move the residual by more than half its norm, so
`add` also takes strengths relative to the residual itself (`units="residual"`):

    x'_t = x_t + α · ‖x_t‖ · d / ‖d‖,   d = Σ_i γ_i · W_dec,i (+ the raw vector),   α = ‖γ‖₂ = √(Σ_i γ_i²)

Every steered token moves by exactly α times its own norm, in the direction the strengths mix. With
one feature α = |γ|; with orthogonal decoder rows this is `Σ_i γ_i ‖x_t‖ W_dec,i`, i.e. f_max replaced
by the token's norm. It is computed per token from the residual it steers, so it needs no f_max and
no calibration text, and it follows layers and tokens whose norms differ. A raw vector counts as one
more direction whose strength is its norm. The steerer records how far it moved each row
(`Steerer.perturbations`: mean ‖δ‖ and ‖δ‖/‖x‖), in either units.

A batch may mix specs: each row gets its own `[d]` delta (zeros for unsteered rows, which are then
bit-for-bit unchanged), so steered and unsteered requests share one batched forward.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
from torch import Tensor, nn

from reasoning_dspy.features.activation import ActivationReport
from reasoning_dspy.models import ModelSpec, layer_output, replace_layer_output
from reasoning_dspy.models import model_spec as get_model_spec
from reasoning_dspy.sae import SAE


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
        """f_max units are left out of the dump, so an f_max spec serialises (and keys DSPy's cache and
        fingerprints) exactly as it did before units existed."""
        data = handler(self)
        if self.units == "fmax":
            data.pop("units", None)
        return data

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


# -- f_max ------------------------------------------------------------------------------------

def load_max_activation(source: Any, d_sae: int | None = None) -> Tensor:
    """Per-feature max activation `[d_sae]` from a tensor, a sequence, an object with
    `.max_activation` (a ReasonScore result), or a folder/file holding `scores.safetensors`."""
    if hasattr(source, "max_activation"):
        source = source.max_activation
    where = "max_activation"
    if isinstance(source, (str, os.PathLike)):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(source)
        file = path / "scores.safetensors" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no max activations at {file}: expected a ReasonScore folder with scores.safetensors")
        try:
            tensors = load_file(str(file))
        except (SafetensorError, OSError) as err:
            raise SteeringError(f"cannot read max activations from {file}: {err}; expected a safetensors file "
                                "(a ReasonScore folder's scores.safetensors)") from None
        if "max_activation" not in tensors:
            raise KeyError(f"{file} holds {sorted(tensors)} but no 'max_activation' tensor")
        source, where = tensors["max_activation"], f"max_activation in {file}"
    fmax = torch.as_tensor(source, dtype=torch.float32).detach().cpu().flatten()
    if d_sae is not None and fmax.numel() != d_sae:
        raise SteeringError(f"max_activation has {fmax.numel()} entries but the SAE has d_sae={d_sae}")
    _check_finite_fmax(fmax, torch.arange(fmax.numel()), where)
    return fmax


def _check_finite_fmax(fmax: Tensor, features: Tensor, where: str = "max_activation") -> None:
    """Raise `SteeringError` if f_max of any of `features` is NaN or inf."""
    bad = features[~torch.isfinite(fmax[features])].tolist()
    if bad:
        raise SteeringError(
            f"{where} is NaN or inf for {len(bad)} feature(s) (e.g. {bad[:5]}); f_max must be finite: "
            "recompute it with `reasoning-dspy score` or reasoning_dspy.steering.compute_max_activation"
        )


@torch.no_grad()
def compute_max_activation(sae: SAE, acts: Tensor | Iterable[Tensor], *, batch_size: int = 4096) -> Tensor:
    """f_max per feature `[d_sae]` over activations `[n, d_in]` (or an iterable of such batches,
    e.g. `cache.iter_shards(("acts",))`), in unit-norm-decoder units like ReasonScore's."""
    view = sae.unit_norm_view()
    fmax = torch.zeros(sae.d_sae)
    batches = [acts] if isinstance(acts, Tensor) else acts
    for batch in batches:
        batch = batch["acts"] if isinstance(batch, dict) else batch
        for start in range(0, batch.shape[0], batch_size):
            chunk = batch[start : start + batch_size].to(view.W_enc.dtype)
            fmax = torch.maximum(fmax, view.encode(chunk).amax(0).float().cpu())
    return fmax


@torch.no_grad()
def estimate_max_activation(
    model: nn.Module, tokenizer: Any, sae: SAE, prompts: Sequence[str] | None = None, *,
    layer: int | None = None, batch_size: int = 16, max_length: int = 256,
) -> Tensor:
    """f_max `[d_sae]` measured on `prompts` (default: the bundled prompts) when no ReasonScore result
    is at hand. Tokens are chosen exactly as in the activation cache (`iter_residuals`)."""
    from reasoning_dspy.activations import iter_residuals
    from reasoning_dspy.prompts import load_prompts

    layer = layer if layer is not None else sae.cfg.hook_layer
    if layer is None:
        raise SteeringError("the SAE records no hook_layer: pass layer= to estimate_max_activation")
    prompts = list(prompts) if prompts is not None else load_prompts("bundled", limit=64)
    batches = iter_residuals(model, tokenizer, prompts, layer, batch_size=batch_size, max_length=max_length)
    return compute_max_activation(sae, (tokens["acts"].float().cpu() for _, _, tokens in batches))


# -- resolution: spec -> per-row tensors ----------------------------------------------------

@dataclass
class RowSteering:
    """A spec resolved against a model and SAE: what one batch row needs at one layer."""

    layer: int
    add: Tensor | None = None  # [d_model] float32, added at every position
    add_relative: Tensor | None = None  # [d_model] float32 of norm α; ‖x_t‖ times it is added at position t
    clamp_features: Tensor | None = None  # [m] long
    clamp_targets: Tensor | None = None  # [m] float32, γ f_max per feature


def resolve(
    spec: SteeringSpec, *, d_model: int, n_layers: int, sae: SAE | None = None,
    max_activation: Tensor | None = None,
) -> RowSteering:
    """Check `spec` against the model/SAE and turn it into tensors. `sae` must be the unit-norm view
    (`SAE.unit_norm_view()`), so γ · f_max multiplies a unit-norm decoder row. Residual units need
    no `max_activation`."""
    if spec.features and sae is None:
        raise SteeringError("feature steering needs an SAE: pass sae= to the engine (or steer with a raw vector)")
    layer = spec.layer if spec.layer is not None else (sae.cfg.hook_layer if sae is not None else None)
    if layer is None:
        where = "the SAE records no hook_layer" if sae is not None else "there is no SAE to take it from"
        raise SteeringError(f"the steering spec has no layer and {where}: set SteeringSpec(layer=...)")
    if not -n_layers <= layer < n_layers:
        raise SteeringError(f"steering layer {layer} is out of range for a model with {n_layers} layers")
    layer %= n_layers
    row = RowSteering(layer=layer)
    if spec.features:
        if sae.cfg.hook_layer is not None and sae.cfg.hook_layer % n_layers != layer:
            raise SteeringError(
                f"the SAE reads layer {sae.cfg.hook_layer} but the spec steers layer {layer}; "
                "feature directions only mean something at the SAE's own layer (drop layer= from the spec)"
            )
        bad = [i for i in spec.features if i >= sae.d_sae]
        if bad:
            raise SteeringError(f"feature indices {bad} are out of range for an SAE with d_sae={sae.d_sae}")
        if max_activation is None and spec.units == "fmax":
            raise SteeringError(
                "feature steering scales by each feature's max activation f_max: pass max_activation= "
                "(a [d_sae] tensor, a ReasonScore result or its folder), or compute it with "
                "reasoning_dspy.steering.compute_max_activation(sae, acts)"
            )
        idx = torch.tensor(list(spec.features), dtype=torch.long)
        gamma = torch.tensor(list(spec.features.values()), dtype=torch.float32)
        w = sae.W_dec.detach()[idx.to(sae.W_dec.device)].float().cpu()  # [m, d]
        if spec.units == "residual":
            row.add_relative = gamma @ w  # the direction only; scaled to α below
        else:
            _check_finite_fmax(max_activation, idx)
            targets = gamma * max_activation[idx]
            if spec.mode == "add":
                row.add = targets @ w
            else:
                row.clamp_features, row.clamp_targets = idx, targets
    if spec.vector is not None:
        vec = torch.tensor(spec.vector, dtype=torch.float32)
        if vec.numel() != d_model:
            raise SteeringError(f"steering vector has {vec.numel()} entries but the model's d_model is {d_model}")
        if spec.units == "residual":
            row.add_relative = vec if row.add_relative is None else row.add_relative + vec
        else:
            row.add = vec if row.add is None else row.add + vec
    if row.add_relative is not None:
        row.add_relative = _scaled_direction(row.add_relative, spec.residual_strength)
    for name, delta in (("added direction", row.add), ("clamp targets", row.clamp_targets)):
        if delta is not None and not bool(torch.isfinite(delta).all()):
            raise SteeringError(
                f"the steering {name} overflows float32 (γ · f_max · W_dec is NaN or inf); lower the "
                "strengths or check the SAE's weights and f_max"
            )
    return row


def _scaled_direction(direction: Tensor, alpha: float) -> Tensor:
    """`direction` rescaled to norm α (zeros when α = 0): what `‖x_t‖` multiplies in residual units."""
    if alpha == 0:
        return torch.zeros_like(direction)
    norm = float(direction.norm())
    if not math.isfinite(norm) or norm <= 1e-6 * alpha:
        raise SteeringError(
            f"the steering directions cancel out (‖Σ γ_i W_dec,i‖ = {norm:.3g} for α = {alpha:g}), so residual "
            "units have no direction to scale; change the strengths' signs or drop a feature"
        )
    return direction * (alpha / norm)


# -- activation capture ---------------------------------------------------------------------

@dataclass
class CaptureConfig:
    """Record SAE latents of the positions that predict generated tokens, in the same forward."""

    sae: SAE  # its unit-norm view (SAE.unit_norm_view()), the units of f_max
    layer: int
    k: int = 10  # k of the top-k |f| mean (features.activation.topk_activation_mean)
    top: int = 32  # strongest latents kept per token, for "top features"


@dataclass
class _CaptureBuffer:
    steps_topk: list[Tensor] = field(default_factory=list)  # each [B, k]
    steps_feat: list[Tensor] = field(default_factory=list)  # each [B]
    steps_top_vals: list[Tensor] = field(default_factory=list)  # each [B, top]
    steps_top_idx: list[Tensor] = field(default_factory=list)  # each [B, top]


@dataclass
class Perturbation:
    """How far steering moved one row's residual, averaged over the positions that predicted its
    generated tokens (the prompt's last position and each decode step, the final EOS included)."""

    n_tokens: int
    norm: float  # mean ‖δ_t‖, δ_t = steered − unsteered residual at the steered layer
    ratio: float  # mean ‖δ_t‖ / ‖x_t‖

    def to_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "norm": self.norm, "ratio": self.ratio}


# -- hooks ----------------------------------------------------------------------------------

@dataclass
class _LayerPlan:
    add: Tensor | None = None  # [B, d] or None when no row adds anything
    relative: Tensor | None = None  # [B, d] residual-units directions of norm α, times ‖x_t‖ per token
    clamp_idx: Tensor | None = None  # [m] union of clamped features
    clamp_targets: Tensor | None = None  # [B, m]
    clamp_mask: Tensor | None = None  # [B, m] 1 where the row clamps that feature


class Steerer:
    """Forward hooks that steer each batch row by its own spec; they exist only inside `with`.

    >>> with Steerer(model, [row, None], sae=view) as steerer:   # row 0 steered, row 1 not
    ...     model.generate(ids, attention_mask=mask, max_new_tokens=32)

    `rows` holds one `RowSteering` (or None) per batch row. With `capture`, the hook also encodes the
    (pre-steering) residual at the last position of every forward — the positions that predict the
    generated tokens — and `steerer.reports(lengths)` summarises them per row afterwards. At those
    positions it always records the size of the steering delta: `steerer.perturbations(lengths)`.
    """

    def __init__(
        self,
        model: nn.Module,
        rows: Sequence[RowSteering | None],
        *,
        sae: SAE | None = None,
        capture: CaptureConfig | None = None,
        capture_features: Sequence[Sequence[int]] | None = None,
        model_spec: ModelSpec | None = None,
    ):
        self.model = model
        self.model_spec = model_spec or get_model_spec(model)
        self.rows = list(rows)
        self.sae = sae
        self.capture = capture
        self._handles: list[Any] = []
        self._buffer = _CaptureBuffer()
        self._moved: dict[int, list[tuple[Tensor, Tensor]]] = {}  # layer -> per forward (‖δ‖ [B], ‖x‖ [B])
        self._feat_idx, self._feat_w = self._feature_weights(capture_features)
        self._plans = self._build_plans()
        needs_sae = any(p.clamp_idx is not None for p in self._plans.values())
        if needs_sae and sae is None:
            raise SteeringError("clamp steering needs the SAE: pass sae= to Steerer")

    def _feature_weights(self, per_row: Sequence[Sequence[int]] | None) -> tuple[Tensor | None, Tensor | None]:
        """Union of every row's reasoning features `[u]` and per-row averaging weights `[B, u]`."""
        if self.capture is None or not per_row or not any(per_row):
            return None, None
        if len(per_row) != len(self.rows):
            raise SteeringError(f"capture_features has {len(per_row)} entries for {len(self.rows)} rows")
        union = sorted({int(f) for feats in per_row for f in feats})
        bad = [f for f in union if not 0 <= f < self.capture.sae.d_sae]
        if bad:
            raise SteeringError(f"reasoning features {bad} are out of range for an SAE with d_sae={self.capture.sae.d_sae}")
        pos = {f: j for j, f in enumerate(union)}
        weights = torch.zeros(len(per_row), len(union))
        for b, feats in enumerate(per_row):
            for f in set(int(x) for x in feats):
                weights[b, pos[f]] = 1.0 / len(set(feats))
        return torch.tensor(union, dtype=torch.long), weights

    def _build_plans(self) -> dict[int, _LayerPlan]:
        batch, d = len(self.rows), self.model_spec.d_model
        plans: dict[int, _LayerPlan] = {}
        for b, row in enumerate(self.rows):
            if row is None:
                continue
            plan = plans.setdefault(row.layer, _LayerPlan())
            if row.add is not None:
                if plan.add is None:
                    plan.add = torch.zeros(batch, d)
                plan.add[b] += row.add
            if row.add_relative is not None:
                if plan.relative is None:
                    plan.relative = torch.zeros(batch, d)
                plan.relative[b] += row.add_relative
        for layer, plan in plans.items():
            clamped = [(b, r) for b, r in enumerate(self.rows)
                       if r is not None and r.layer == layer and r.clamp_features is not None]
            if not clamped:
                continue
            union = sorted({int(i) for _, r in clamped for i in r.clamp_features})
            pos = {f: j for j, f in enumerate(union)}
            plan.clamp_idx = torch.tensor(union, dtype=torch.long)
            plan.clamp_targets = torch.zeros(batch, len(union))
            plan.clamp_mask = torch.zeros(batch, len(union))
            for b, r in clamped:
                for f, t in zip(r.clamp_features.tolist(), r.clamp_targets.tolist(), strict=True):
                    plan.clamp_targets[b, pos[f]] = t
                    plan.clamp_mask[b, pos[f]] = 1.0
        if self.capture is not None:
            plans.setdefault(self.model_spec.check_layer(self.capture.layer), _LayerPlan())
        return plans

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Steerer:
        try:
            for layer, plan in self._plans.items():
                device = next(self.model_spec.layer(layer).parameters()).device
                plan = _to_device(plan, device)
                self._plans[layer] = plan
                self._handles.append(self.model_spec.layer(layer).register_forward_hook(self._make_hook(layer, plan)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    # -- the hook ---------------------------------------------------------------------------
    def _make_hook(self, layer: int, plan: _LayerPlan):
        capture = self.capture if self.capture is not None and self.capture.layer % self.model_spec.n_layers == layer else None
        sae = self.sae

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            x = layer_output(output)  # [B, T, d]
            if x.shape[0] != len(self.rows):
                raise SteeringError(
                    f"Steerer was built for a batch of {len(self.rows)} rows but layer {layer} saw {x.shape[0]}; "
                    "give one RowSteering (or None) per row"
                )
            if capture is not None:
                self._record(capture, x[:, -1, :])
            new = x
            if plan.add is not None:
                new = new + plan.add.to(x.dtype)[:, None, :]
            if plan.relative is not None:
                norm = x.float().norm(dim=-1, keepdim=True)  # [B, T, 1]
                new = new + (norm * plan.relative[:, None, :]).to(x.dtype)
            if plan.clamp_idx is not None:
                f = sae.encode(x.to(sae.W_enc.dtype))[..., plan.clamp_idx]  # [B, T, m]
                coef = plan.clamp_mask[:, None, :] * (plan.clamp_targets[:, None, :] - f.float())
                w = sae.W_dec[plan.clamp_idx].float()  # [m, d]
                new = new + (coef @ w).to(x.dtype)
            if new is x:
                return output
            last, moved = x[:, -1, :].float(), new[:, -1, :].float()
            self._moved.setdefault(layer, []).append(((moved - last).norm(dim=-1).detach(), last.norm(dim=-1)))
            return replace_layer_output(output, new)

        return hook

    @torch.no_grad()
    def _record(self, cfg: CaptureConfig, x_last: Tensor) -> None:
        f = cfg.sae.encode(x_last.to(cfg.sae.W_enc.dtype)).float()  # [B, d_sae]
        buf = self._buffer
        buf.steps_topk.append(f.abs().topk(min(cfg.k, f.shape[-1]), dim=-1).values)
        if self._feat_idx is not None:
            idx, w = self._feat_idx.to(f.device), self._feat_w.to(f.device)
            buf.steps_feat.append((f.index_select(-1, idx) * w).sum(-1))
        vals, idx = f.topk(min(cfg.top, f.shape[-1]), dim=-1)
        buf.steps_top_vals.append(vals)
        buf.steps_top_idx.append(idx)

    def reports(self, lengths: Sequence[int], n_features: int = 10) -> list[ActivationReport | None]:
        """Per-row reports over the first `lengths[b]` recorded positions (one per generated token).

        Top features are exact when each token has at most `capture.top` active latents (TopK SAEs
        with k <= top); otherwise they are computed from each token's `top` strongest latents.
        """
        cfg, buf = self.capture, self._buffer
        if cfg is None:
            return [None] * len(self.rows)
        if not buf.steps_topk:
            return [ActivationReport(0, 0.0, None, []) for _ in self.rows]
        topk = torch.stack(buf.steps_topk, 1).cpu()  # [B, S, k]
        feat = torch.stack(buf.steps_feat, 1).cpu() if buf.steps_feat else None  # [B, S]
        top_vals = torch.stack(buf.steps_top_vals, 1).cpu()  # [B, S, top]
        top_idx = torch.stack(buf.steps_top_idx, 1).cpu()
        out: list[ActivationReport | None] = []
        for b, n in enumerate(lengths):
            n = max(0, min(int(n), topk.shape[1]))
            if n == 0:
                out.append(ActivationReport(0, 0.0, None if feat is None else 0.0, []))
                continue
            flat = topk[b, :n].flatten()
            topk_mean = float(flat.topk(min(cfg.k, flat.numel())).values.mean())
            sums = torch.zeros(cfg.sae.d_sae).index_add_(0, top_idx[b, :n].flatten(), top_vals[b, :n].flatten())
            mean = sums / n
            vals, idx = mean.topk(min(n_features, mean.numel()))
            out.append(ActivationReport(
                n_tokens=n, topk_mean=topk_mean,
                features_mean=None if feat is None or not self._feat_w[b].any() else float(feat[b, :n].mean()),
                top_features=[(int(i), float(v)) for i, v in zip(idx, vals, strict=True) if v > 0],
            ))
        return out

    def perturbations(self, lengths: Sequence[int]) -> list[Perturbation | None]:
        """Per row, the steering delta's size over the positions that predicted its `lengths[b]`
        generated tokens and the one that predicted EOS (so `lengths[b] + 1` positions, as far as
        recorded); None for unsteered rows."""
        out: list[Perturbation | None] = []
        for b, (row, n) in enumerate(zip(self.rows, lengths, strict=True)):
            steps = self._moved.get(row.layer) if row is not None else None
            if not steps:
                out.append(None)
                continue
            k = max(1, min(int(n) + 1, len(steps)))
            delta = torch.stack([d[b] for d, _ in steps[:k]]).cpu()
            norm = torch.stack([x[b] for _, x in steps[:k]]).cpu()
            ratio = delta / norm.clamp_min(torch.finfo(norm.dtype).tiny)
            out.append(Perturbation(k, float(delta.mean()), float(ratio.mean())))
        return out


def _to_device(plan: _LayerPlan, device: torch.device) -> _LayerPlan:
    move = (lambda t: None if t is None else t.to(device))  # noqa: E731
    return _LayerPlan(move(plan.add), move(plan.relative), move(plan.clamp_idx), move(plan.clamp_targets),
                      move(plan.clamp_mask))


def steer(
    model: nn.Module, spec: SteeringSpec, *, sae: SAE | None = None, max_activation: Any = None,
    batch_size: int = 1,
) -> Steerer:
    """One spec for every row: `with steer(model, spec, sae=sae, max_activation=fmax): model.generate(...)`.

    `sae` is the trained SAE; it is read through its unit-norm view here so `max_activation`
    (ReasonScore's, in unit-norm-decoder units) and the decoder directions agree.
    """
    mspec = get_model_spec(model)
    view = sae.unit_norm_view() if sae is not None else None
    fmax = load_max_activation(max_activation, sae.d_sae) if max_activation is not None and sae is not None else None
    row = resolve(spec, d_model=mspec.d_model, n_layers=mspec.n_layers, sae=view, max_activation=fmax)
    return Steerer(model, [row] * batch_size, sae=view, model_spec=mspec)


def recommended_steering(sae: str | os.PathLike) -> SteeringSpec:
    """The steering an SAE folder recommends in its `steering.json` (a shipped SAE by name, e.g.
    "smollm2-reasoner", recommends what its study measured to work best; see `reasoner.ship`)."""
    from reasoning_dspy.sae.io import SHIPPED_SAES, shipped_sae_folder

    folder = shipped_sae_folder(str(sae)) if str(sae) in SHIPPED_SAES and not Path(sae).exists() else Path(sae)
    path = folder / "steering.json"
    if not path.is_file():
        raise SteeringError(f"{str(folder)!r} recommends no steering: steering.json is missing "
                            "(`reasoning-dspy reasoner ship --study` writes it)")
    try:
        return SteeringSpec.model_validate(json.loads(path.read_text())["steering"])
    except (ValueError, KeyError, TypeError) as err:
        raise SteeringError(f"{path} does not hold a recommended steering spec ({err})") from None

"""A spec checked against a model and SAE and turned into per-row tensors (`RowSteering`), the
form the hooks apply."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from reasoning_dspy.sae import SAE
from reasoning_dspy.steering.fmax import _check_finite_fmax
from reasoning_dspy.steering.spec import SteeringError, SteeringSpec


@dataclass
class RowSteering:
    """A spec resolved against a model and SAE: what one batch row needs at one layer."""

    layer: int
    add: Tensor | None = None  # [d_model] float32, added at every position
    add_relative: Tensor | None = None  # [d_model] float32 of norm α; ‖x_t‖ times it is added at position t
    clamp_features: Tensor | None = None  # [m] long
    clamp_targets: Tensor | None = None  # [m] float32, γ f_max per feature
    tokens: int | None = None  # steer only the positions predicting `tokens` generated tokens (after `skip`)
    skip: int = 0  # generated tokens whose predicting positions are left unsteered before the window opens
    skip_lines: int = 0  # or: lines the model ends before the window opens (the engine reports them)

    @property
    def steers_prompt(self) -> bool:
        """True when the prompt's positions are steered too (no token window and nothing skipped)."""
        return self.tokens is None and self.skip == 0 and self.skip_lines == 0


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
    row = RowSteering(layer=layer, tokens=spec.tokens, skip=spec.skip_tokens, skip_lines=spec.skip_lines)
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

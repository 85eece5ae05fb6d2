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

from reasoning_dspy.steering.fmax import compute_max_activation, estimate_max_activation, load_max_activation
from reasoning_dspy.steering.hooks import CaptureConfig, Perturbation, Steerer, steer
from reasoning_dspy.steering.recommended import recommended_steering
from reasoning_dspy.steering.resolving import RowSteering, resolve
from reasoning_dspy.steering.spec import (
    MAX_RESIDUAL_STRENGTH,
    MAX_STRENGTH,
    SteeringError,
    SteeringSpec,
    Units,
    as_spec,
)

__all__ = ["MAX_RESIDUAL_STRENGTH", "MAX_STRENGTH", "CaptureConfig", "Perturbation", "RowSteering", "Steerer",
           "SteeringError", "SteeringSpec", "Units", "as_spec", "compute_max_activation", "estimate_max_activation",
           "load_max_activation", "recommended_steering", "resolve", "steer"]

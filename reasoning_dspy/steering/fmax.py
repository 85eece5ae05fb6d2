"""`f_max`, each feature's largest activation on a reference corpus: the unit a spec's strengths
are in when `units="fmax"`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reasoning_dspy.sae import SAE
from reasoning_dspy.steering.spec import SteeringError


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

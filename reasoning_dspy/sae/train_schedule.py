"""How an SAE starts and how its training moves: initialisation from a sample of the data (b_dec at
the mean or geometric median), the learning-rate and sparsity-coefficient schedules."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from reasoning_dspy.sae.base import SAE, SAEConfig
from reasoning_dspy.sae.train_config import SAETrainConfig

# -- initialisation --------------------------------------------------------------------------------


def geometric_median(points: Tensor, iters: int = 50, tol: float = 1e-5) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances; `[n, d] -> [d]`.

    Starts from the mean and stops once a step moves less than `tol` relative to the median's norm.
    """
    pts = points.float()
    median = pts.mean(0)
    for _ in range(iters):
        w = 1.0 / torch.cdist(pts, median[None]).squeeze(1).clamp_min(1e-8)
        new = (w @ pts) / w.sum()
        moved = (new - median).norm().item()
        median = new
        if moved <= tol * max(1.0, median.norm().item()):
            break
    return median.to(points.dtype)


def init_sae(cfg: SAETrainConfig, d_in: int, sample: Tensor, meta: dict[str, Any]) -> SAE:
    sae = SAE.from_config(SAEConfig(architecture=cfg.arch, d_in=d_in, d_sae=cfg.d_sae,
                                    k=cfg.k if cfg.arch == "topk" else None, **meta))
    with torch.no_grad():
        if cfg.b_dec_init == "mean":
            sae.b_dec.copy_(sample.mean(0))
        elif cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(sample))
        threshold = getattr(sae, "threshold", None)
        if isinstance(threshold, Tensor):
            threshold.fill_(cfg.jumprelu_init_threshold)
    return sae


# -- schedules -------------------------------------------------------------------------------------


def lr_at(cfg: SAETrainConfig, step: int, total: int) -> float:
    """Linear warm-up over the first `lr_warmup_frac`, constant, linear decay to 0 over the last `lr_decay_frac`."""
    warm = max(1, round(cfg.lr_warmup_frac * total)) if cfg.lr_warmup_frac > 0 else 0
    decay = round(cfg.lr_decay_frac * total)
    factor = 1.0
    if warm and step < warm:
        factor = (step + 1) / warm
    if decay and step >= total - decay:
        factor = min(factor, (total - step) / decay)
    return cfg.lr * factor


def sparsity_at(cfg: SAETrainConfig, step: int, total: int) -> float:
    """The architecture's λ (L1 for relu, L0 for jumprelu), ramped up linearly from 0."""
    coef = {"relu": cfg.l1_coefficient, "jumprelu": cfg.l0_coefficient}.get(cfg.arch, 0.0)
    warm = round(cfg.sparsity_warmup_frac * total)
    return coef * min(1.0, (step + 1) / warm) if warm else coef


def contiguous_aliases(params: list[Tensor]) -> list[Tensor]:
    """What Adam updates: each parameter, or for a transposed-stored one a contiguous alias of the
    same memory (`p.detach().T`). Fused Adam copies non-contiguous tensors on every step; the alias
    avoids that (its `.grad` is set to `p.grad.T` before each step)."""
    out = []
    for p in params:
        if p.is_contiguous() or p.dim() != 2 or not p.T.is_contiguous():
            out.append(p)
        else:
            out.append(p.detach().T)
    return out

"""SAE evaluation: L0, FVU, dead fraction, feature density, CE-loss recovered.

FVU is the unexplained fraction of the variance *about the mean*: `Σ‖x − x̂‖² / Σ‖x − x̄‖²`.
Dividing by `Σ‖x‖²` instead (variance about zero) flatters an SAE whenever activations have a large
mean, which residual streams do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from reasoning_dspy.models import layer_output, model_spec, replace_layer_output
from reasoning_dspy.sae.base import SAE


def l0(latents: Tensor) -> float:
    """Mean number of non-zero latents per token; `latents [..., d_sae]`."""
    return (latents != 0).sum(-1).float().mean().item()


def fvu(x: Tensor, recon: Tensor) -> float:
    """Fraction of variance unexplained, `Σ‖x − x̂‖² / Σ‖x − mean(x)‖²`; `x, recon [n, d]`."""
    acc = FVUAccumulator()
    acc.update(x, recon)
    return acc.value()


class FVUAccumulator:
    """Streaming FVU over batches: float64 sums of `x − ref` with `ref` the first batch's mean, so the
    mean need not be known in advance and a large common offset does not cancel catastrophically."""

    def __init__(self) -> None:
        self.n = 0
        self.ref: Tensor | None = None  # [d]
        self.sum_x: Tensor | None = None  # Σ (x − ref), [d]
        self.sum_sq = 0.0  # Σ‖x − ref‖²
        self.err = 0.0  # Σ‖x − x̂‖²

    def update(self, x: Tensor, recon: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        recon = recon.reshape(-1, recon.shape[-1]).double()
        if self.ref is None:
            self.ref = x.mean(0)
        self.err += (x - recon).pow(2).sum().item()
        x = x - self.ref
        self.n += x.shape[0]
        s = x.sum(0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq += x.pow(2).sum().item()

    def value(self) -> float:
        if self.n == 0 or self.sum_x is None:
            raise ValueError("FVU of an empty set of activations")
        total = self.sum_sq - self.sum_x.pow(2).sum().item() / self.n
        return self.err / total if total > 0 else float("nan")


def dead_fraction(fire_counts: Tensor) -> float:
    """Fraction of latents that never fired; `fire_counts [d_sae]` counts tokens each latent fired on."""
    return (fire_counts == 0).float().mean().item()


def density_histogram(fire_counts: Tensor, n_tokens: int, bins: int = 50) -> tuple[Tensor, Tensor, int]:
    """Histogram of log10 feature density (fraction of tokens a latent fires on).

    Returns `(counts [bins], edges [bins + 1] in log10 units, n_dead)`; dead latents (density 0,
    log = −∞) are reported separately instead of being dropped silently.
    """
    if n_tokens <= 0:
        raise ValueError("n_tokens must be positive")
    density = fire_counts.double() / n_tokens
    alive = density[density > 0]
    n_dead = int((density == 0).sum())
    if alive.numel() == 0:
        return torch.zeros(bins, dtype=torch.long), torch.linspace(-10, 0, bins + 1), n_dead
    logd = alive.log10()
    lo = min(logd.min().item(), -1e-9)
    edges = torch.linspace(lo, 0.0, bins + 1, dtype=torch.float64)
    counts = torch.histc(logd, bins=bins, min=lo, max=0.0).long()
    return counts, edges, n_dead


@dataclass
class SAEEval:
    """Reconstruction quality of an SAE on a set of activations."""

    fvu: float
    l0: float
    dead_fraction: float
    mse: float  # mean over tokens of ‖x − x̂‖²
    n_tokens: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Iterable[Tensor], *, compute_dtype: torch.dtype | None = None) -> SAEEval:
    """FVU, L0 and dead fraction of `sae` over batches of activations `[n, d_in]`."""
    acc = FVUAccumulator()
    l0_sum = 0.0
    counts = None
    n = 0
    err = 0.0
    for x in batches:
        x = x.to(sae.W_enc.device, sae.W_enc.dtype)
        enabled = compute_dtype not in (None, sae.W_enc.dtype)
        with torch.autocast(x.device.type, dtype=compute_dtype or torch.bfloat16, enabled=enabled):
            f, recon = sae(x)
        recon = recon.to(x.dtype)
        acc.update(x, recon)
        c = torch.count_nonzero(f.reshape(-1, f.shape[-1]), dim=0)
        l0_sum += c.sum().item()
        counts = c if counts is None else counts + c
        n += x.shape[0]
        err += (x - recon).double().pow(2).sum().item()
    if counts is None:
        raise ValueError("evaluate_sae got no activations")
    return SAEEval(fvu=acc.value(), l0=l0_sum / n, dead_fraction=dead_fraction(counts), mse=err / n, n_tokens=n)


# -- CE-loss recovered -----------------------------------------------------------------------------


@dataclass
class CELossRecovered:
    """`(CE_zero − CE_sae) / (CE_zero − CE_clean)` with the reconstruction spliced in at the layer."""

    ce_clean: float
    ce_sae: float
    ce_zero: float
    recovered: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _mean_ce(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean next-token cross entropy over real (non-pad) target positions."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = attention_mask[:, 1:].to(nll.dtype)
    return (nll * mask).sum() / mask.sum()


def _replace_output(layer: nn.Module, fn):
    """Forward hook replacing the layer's hidden-state output with `fn(hidden)` (tensor or tuple outputs)."""

    def hook(_module, _inputs, output):
        return replace_layer_output(output, fn(layer_output(output)))

    return layer.register_forward_hook(hook)


@torch.no_grad()
def ce_loss_recovered(
    model: nn.Module,
    sae: SAE,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    layer: int | None = None,
    splice_mask: Tensor | None = None,
    special_ids: Sequence[int] = (),
) -> CELossRecovered:
    """Next-token CE of `model` clean, with layer `layer`'s output replaced by the SAE reconstruction,
    and with it replaced by zeros (the baseline that defines 0 % recovered).

    Positions spliced are `splice_mask [B, T]` (default: real tokens except `special_ids`, e.g. BOS,
    whose activations the SAE never saw in training). `layer` defaults to `sae.cfg.hook_layer`.
    """
    spec = model_spec(model)
    layer = sae.cfg.hook_layer if layer is None else layer
    if layer is None:
        raise ValueError("pass layer=...: the SAE's config does not say which layer it was trained on")
    sae.check_compatible(spec, layer)
    module = spec.layer(layer)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if splice_mask is None:
        splice_mask = attention_mask.bool()
        for tid in special_ids:
            splice_mask &= input_ids != tid
    keep = splice_mask.to(next(model.parameters()).device)[..., None]

    def run(fn=None) -> float:
        handle = _replace_output(module, fn) if fn is not None else None
        try:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        finally:
            if handle is not None:
                handle.remove()
        return _mean_ce(logits, input_ids, attention_mask).item()

    def splice(h: Tensor) -> Tensor:
        recon = sae(h.to(sae.W_enc.dtype))[1].to(h.dtype)
        return torch.where(keep, recon, h)

    ce_clean = run()
    ce_sae = run(splice)
    ce_zero = run(lambda h: torch.where(keep, torch.zeros_like(h), h))
    denom = ce_zero - ce_clean
    recovered = (ce_zero - ce_sae) / denom if denom != 0 else float("nan")
    return CELossRecovered(ce_clean=ce_clean, ce_sae=ce_sae, ce_zero=ce_zero, recovered=recovered)

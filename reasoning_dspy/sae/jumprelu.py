"""JumpReLU SAE (Rajamanoharan et al. 2024): f = z · H(z − θ) with a learned threshold θ per latent.

The Heaviside step has no useful gradient in θ, so training uses straight-through estimators with a
rectangle kernel of width ε (the paper's "pseudo-derivatives"): the reconstruction and an L0
penalty `λ Σ_i H(z_i − θ_i)` both reach θ through them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reasoning_dspy.sae.base import SAE, LossContext, SAEConfig, StepOutput, register


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """`z · H(z − θ)`; ∂/∂z = H(z − θ), ∂/∂θ ≈ −(θ/ε) K((z − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_theta = (-(threshold / eps) * _rectangle((pre - threshold) / eps) * grad)
        return grad_pre, grad_theta.reshape(-1, pre.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    """`H(z − θ)`; ∂/∂z = 0, ∂/∂θ ≈ −(1/ε) K((z − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad
        return None, grad_theta.reshape(-1, pre.shape[-1]).sum(0), None


@register("jumprelu")
class JumpReLUSAE(SAE):
    exact_fold = True  # with θ scaled too: n·z·H(n·z − n·θ) = n·z·H(z − θ)

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))

    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) * (pre > self.threshold)

    def training_loss(self, x: Tensor, ctx: LossContext) -> StepOutput:
        """`‖x − x̂‖² + λ · mean_t Σ_i H(z_i − θ_i)` (an L0 penalty; decoder rows are unit norm)."""
        pre = self.pre_activation(x)
        f = _JumpReLU.apply(pre, self.threshold, ctx.bandwidth)
        recon = self.decode(f)
        mse = self.mse(x, recon)
        l0 = _Step.apply(pre, self.threshold, ctx.bandwidth).sum(-1).mean()
        loss = mse + ctx.sparsity_coef * l0
        active = f != 0
        return StepOutput(loss=loss, recon=recon.detach(), l0=l0.detach(), fired=active.any(0),
                          losses={"mse": mse.item(), "l0_loss": l0.item()})

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        self.threshold.clamp_(min=0.0)

"""ReLU SAE (Anthropic's "standard" SAE, SAELens `standard`): σ = ReLU, sparsity from an L1 penalty."""

from __future__ import annotations

import torch
from torch import Tensor

from reasoning_dspy.sae.base import SAE, LossContext, StepOutput, register


@register("relu")
class ReLUSAE(SAE):
    exact_fold = True  # relu(n·z) = n·relu(z) for n > 0

    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def training_loss(self, x: Tensor, ctx: LossContext) -> StepOutput:
        """`‖x − x̂‖² + λ Σ_i f_i ‖W_dec,i‖`: weighting by the decoder norm stops the SAE from
        shrinking latents while growing decoder rows to dodge the penalty."""
        f, recon = self(x)
        mse = self.mse(x, recon)
        l1 = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + ctx.sparsity_coef * l1
        active = f > 0
        return StepOutput(loss=loss, recon=recon.detach(), l0=active.sum(-1).float().mean().detach(),
                          fired=active.any(0), losses={"mse": mse.item(), "l1": l1.item()})

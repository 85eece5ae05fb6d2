"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token, ReLU them, zero the rest.

Training adds the AuxK loss: the top `k_aux` *dead* latents of each token reconstruct the residual
`x − x̂` (coefficient 1/32), which pulls dead latents back into use. The dense reference is written
with plain tensor ops; the default fast path (`fast_topk`) computes the same loss and gradients
touching only the selected latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reasoning_dspy.sae.base import SAE, LossContext, StepOutput, register


@register("topk")
class TopKSAE(SAE):
    def activation(self, pre: Tensor) -> Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`(latents, reconstruction)`; the decoder reads only the k selected rows of `W_dec`."""
        pre = self.pre_activation(x)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        values = torch.relu(values)
        f = torch.zeros_like(pre).scatter_(-1, indices, values)
        k = self.cfg.k
        recon = F.embedding_bag(indices.reshape(-1, k), self.W_dec, mode="sum",
                                per_sample_weights=values.reshape(-1, k).to(self.W_dec.dtype))
        return f, recon.reshape(*x.shape[:-1], self.cfg.d_in) + self.b_dec

    def _aux_size(self, ctx: LossContext) -> tuple[int, float]:
        """(latents per token in AuxK, loss scale): fewer dead latents than `k_aux` scale the loss down."""
        if ctx.dead_mask is None:
            return 0, 0.0
        n_dead = int(ctx.dead_mask.sum())
        k_aux = ctx.k_aux or self.cfg.d_in // 2
        return min(k_aux, n_dead), min(n_dead / k_aux, 1.0)

    def training_loss(self, x: Tensor, ctx: LossContext) -> StepOutput:
        if ctx.fast and not x.requires_grad:
            return self._loss_fast(x, ctx)
        return self._loss_dense(x, ctx)

    def _loss_dense(self, x: Tensor, ctx: LossContext) -> StepOutput:
        """Reference implementation: dense `[B, d_sae]` latents, plain autograd."""
        pre = self.pre_activation(x)
        f = self.activation(pre)
        recon = self.decode(f)
        mse = self.mse(x, recon)
        loss, losses = mse, {"mse": mse.item()}
        k_aux, scale = self._aux_size(ctx)
        if k_aux > 0:
            masked = pre.masked_fill(~ctx.dead_mask, float("-inf"))
            values, indices = masked.topk(k_aux, dim=-1, sorted=False)
            aux_f = torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))
            aux_recon = aux_f.to(self.W_dec.dtype) @ self.W_dec
            aux = (aux_recon - (x - recon).detach()).pow(2).sum(-1).mean()
            loss = loss + ctx.aux_coef * scale * aux
            losses["aux"] = aux.item()
        active = f > 0
        return StepOutput(loss=loss, recon=recon.detach(), l0=active.sum(-1).float().mean().detach(),
                          fired=active.any(0), losses=losses)

    def _loss_fast(self, x: Tensor, ctx: LossContext) -> StepOutput:
        from reasoning_dspy.sae.fast_topk import topk_forward_fast

        self.check_input(x)
        k_aux, scale = self._aux_size(ctx)
        recon, aux_recon, values, indices = topk_forward_fast(
            x.to(self.W_enc.dtype), self.W_enc, self.b_enc, self.W_dec, self.b_dec, self.cfg.k,
            apply_b_dec_to_input=self.cfg.apply_b_dec_to_input,
            dead_mask=ctx.dead_mask if k_aux > 0 else None, k_aux=k_aux, compute_dtype=ctx.compute_dtype,
        )
        mse = self.mse(x, recon)
        loss, losses = mse, {"mse": mse.item()}
        if k_aux > 0:
            aux = (aux_recon - (x - recon).detach()).pow(2).sum(-1).mean()
            loss = loss + ctx.aux_coef * scale * aux
            losses["aux"] = aux.item()
        active = values > 0
        fired = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=x.device)
        fired[indices[active]] = True
        return StepOutput(loss=loss, recon=recon.detach(), l0=active.sum(-1).float().mean().detach(),
                          fired=fired, losses=losses)

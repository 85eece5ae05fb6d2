"""Fast TopK SAE training step: everything after the encoder matmul touches only the selected latents.

A dense TopK step costs five `[batch, d_in] x [d_in, d_sae]`-sized matmuls (encoder forward, its
weight gradient, decoder forward and both decoder gradients). Only the encoder forward is
unavoidable: after `topk`, each token has k non-zero latents, so

* the decoder forward is a weighted sum of k rows of `W_dec` (`embedding_bag`),
* the gradient of each selected latent value is one dot product `g_t · W_dec[j]`,
* the weight gradients `dL/dW_dec = Fᵀ g` and `dL/dW_enc = x_cᵀ G`, with `F, G [batch, d_sae]`
  non-zero only at the selected latents, are computed latent-major: for each latent, a weighted
  sum of the rows of the tokens that selected it — one `embedding_bag` each, over the selected
  indices sorted once per step (the AuxK latents ride along in the same sort),
* the `b_dec` gradient through the encoder input `x − b_dec` is `−W_enc · Σ_t G[t]` (a mat-vec).

`TopKSAE` keeps a plain dense implementation; `tests/test_sae_fast.py` checks that losses and
gradients agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LatentPlan:
    """The selected `(token, slot)` entries of an `[n, s]` index matrix, grouped by latent."""

    order: Tensor  # [n·s] flat entry ids sorted by latent
    offsets: Tensor  # [n_latents] start of each latent's group in `order`
    token: Tensor  # [n·s] token (row) of each sorted entry

    @staticmethod
    def build(idx: Tensor, n_latents: int) -> LatentPlan:
        n, s = idx.shape
        flat = idx.reshape(-1)
        if flat.device.type == "cpu":  # numpy's stable radix/tim sort is ~15x faster than torch.sort on CPU
            import numpy as np

            order = torch.from_numpy(np.argsort(flat.numpy(), kind="stable"))
        else:
            order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=n_latents)
        offsets = torch.zeros(n_latents, dtype=torch.long, device=idx.device)
        torch.cumsum(counts[:-1], 0, out=offsets[1:])
        return LatentPlan(order=order, offsets=offsets, token=torch.div(order, s, rounding_mode="floor"))

    def sum_rows(self, weights: Tensor, rows: Tensor, row_of: Tensor | None = None) -> Tensor:
        """`out[j] = Σ_{entries e of latent j} weights[e] · rows[row_of[e]]`: `[n_latents, d]`."""
        w = weights.reshape(-1)[self.order].to(rows.dtype)
        return F.embedding_bag(self.token if row_of is None else row_of, rows, self.offsets, mode="sum",
                               per_sample_weights=w)


def latent_major_sum(idx: Tensor, weights: Tensor, rows: Tensor, n_latents: int) -> Tensor:
    """`Gᵀ · rows` for the sparse `G [n, n_latents]` given as `idx, weights [n, s]`; `rows [n, d]`."""
    return LatentPlan.build(idx, n_latents).sum_rows(weights, rows)


def _selected_dots(grad_rows: Tensor, weight: Tensor, idx: Tensor) -> Tensor:
    """`out[t, s] = grad_rows[t] · weight[idx[t, s]]` without gathering `[n, s, d]`."""
    n, s = idx.shape
    bag = torch.arange(n, device=idx.device).repeat_interleave(s)
    offsets = torch.arange(0, n * s, s, device=idx.device)
    try:
        out = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            grad_rows.contiguous(), weight, idx.reshape(-1), offsets, bag, 0, -1)
    except (RuntimeError, AttributeError):  # private op missing: chunked gather fallback
        out = torch.cat([torch.einsum("nsd,nd->ns", weight[idx[i:i + 256]], grad_rows[i:i + 256])
                         for i in range(0, n, 256)])
    return out.reshape(n, s)


class TopKTrainStep(torch.autograd.Function):
    """Fused TopK SAE forward for training (see the module docstring for the backward).

    Returns `(recon [B, d_in], aux_recon [B, d_in], values [B, k], indices [B, k])` where `values`
    are the post-ReLU latent values (no gradient; use `recon`/`aux_recon` in the loss) and
    `aux_recon` reconstructs from the top `k_aux` dead latents without bias (an empty tensor when
    `k_aux = 0`).
    """

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, k: int,
                apply_b_dec: bool, dead_mask: Tensor | None, k_aux: int, compute_dtype: torch.dtype):
        x_c = x - b_dec if apply_b_dec else x
        if compute_dtype == W_enc.dtype:
            pre = torch.addmm(b_enc, x_c, W_enc)
        else:
            pre = torch.addmm(b_enc.to(compute_dtype), x_c.to(compute_dtype), W_enc.to(compute_dtype))
        values, indices = pre.topk(k, dim=-1, sorted=False)
        if dead_mask is not None and k_aux > 0:
            aux_values, aux_indices = pre.masked_fill_(~dead_mask, float("-inf")).topk(k_aux, dim=-1, sorted=False)
        else:
            aux_values = pre.new_zeros(x.shape[0], 0)
            aux_indices = torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
        del pre
        values = torch.relu(values.to(W_dec.dtype))
        aux_values = torch.relu(aux_values.to(W_dec.dtype))
        recon = F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=values) + b_dec
        if k_aux > 0 and aux_indices.shape[1] > 0:
            aux_recon = F.embedding_bag(aux_indices, W_dec, mode="sum", per_sample_weights=aux_values)
        else:
            aux_recon = recon.new_zeros(0)  # placeholder: no AuxK this step
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x_c, W_enc, W_dec, values, indices, aux_values, aux_indices)
        ctx.apply_b_dec = apply_b_dec
        ctx.mark_non_differentiable(values, indices)
        return recon, aux_recon, values, indices

    @staticmethod
    def backward(ctx, g_recon: Tensor | None, g_aux: Tensor | None, _gv, _gi):
        x_c, W_enc, W_dec, values, indices, aux_values, aux_indices = ctx.saved_tensors
        B, k = indices.shape
        d_sae = W_dec.shape[0]
        if g_recon is None:
            g_recon = torch.zeros_like(x_c, dtype=W_dec.dtype)
        has_aux = g_aux is not None and aux_indices.shape[1] > 0
        if has_aux:  # main and AuxK entries share one sort; aux rows of the gradient sit at B + t
            idx = torch.cat([indices, aux_indices], dim=1)
            vals = torch.cat([values, aux_values], dim=1)
            grad_rows = torch.cat([g_recon, g_aux])
            bag_rows = torch.cat([torch.arange(B, device=idx.device)[:, None].expand(B, k),
                                  B + torch.arange(B, device=idx.device)[:, None].expand_as(aux_indices)], 1)
            dots = torch.cat([_selected_dots(g_recon, W_dec, indices), _selected_dots(g_aux, W_dec, aux_indices)], 1)
        else:
            idx, vals, grad_rows, bag_rows = indices, values, g_recon, None
            dots = _selected_dots(g_recon, W_dec, indices)
        g_pre = dots * (vals > 0)  # through the ReLU (values are post-ReLU)
        plan = LatentPlan.build(idx, d_sae)

        grad_W_enc = grad_b_enc = grad_W_dec = grad_b_dec = grad_x = None
        if ctx.needs_input_grad[3]:
            row_of = bag_rows.reshape(-1)[plan.order] if bag_rows is not None else None
            grad_W_dec = plan.sum_rows(vals, grad_rows, row_of)
        if ctx.needs_input_grad[1]:
            # [d_sae, d_in] computed latent-major; returned transposed (a view, no copy).
            grad_W_enc = plan.sum_rows(g_pre, x_c.to(W_enc.dtype)).T
        col = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device)
        col.index_add_(0, idx.reshape(-1), g_pre.reshape(-1).to(W_enc.dtype))  # Σ_t G[t]
        if ctx.needs_input_grad[2]:
            grad_b_enc = col
        if ctx.needs_input_grad[4]:
            grad_b_dec = g_recon.sum(0)
            if ctx.apply_b_dec:
                grad_b_dec = grad_b_dec - W_enc @ col
        if ctx.needs_input_grad[0]:
            # dL/dx = G W_encᵀ (+ the decoder has no path to x): k encoder columns per token.
            grad_x = F.embedding_bag(idx, W_enc.T.contiguous(), mode="sum", per_sample_weights=g_pre)
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None, None, None, None


def sparse_decode(indices: Tensor, values: Tensor, W_dec: Tensor) -> Tensor:
    """`Σ_s values[t, s] · W_dec[indices[t, s]]`: `[B, d_in]` (differentiable through autograd)."""
    return F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=values)


def topk_forward_fast(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, k: int, *,
                      apply_b_dec_to_input: bool = True, dead_mask: Tensor | None = None, k_aux: int = 0,
                      compute_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TopK SAE training forward. Returns `(recon [B, d_in], aux_recon [B, d_in], values [B, k]
    (post-ReLU, no gradient), indices [B, k])`."""
    return TopKTrainStep.apply(x, W_enc, b_enc, W_dec, b_dec, k, apply_b_dec_to_input, dead_mask, k_aux,
                               compute_dtype or W_enc.dtype)

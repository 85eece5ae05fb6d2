"""Fast TopK SAE training step: everything after the encoder matmul touches only the k selected latents.

A dense TopK step costs five `[batch, d_in] x [d_in, d_sae]`-sized matmuls (encoder forward, its
weight gradient, decoder forward and both decoder gradients). Only the encoder forward is
unavoidable: after `topk`, each token has k non-zero latents, so

* the decoder forward is a weighted sum of k rows of `W_dec` (`embedding_bag`),
* the decoder backward (gradients for the k latent values and the touched `W_dec` rows) is
  `embedding_bag`'s own backward,
* the encoder weight gradient `dL/dW_enc = x_cᵀ · G`, with `G [batch, d_sae]` non-zero only at the
  selected latents, is computed latent-major: for each latent, a weighted sum of the token rows
  that selected it — again one `embedding_bag` over the indices sorted by latent,
* the `b_dec` gradient through the encoder input `x − b_dec` is `−W_enc · Σ_t G[t]` (a mat-vec).

The AuxK latents (top dead latents per token) reuse the same path. `TopKSAE` keeps a plain dense
implementation; `tests/test_sae_fast.py` checks that losses and gradients agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def latent_major_sum(idx: Tensor, weights: Tensor, rows: Tensor, n_latents: int) -> Tensor:
    """`out[j] = Σ_{(t, s): idx[t, s] = j} weights[t, s] · rows[t]`: `[n_latents, d]`.

    `idx`/`weights` are `[n_tokens, s]`, `rows` is `[n_tokens, d]`. This is `Gᵀ · rows` for the
    sparse `G [n_tokens, n_latents]` given in coordinate form, computed without materialising G.
    """
    n, s = idx.shape
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_latents)
    offsets = torch.zeros(n_latents, dtype=torch.long, device=idx.device)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    token_of = torch.div(order, s, rounding_mode="floor")
    w = weights.reshape(-1)[order].to(rows.dtype)
    return F.embedding_bag(token_of, rows, offsets, mode="sum", per_sample_weights=w)


class TopKEncode(torch.autograd.Function):
    """`pre = (x − b_dec) W_enc + b_enc`, then the top-k (and optionally the AuxK) entries per row.

    Returns `(values [B, k], indices [B, k], aux_values [B, k_aux], aux_indices [B, k_aux])`; the
    values carry gradients back to `W_enc`, `b_enc`, `b_dec` (and `x` if it requires grad) through
    a backward that only touches the selected entries.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, k: int,
                dead_mask: Tensor | None, k_aux: int, compute_dtype: torch.dtype):
        x_c = x - b_dec if b_dec is not None else x
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
        ctx.save_for_backward(x_c, W_enc, indices, aux_indices)
        ctx.has_b_dec = b_dec is not None
        ctx.mark_non_differentiable(indices, aux_indices)
        return values.to(W_enc.dtype), indices, aux_values.to(W_enc.dtype), aux_indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, _gi, grad_aux: Tensor | None, _gai):
        x_c, W_enc, indices, aux_indices = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        if grad_aux is not None and aux_indices.shape[1] > 0:
            idx = torch.cat([indices, aux_indices], dim=1)
            g = torch.cat([grad_values, grad_aux], dim=1)
        else:
            idx, g = indices, grad_values
        g = g.to(W_enc.dtype)
        grad_W_enc = grad_b_enc = grad_b_dec = grad_x = None
        if ctx.needs_input_grad[1]:
            # [d_sae, d_in] computed latent-major; returned transposed (a view, no copy).
            grad_W_enc = latent_major_sum(idx, g, x_c.to(W_enc.dtype), d_sae).T
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            col = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device)
            col.index_add_(0, idx.reshape(-1), g.reshape(-1))
            grad_b_enc = col if ctx.needs_input_grad[2] else None
            if ctx.has_b_dec and ctx.needs_input_grad[3]:
                grad_b_dec = -(W_enc @ col)
        if ctx.needs_input_grad[0]:
            # dL/dx = G W_encᵀ: a weighted sum of k encoder columns per token.
            grad_x = F.embedding_bag(idx, W_enc.T.contiguous(), mode="sum", per_sample_weights=g)
        return grad_x, grad_W_enc, grad_b_enc, grad_b_dec, None, None, None, None


def sparse_decode(indices: Tensor, values: Tensor, W_dec: Tensor) -> Tensor:
    """`Σ_s values[t, s] · W_dec[indices[t, s]]`: `[B, d_in]`, differentiable in `values` and `W_dec`."""
    return F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=values)


def topk_forward_fast(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, k: int, *,
                      apply_b_dec_to_input: bool = True, dead_mask: Tensor | None = None, k_aux: int = 0,
                      compute_dtype: torch.dtype | None = None
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """TopK SAE forward for training. Returns `(values [B,k] (post-ReLU), indices [B,k],
    reconstruction [B, d_in], aux_values [B, k_aux] (post-ReLU), aux_indices [B, k_aux])`."""
    values, indices, aux_values, aux_indices = TopKEncode.apply(
        x, W_enc, b_enc, b_dec if apply_b_dec_to_input else None, k, dead_mask, k_aux,
        compute_dtype or W_enc.dtype,
    )
    values = torch.relu(values)
    recon = sparse_decode(indices, values, W_dec) + b_dec
    return values, indices, recon, torch.relu(aux_values), aux_indices

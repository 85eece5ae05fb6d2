"""The sparse TopK fast path computes the same loss and gradients as the dense reference."""

from __future__ import annotations

import pytest
import torch

from reasoning_dspy.sae import SAE, SAEConfig
from reasoning_dspy.sae.base import LossContext
from reasoning_dspy.sae.fast_topk import latent_major_sum


def _sae(d_in=24, d_sae=96, k=5, apply_b_dec_to_input=True) -> SAE:
    torch.manual_seed(1)
    sae = SAE.from_config(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k,
                                    apply_b_dec_to_input=apply_b_dec_to_input))
    with torch.no_grad():  # non-trivial biases and non-unit decoder rows, so every term is exercised
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
        sae.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)
    return sae


def _grads(sae: SAE, x: torch.Tensor, ctx: LossContext):
    sae.zero_grad(set_to_none=True)
    out = sae.training_loss(x, ctx)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in sae.named_parameters()}


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
@pytest.mark.parametrize("with_aux", [False, True])
def test_fast_loss_and_gradients_match_dense(apply_b_dec_to_input, with_aux):
    sae = _sae(apply_b_dec_to_input=apply_b_dec_to_input)
    x = torch.randn(64, 24) * 2 + 1
    dead = torch.zeros(96, dtype=torch.bool)
    dead[::3] = True  # 32 dead latents
    kw = {"dead_mask": dead, "k_aux": 12, "aux_coef": 0.5} if with_aux else {}
    dense, g_dense = _grads(sae, x, LossContext(fast=False, **kw))
    fast, g_fast = _grads(sae, x, LossContext(fast=True, **kw))
    assert fast.loss.item() == pytest.approx(dense.loss.item(), rel=1e-5)
    assert fast.losses.keys() == dense.losses.keys() == ({"mse", "aux"} if with_aux else {"mse"})
    torch.testing.assert_close(fast.recon, dense.recon, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.fired, dense.fired)
    assert fast.l0.item() == dense.l0.item()
    for name in g_dense:
        torch.testing.assert_close(g_fast[name], g_dense[name], rtol=1e-4, atol=1e-5, msg=name)


def test_fast_path_with_transposed_encoder_storage_and_input_grad():
    sae = _sae()
    x = torch.randn(32, 24)
    _, ref = _grads(sae, x, LossContext(fast=False))
    sae.W_enc.data = sae.W_enc.data.T.contiguous().T  # the trainer's layout
    _, got = _grads(sae, x, LossContext(fast=True))
    assert got["W_enc"].stride() == sae.W_enc.stride()  # gradient written in the parameter's layout
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)
    # x that requires grad: the dense path is used, and the fast autograd Function agrees on dL/dx
    from reasoning_dspy.sae.fast_topk import topk_forward_fast

    xa = x.clone().requires_grad_()
    recon, _, _, _ = topk_forward_fast(xa, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, 5)
    recon.pow(2).sum().backward()
    xb = x.clone().requires_grad_()
    sae.decode(sae.encode(xb)).pow(2).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)


def test_bf16_fast_path_close_to_autocast_dense():
    sae = _sae(d_in=64, d_sae=256, k=8)
    x = torch.randn(128, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = sae.training_loss(x, LossContext(fast=False))
    fast = sae.training_loss(x, LossContext(fast=True, compute_dtype=torch.bfloat16))
    assert fast.loss.item() == pytest.approx(dense.loss.item(), rel=2e-2)


def test_latent_major_sum_equals_dense_product():
    torch.manual_seed(0)
    idx = torch.randint(0, 10, (7, 3))
    w = torch.randn(7, 3)
    rows = torch.randn(7, 5)
    G = torch.zeros(7, 10).index_put_((torch.arange(7)[:, None].expand(7, 3), idx), w, accumulate=True)
    torch.testing.assert_close(latent_major_sum(idx, w, rows, 10), G.T @ rows)

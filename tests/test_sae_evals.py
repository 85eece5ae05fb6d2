"""SAE metrics, each against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from reasoning_dspy.sae import SAE, SAEConfig
from reasoning_dspy.sae.evals import (
    FVUAccumulator,
    ce_loss_recovered,
    dead_fraction,
    density_histogram,
    evaluate_sae,
    fvu,
    l0,
)


def test_l0_counts_nonzeros_per_token():
    f = torch.tensor([[0.0, 1.0, 2.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert l0(f) == pytest.approx((2 + 1 + 0) / 3)
    assert l0(f.reshape(1, 3, 4)) == pytest.approx(1.0)


def test_fvu_is_variance_about_the_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    recon = torch.tensor([[1.0, 2.5], [2.0, 4.0], [5.0, 8.0]])
    err = 0.5**2 + 1.0**2 + 1.0**2
    mean = [3.0, 5.0]
    var = sum((x[i, j].item() - mean[j]) ** 2 for i in range(3) for j in range(2))  # 8 + 26 = 34
    assert var == 34.0
    assert fvu(x, recon) == pytest.approx(err / var)
    assert fvu(x, recon) != pytest.approx(err / x.pow(2).sum().item())  # not about zero
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)  # predicting the mean explains nothing


def test_fvu_accumulator_streams():
    torch.manual_seed(0)
    x, recon = torch.randn(100, 8) + 5, torch.randn(100, 8) + 5
    acc = FVUAccumulator()
    for a, b in zip(x.split(7), recon.split(7), strict=True):
        acc.update(a, b)
    assert acc.value() == pytest.approx(fvu(x, recon), rel=1e-9)
    xd, rd = x.double(), recon.double()
    ref = ((xd - rd).pow(2).sum() / (xd - xd.mean(0)).pow(2).sum()).item()
    assert acc.value() == pytest.approx(ref, rel=1e-9)


def test_dead_fraction_and_density_histogram():
    counts = torch.tensor([0, 0, 1, 10, 100, 1000])
    assert dead_fraction(counts) == pytest.approx(2 / 6)
    hist, edges, n_dead = density_histogram(counts, n_tokens=1000, bins=3)
    assert n_dead == 2
    # densities 1e-3, 1e-2, 1e-1, 1 -> log10 -3, -2, -1, 0 over bins [-3,-2), [-2,-1), [-1,0]
    assert edges[0].item() == pytest.approx(-3.0) and edges[-1].item() == 0.0
    assert hist.tolist() == [1, 1, 2]
    assert int(hist.sum()) + n_dead == 6


def _identity_sae(d: int, scale: float = 1.0) -> SAE:
    """A ReLU SAE with latents [relu(x), relu(-x)] and decoder scale·[I; -I]: recon = scale · x."""
    sae = SAE.from_config(SAEConfig(architecture="relu", d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(scale * torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_evaluate_sae_by_hand():
    x = torch.tensor([[1.0, -2.0], [0.0, 3.0], [2.0, 0.0], [1.0, 1.0]])
    ev = evaluate_sae(_identity_sae(2, scale=0.5), [x[:2], x[2:]])
    err = (0.5 * x).pow(2).sum().item()
    assert ev.fvu == pytest.approx(err / (x - x.mean(0)).pow(2).sum().item())
    assert ev.mse == pytest.approx(err / 4)
    assert ev.l0 == pytest.approx((2 + 1 + 1 + 2) / 4)
    assert ev.dead_fraction == pytest.approx(0.25)  # relu(−x₀) never fires: x₀ ≥ 0 on every token
    assert ev.n_tokens == 4


def _ce_by_hand(model, ids, mask, layer_module, replace=None, keep=None) -> float:
    """Independent CE: a hook that edits the layer output, then −log p(next token) averaged by hand."""
    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        new = torch.where(keep[..., None], replace(h), h)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle = layer_module.register_forward_hook(hook) if replace else None
    try:
        logits = model(input_ids=ids, attention_mask=mask).logits
    finally:
        if handle:
            handle.remove()
    total, n = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[b, t + 1]:
                total -= torch.log_softmax(logits[b, t].double(), -1)[ids[b, t + 1]].item()
                n += 1
    return total / n


@torch.no_grad()
def test_ce_loss_recovered_against_hand_computation(tiny, bundled_prompts):
    model, tok, spec = tiny
    enc = tok(bundled_prompts[:3], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (mask == 0).any()  # padding present: it must be excluded
    layer = 2
    keep = mask.bool() & (ids != tok.bos_token_id)
    half = ce_loss_recovered(model, _identity_sae(spec.d_model, 0.5), ids, mask, layer=layer,
                             special_ids=[tok.bos_token_id])
    ce_clean = _ce_by_hand(model, ids, mask, None)
    ce_half = _ce_by_hand(model, ids, mask, spec.layer(layer), lambda h: 0.5 * h, keep)
    ce_zero = _ce_by_hand(model, ids, mask, spec.layer(layer), torch.zeros_like, keep)
    assert half.ce_clean == pytest.approx(ce_clean, rel=1e-5)
    assert half.ce_sae == pytest.approx(ce_half, rel=1e-5)
    assert half.ce_zero == pytest.approx(ce_zero, rel=1e-5)
    # Each CE matches the hand value to 1e-5 above; their differences are tiny on a random model, so the
    # ratio is checked against the reported CEs (a float32 forward vs a float64 sum would amplify noise).
    assert half.recovered == pytest.approx((half.ce_zero - half.ce_sae) / (half.ce_zero - half.ce_clean), rel=1e-6)
    assert (half.recovered > 0) == ((ce_zero - ce_half) / (ce_zero - ce_clean) > 0)
    assert ce_zero != pytest.approx(ce_clean)  # the baseline is a real intervention
    perfect = ce_loss_recovered(model, _identity_sae(spec.d_model), ids, mask, layer=layer,
                                special_ids=[tok.bos_token_id])
    assert perfect.recovered == pytest.approx(1.0, abs=1e-5)
    nothing = _identity_sae(spec.d_model, 0.0)
    assert ce_loss_recovered(model, nothing, ids, mask, layer=layer,
                             special_ids=[tok.bos_token_id]).recovered == pytest.approx(0.0, abs=1e-5)
    assert not math.isnan(half.recovered)


def test_ce_loss_recovered_rejects_wrong_width(tiny):
    model, tok, spec = tiny
    sae = SAE.from_config(SAEConfig(architecture="topk", d_in=spec.d_model + 1, d_sae=16, k=2,
                                    model_name="other", hook_layer=1))
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=rf"SAE expects d_in={spec.d_model + 1} \(trained on layer 1 of other\) "
                       rf"but layer 1 of .* has d_model={spec.d_model}"):
        ce_loss_recovered(model, sae, ids)
    with pytest.raises(ValueError, match="pass layer="):
        ce_loss_recovered(model, _identity_sae(spec.d_model), ids)
    with pytest.raises(IndexError, match="layer 9 is out of range"):
        ce_loss_recovered(model, _identity_sae(spec.d_model), ids, layer=9)

"""Unit-norm decoder units: `SAE.unit_norm_view()` (exact for every architecture) and
`SAE.fold_decoder_norms()` (exact only where σ commutes with a per-latent scale, so refused for TopK)."""

from __future__ import annotations

import pytest
import torch

from reasoning_dspy.sae import SAE, SAEConfig, load_sae, save_sae

D_IN, D_SAE, K = 16, 64, 4


def _uneven_sae(arch: str) -> tuple[SAE, torch.Tensor]:
    """A random SAE whose decoder rows have norms spread over 0.1–5: `(sae, norms [d_sae])`."""
    g = torch.Generator().manual_seed(0)
    sae = SAE.from_config(SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=K if arch == "topk" else None))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5)
        sae.b_enc.copy_(0.1 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(D_IN, generator=g))
        sae.W_dec.mul_(torch.empty(D_SAE, 1).uniform_(0.1, 5.0, generator=g))
        if arch == "jumprelu":
            sae.threshold.copy_(0.3 * torch.rand(D_SAE, generator=g))
    norms = sae.W_dec.detach().norm(dim=1)
    assert norms.max() / norms.min() > 10
    return sae, norms


def _active(f: torch.Tensor) -> torch.Tensor:
    return f != 0


@torch.no_grad()
def test_topk_view_keeps_the_trained_active_set():
    sae, norms = _uneven_sae("topk")
    x = torch.randn(512, D_IN)
    f, recon = sae(x)
    # the data really exercises the defect: scaling pre-activations by the norms picks other latents
    folded_pick = torch.zeros_like(f, dtype=torch.bool).scatter_(
        -1, (sae.pre_activation(x) * norms).topk(K, dim=-1).indices, True)
    trained_pick = torch.zeros_like(folded_pick).scatter_(-1, sae.pre_activation(x).topk(K, dim=-1).indices, True)
    assert (folded_pick != trained_pick).any(dim=-1).float().mean() > 0.5
    view = sae.unit_norm_view()
    g, view_recon = view(x)
    assert torch.equal(_active(g), _active(f))  # the same k latents fire
    torch.testing.assert_close(g, f * norms)
    torch.testing.assert_close(view_recon, recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view.decode(view.encode(x)), recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view.W_dec.norm(dim=1), torch.ones(D_SAE))
    torch.testing.assert_close(view.W_dec * norms[:, None], sae.W_dec)
    assert view.d_sae == D_SAE and view.cfg is not None and view.unit_norm_view() is view


def test_fold_decoder_norms_refuses_topk():
    sae, _ = _uneven_sae("topk")
    with pytest.raises(ValueError, match=r"topk SAE is not exact.*sae\.unit_norm_view\(\)"):
        sae.fold_decoder_norms()


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
@torch.no_grad()
def test_relu_and_jumprelu_view_equals_the_exact_fold(arch):
    sae, norms = _uneven_sae(arch)
    x = torch.randn(512, D_IN)
    view, folded = sae.unit_norm_view(), sae.fold_decoder_norms()
    f = sae.encode(x)
    assert 0 < _active(f).float().mean() < 1
    torch.testing.assert_close(view.encode(x), folded.encode(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(_active(view.encode(x)), _active(f))
    torch.testing.assert_close(view.W_dec, folded.W_dec)
    torch.testing.assert_close(view(x)[1], folded(x)[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view(x)[1], sae(x)[1], rtol=1e-5, atol=1e-5)


def test_view_is_a_copy_and_is_never_saved_as_the_sae(tmp_path):
    sae, norms = _uneven_sae("topk")
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    view = sae.unit_norm_view().to(torch.float64)
    for name, value in sae.state_dict().items():  # the trained SAE is untouched
        assert value.dtype == torch.float32 and torch.equal(value, before[name]), name
    x = torch.randn(8, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(view.encode(x.double()).float(), sae.encode(x) * norms)
    with pytest.raises(TypeError, match="unit-norm view .* not the trained SAE"):
        save_sae(view, tmp_path / "view")
    assert not (tmp_path / "view").exists()
    save_sae(sae, tmp_path / "sae")
    with torch.no_grad():
        torch.testing.assert_close(load_sae(tmp_path / "sae").encode(x), sae.encode(x))

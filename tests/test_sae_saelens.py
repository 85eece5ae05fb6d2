"""Parity with the real SAELens package (skipped when `sae_lens` is not installed)."""

from __future__ import annotations

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig  # noqa: E402
from sae_lens.saes.sae import SAE as SLSAE  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402

from reasoning_dspy.sae import load_sae, save_sae  # noqa: E402

D_IN, D_SAE = 16, 48



def _randomise(sl) -> None:
    with torch.no_grad():
        for name, p in sl.named_parameters():
            p.copy_(torch.rand_like(p) * 0.3 if name == "threshold" else torch.randn_like(p))


def _saelens(kind: str):
    meta = SAEMetadata(model_name="tiny-random", hook_name="blocks.2.hook_resid_post", hook_layer=2)
    if kind == "standard":
        sl = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta))
    elif kind == "jumprelu":
        sl = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta))
    else:
        sl = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6, metadata=meta))
    _randomise(sl)
    return sl


@pytest.mark.parametrize("kind", ["standard", "topk", "jumprelu"])
def test_folder_saved_by_saelens_loads_with_same_encode(tmp_path, kind):
    sl = _saelens(kind)
    sl.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == {"standard": "relu"}.get(kind, kind)
    assert ours.cfg.model_name == "tiny-random" and ours.cfg.hook_layer == 2
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), sl.encode(x))
        torch.testing.assert_close(ours.decode(ours.encode(x)), sl(x))


def test_topk_training_sae_saved_for_inference_loads(tmp_path):
    """SAELens trains TopK with decoder-norm rescaling and folds it on save; the result must match."""
    sl = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6))
    _randomise(sl)
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        want_f, _ = sl.encode_with_hidden_pre(x)
        want_out = sl(x)
    sl.save_inference_model(tmp_path)
    ours = load_sae(tmp_path)
    with torch.no_grad():
        got_f, got_out = ours(x)
    # latents are in the folded (unit-decoder) scale on both sides after SAELens' own fold
    ref = SLSAE.load_from_disk(tmp_path)
    torch.testing.assert_close(got_f, ref.encode(x))
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
    assert (got_f != 0).sum(-1).max() <= 6 and torch.equal(got_f != 0, want_f != 0)


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_our_folder_loads_in_saelens(tmp_path, arch):
    from reasoning_dspy.sae import SAE, SAEConfig

    ours = SAE.from_config(SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=6 if arch == "topk" else None,
                                     model_name="tiny-random", hook_layer=2, hook_name="blocks.2.hook_resid_post"))
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(torch.rand_like(p) * 0.3 if name == "threshold" else torch.randn_like(p))
    save_sae(ours, tmp_path)
    sl = SLSAE.load_from_disk(tmp_path)
    assert sl.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(sl.encode(x), ours.encode(x))
        torch.testing.assert_close(sl(x), ours(x)[1])


def test_topk_forward_matches_saelens_forward():
    sl = _saelens("topk")
    from reasoning_dspy.sae import SAE, SAEConfig

    ours = SAE.from_config(SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=6))
    ours.load_state_dict(sl.state_dict())
    x = torch.randn(64, D_IN) * 3
    with torch.no_grad():
        f, recon = ours(x)
        torch.testing.assert_close(f, sl.encode(x))
        torch.testing.assert_close(recon, sl(x))
    # and the training fast path reconstructs the same thing
    from reasoning_dspy.sae.fast_topk import topk_forward_fast

    with torch.no_grad():
        fast_recon, _, _, _ = topk_forward_fast(x, ours.W_enc, ours.b_enc, ours.W_dec, ours.b_dec, 6)
    torch.testing.assert_close(fast_recon, sl(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["standard", "jumprelu"])
def test_unit_norm_view_matches_saelens_fold(tmp_path, kind):
    """Where folding decoder norms is exact, our unit-norm view gives what SAELens' fold gives."""
    sl = _saelens(kind)
    sl.save_model(tmp_path)
    ours = load_sae(tmp_path)
    sl.fold_W_dec_norm()
    x = torch.randn(64, D_IN) * 3
    with torch.no_grad():
        view = ours.unit_norm_view()
        torch.testing.assert_close(view.encode(x), sl.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(view.W_dec, sl.W_dec)
        torch.testing.assert_close(view(x)[1], sl(x), rtol=1e-5, atol=1e-5)


def test_topk_fold_is_refused_here_as_in_saelens(tmp_path):
    sl = _saelens("topk")
    with pytest.raises(NotImplementedError, match="not safe for TopKSAEs"):
        sl.fold_W_dec_norm()
    sl.save_model(tmp_path)
    ours = load_sae(tmp_path)
    with pytest.raises(ValueError, match="not exact"):
        ours.fold_decoder_norms()
    x = torch.randn(64, D_IN) * 3
    with torch.no_grad():  # the view keeps SAELens' own choice of latents
        assert torch.equal(ours.unit_norm_view().encode(x) != 0, sl.encode(x) != 0)

"""SAE files: exact round trip, SAELens layouts (6.x and older), clear errors for bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from reasoning_dspy.sae import SAE, SAEConfig, SAEFileError, load_sae, save_sae


def _random_sae(arch: str, d_in: int = 12, d_sae: int = 40, **kw) -> SAE:
    sae = SAE.from_config(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=5 if arch == "topk" else None,
                                    model_name="tiny-random", hook_layer=2, hook_name="blocks.2.hook_resid_post", **kw))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
        if arch == "jumprelu":
            sae.threshold.uniform_(0.1, 0.5)
    return sae


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_save_load_round_trip_is_exact(tmp_path, arch):
    sae = _random_sae(arch)
    save_sae(sae, tmp_path / arch)
    back = load_sae(tmp_path / arch)
    assert type(back) is type(sae) and back.cfg == sae.cfg
    for (n, a), (_, b) in zip(sae.named_parameters(), back.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    x = torch.randn(9, 12)
    assert torch.equal(sae.encode(x), back.encode(x))


def test_cfg_json_uses_saelens_names(tmp_path):
    save_sae(_random_sae("relu"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["d_in"] == 12 and cfg["d_sae"] == 40
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    assert cfg["metadata"]["model_name"] == "tiny-random"
    from safetensors import safe_open

    with safe_open(tmp_path / "sae_weights.safetensors", "pt") as fh:
        shapes = {k: fh.get_slice(k).get_shape() for k in fh.keys()}  # noqa: SIM118
    assert shapes == {"W_enc": [12, 40], "W_dec": [40, 12], "b_enc": [40], "b_dec": [12]}


def _write_folder(path, cfg: dict, tensors: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "sae_weights.safetensors")


def _tensors(d_in=6, d_sae=10, threshold=False):
    g = torch.Generator().manual_seed(3)
    t = {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": torch.randn(d_sae, d_in, generator=g),
         "b_enc": torch.randn(d_sae, generator=g), "b_dec": torch.randn(d_in, generator=g)}
    if threshold:
        t["threshold"] = torch.rand(d_sae, generator=g)
    return t


def test_loads_saelens_6_folder_with_decoder_norm_rescaling(tmp_path):
    t = _tensors()
    cfg = {"architecture": "topk", "d_in": 6, "d_sae": 10, "k": 3, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "rescale_acts_by_decoder_norm": True,
           "metadata": {"model_name": "gpt2", "hook_name": "blocks.4.hook_resid_post", "hook_layer": 4}}
    _write_folder(tmp_path, cfg, t)
    sae = load_sae(tmp_path)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 3 and sae.cfg.model_name == "gpt2"
    assert sae.cfg.hook_layer == 4
    # SAELens' rescaled TopK by hand: pre · ‖W_dec‖, top-3, decode with f / ‖W_dec‖
    x = torch.randn(5, 6)
    norms = t["W_dec"].norm(dim=1)
    pre = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms
    v, i = pre.topk(3, dim=-1)
    f = torch.zeros_like(pre).scatter_(-1, i, v.relu())
    recon = (f / norms) @ t["W_dec"] + t["b_dec"]
    got_f, got_recon = sae(x)
    torch.testing.assert_close(got_f, f)
    torch.testing.assert_close(got_recon, recon)


def test_loads_pre_6_saelens_configs(tmp_path):
    old = {"d_in": 6, "d_sae": 10, "hook_point": "blocks.1.hook_resid_pre", "hook_point_layer": 1,
           "model_name": "gpt2-small", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4},
           "dtype": "torch.float32", "normalize_activations": False}
    _write_folder(tmp_path / "old", old, _tensors())
    sae = load_sae(tmp_path / "old")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 4 and sae.cfg.hook_name == "blocks.1.hook_resid_pre"
    jr = {"architecture": "jumprelu", "d_in": 6, "d_sae": 10, "model_name": "gemma-2-2b"}
    _write_folder(tmp_path / "jr", jr, _tensors(threshold=True))
    j = load_sae(tmp_path / "jr")
    x = torch.randn(4, 6)
    t = _tensors(threshold=True)
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    torch.testing.assert_close(j.encode(x), pre.relu() * (pre > t["threshold"]))
    std = {"architecture": "standard", "d_in": 6, "d_sae": 10, "apply_b_dec_to_input": False}
    _write_folder(tmp_path / "std", std, _tensors())
    s = load_sae(tmp_path / "std")
    pre = x @ t["W_enc"] + t["b_enc"]
    torch.testing.assert_close(s.encode(x), pre.relu())


def test_refuses_pickles(tmp_path):
    pt = tmp_path / "sae.pt"
    pt.write_bytes(b"not really a pickle")
    with pytest.raises(SAEFileError, match="refusing to load pickled weights"):
        load_sae(pt)
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "cfg.json").write_text("{}")
    (folder / "sae_weights.bin").write_bytes(b"x")
    with pytest.raises(SAEFileError, match="refusing to load pickled weights"):
        load_sae(folder)


def test_truncated_and_malformed_files(tmp_path):
    save_sae(_random_sae("topk"), tmp_path / "a")
    w = tmp_path / "a" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(SAEFileError, match="truncated"):
        load_sae(tmp_path / "a")
    save_sae(_random_sae("topk"), tmp_path / "b")
    c = tmp_path / "b" / "cfg.json"
    c.write_text(c.read_text()[:30])
    with pytest.raises(SAEFileError, match="not valid JSON"):
        load_sae(tmp_path / "b")
    with pytest.raises(SAEFileError, match="no SAE folder"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEFileError, match="cfg.json is missing"):
        load_sae(tmp_path / "empty")


def test_wrong_shapes_and_missing_tensors(tmp_path):
    cfg = {"architecture": "standard", "d_in": 6, "d_sae": 10}
    t = _tensors(d_in=6, d_sae=12)
    _write_folder(tmp_path / "shape", cfg, t)
    with pytest.raises(SAEFileError, match=r"W_enc has shape \[6, 12\], expected \[6, 10\]"):
        load_sae(tmp_path / "shape")
    _write_folder(tmp_path / "jr", {**cfg, "architecture": "jumprelu"}, _tensors())
    with pytest.raises(SAEFileError, match=r"missing tensors \['threshold'\]"):
        load_sae(tmp_path / "jr")


@pytest.mark.parametrize(("cfg", "match"), [
    ({"architecture": "gated", "d_in": 6, "d_sae": 10}, "'gated' is not supported"),
    ({"architecture": "standard", "d_in": 6, "d_sae": 10, "normalize_activations": "layer_norm"}, "normalised at run time"),
    ({"architecture": "topk", "d_in": 6, "d_sae": 10, "k": 11}, "k=11 cannot exceed d_sae=10"),
    ({"architecture": "topk", "d_in": 6, "d_sae": 10}, "needs k"),
    ({"architecture": "standard", "d_in": -6, "d_sae": 10}, "greater than 0"),
    ({"architecture": "standard", "d_in": 6, "d_sae": 10, "dtype": "int8"}, "dtype must be one of"),
])
def test_invalid_configs_in_files(tmp_path, cfg, match):
    _write_folder(tmp_path, cfg, _tensors())
    with pytest.raises(SAEFileError, match=match):
        load_sae(tmp_path)


def test_invalid_sae_configs():
    with pytest.raises(ValueError, match="k=50 cannot exceed d_sae=40"):
        SAEConfig(architecture="topk", d_in=4, d_sae=40, k=50)
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        SAE.from_config(SAEConfig.model_construct(architecture="gated", d_in=4, d_sae=8, dtype="float32"))


def test_d_in_mismatch_is_a_clear_error():
    sae = _random_sae("topk")
    with pytest.raises(ValueError, match=r"d_in=12 \(trained on layer 2 of tiny-random\), got last dimension 64"):
        sae.encode(torch.randn(3, 64))


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_fold_input_scale_is_exact(arch):
    sae = _random_sae(arch)
    x = torch.randn(20, 12)
    s = 3.7
    f_scaled, recon_scaled = sae(s * x)
    W_dec = sae.W_dec.detach().clone()
    sae.fold_input_scale(s)
    f, recon = sae(x)
    torch.testing.assert_close(f, f_scaled / s)
    torch.testing.assert_close(recon, recon_scaled / s)
    assert torch.equal(sae.W_dec, W_dec)  # decoder rows keep their (unit) norm


def test_a_shipped_sae_name_says_how_to_rebuild_when_its_files_are_missing(monkeypatch, tmp_path):
    import importlib

    from reasoning_dspy.sae.io import SAEFileError

    monkeypatch.setattr(importlib.resources, "files", lambda _: tmp_path)
    with pytest.raises(SAEFileError, match="study-smollm2-reasoner.yaml"):
        load_sae("smollm2-reasoner")
    with pytest.raises(SAEFileError, match="no SAE folder"):
        load_sae("smollm2-reasoner-typo")

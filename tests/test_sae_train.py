"""SAE training: dictionary recovery on synthetic data, exact resume, outputs on a real cache, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from sparse_dictionary import dictionary_recovery, sparse_dictionary_data

from reasoning_dspy.sae import SAETrainConfig, load_sae, train_sae
from reasoning_dspy.sae.evals import evaluate_sae
from reasoning_dspy.sae.train_schedule import geometric_median, lr_at, sparsity_at


@pytest.fixture(scope="module")
def synthetic():
    """32 768 tokens in 32 dimensions, each a sparse mix (≈3 active) of 64 known unit atoms."""
    return sparse_dictionary_data(32768, 32, 64, active=3, seed=0)


def _cfg(**kw) -> SAETrainConfig:
    base = dict(d_sae=128, batch_size=256, lr=3e-3, tokens=32768 * 3)
    return SAETrainConfig(**{**base, **kw})


def test_topk_recovers_known_dictionary(synthetic):
    x, atoms = synthetic
    result = train_sae(_cfg(arch="topk", k=4), x, progress=False)
    recovery = dictionary_recovery(atoms, result.sae.W_dec)
    assert recovery >= 0.9, recovery
    assert result.eval.l0 == pytest.approx(4.0, abs=0.05)
    assert result.eval.fvu < 0.2
    # an untrained SAE of the same size is far from the dictionary: the bar measures learning
    untrained = train_sae(_cfg(arch="topk", k=4, tokens=256, lr=1e-9), x, progress=False)
    assert dictionary_recovery(atoms, untrained.sae.W_dec) < 0.6


@pytest.mark.parametrize(("arch", "kw", "max_fvu", "max_l0"), [
    ("relu", {"l1_coefficient": 1.0}, 0.2, 16.0),
    ("jumprelu", {"l0_coefficient": 2.0}, 0.2, 8.0),
])
def test_relu_and_jumprelu_reach_stated_fvu(synthetic, arch, kw, max_fvu, max_l0):
    x, atoms = synthetic
    result = train_sae(_cfg(arch=arch, **kw), x, progress=False)
    assert result.eval.fvu <= max_fvu
    assert result.eval.l0 <= max_l0
    assert dictionary_recovery(atoms, result.sae.W_dec) >= 0.85
    # the returned SAE takes raw activations (input scaling folded in) and agrees with eval
    again = evaluate_sae(result.sae, [x[:4096]])
    assert again.fvu <= max_fvu * 1.2


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
def test_bf16_compute_trains(synthetic, arch):
    x, _ = synthetic
    kw = {"k": 4, "l1_coefficient": 1.0, "l0_coefficient": 2.0}
    result = train_sae(_cfg(arch=arch, compute_dtype="bfloat16", tokens=32768, **kw), x, progress=False)
    assert result.sae.W_enc.dtype == torch.float32  # weights stay float32, only matmuls run in bf16
    assert result.eval.fvu < 0.4


def test_sparsity_penalty_matters(synthetic):
    x, _ = synthetic
    weak = train_sae(_cfg(arch="relu", l1_coefficient=0.1, tokens=32768), x, progress=False)
    strong = train_sae(_cfg(arch="relu", l1_coefficient=3.0, tokens=32768), x, progress=False)
    assert strong.eval.l0 < weak.eval.l0 / 2
    assert strong.eval.fvu > weak.eval.fvu


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_resume_matches_uninterrupted_run(synthetic, tmp_path, arch):
    x, _ = synthetic
    x = x[:8192]
    cfg = _cfg(arch=arch, k=4, d_sae=512, tokens=256 * 24, dead_tokens=256, k_aux=8, log_every=2)
    full = train_sae(cfg.model_copy(update={"out": str(tmp_path / "full")}), x, progress=False)
    part_cfg = cfg.model_copy(update={"out": str(tmp_path / "part")})
    stopped = train_sae(part_cfg, x, progress=False, stop_after=13)  # mid-epoch (32 batches per epoch)
    assert stopped.steps == 13 and (tmp_path / "part" / "checkpoint" / "state.json").is_file()
    resumed = train_sae(part_cfg.model_copy(update={"resume": True}), x, progress=False)
    assert resumed.steps == full.steps == 24
    for (name, a), (_, b) in zip(full.sae.named_parameters(), resumed.sae.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    if arch == "topk":
        assert any("aux" in row for row in full.log)  # dead latents existed: AuxK was part of the run
    full_log = [json.loads(s) for s in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    part_log = [json.loads(s) for s in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in full_log if "loss" in r] == [r["loss"] for r in part_log if "loss" in r]


def test_resume_refuses_a_different_config(synthetic, tmp_path):
    x, _ = synthetic
    cfg = _cfg(arch="topk", k=4, tokens=256 * 4, out=str(tmp_path))
    train_sae(cfg, x[:4096], progress=False, stop_after=2)
    with pytest.raises(ValueError, match="config differs in \\['k'\\]"):
        train_sae(cfg.model_copy(update={"k": 8, "resume": True}), x[:4096], progress=False)


def test_train_on_activation_cache_writes_outputs(tiny_cache, tmp_path):
    cfg = SAETrainConfig(cache=str(tiny_cache.path), out=str(tmp_path / "sae"), arch="topk", d_sae=256, k=8,
                         batch_size=512, lr=1e-3, tokens=512 * 12, log_every=3, eval_every=6)
    result = train_sae(cfg, progress=False)
    out = tmp_path / "sae"
    for name in ("cfg.json", "sae_weights.safetensors", "train_log.jsonl", "loss_curve.png", "training_config.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(s) for s in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 9, 12, 12] and rows[-1]["stopped"] == "completed"
    assert {"loss", "mse", "l0", "fvu", "dead_pct", "lr"} <= set(rows[0])
    assert {"fvu_val", "l0_val", "fvu_train"} <= set(rows[1]) and "fvu_val" not in rows[0]
    meta = json.loads((out / "training_config.json").read_text())
    assert SAETrainConfig.model_validate(meta["train"]) == cfg  # the saved metadata *is* the config
    sae = load_sae(out)
    assert sae.cfg.model_name == tiny_cache.model_name and sae.cfg.hook_layer == tiny_cache.layer
    acts = tiny_cache.load(("acts",))["acts"]
    ev = evaluate_sae(sae, [acts])
    assert ev.l0 <= 8 and ev.fvu < 1.0
    assert ev.fvu == pytest.approx(evaluate_sae(result.sae, [acts]).fvu, rel=1e-5)


def test_batch_larger_than_data_is_a_clear_error(synthetic):
    x, _ = synthetic
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_sae(_cfg(batch_size=4096), x[:1000], progress=False)


@pytest.mark.parametrize(("kw", "match"), [
    ({"arch": "topk", "k": 200, "d_sae": 128}, "k=200 cannot exceed d_sae=128"),
    ({"l1_coefficient": -1.0}, "greater than or equal to 0"),
    ({"lr": 0}, "greater than 0"),
    ({"lr_warmup_frac": 0.6, "lr_decay_frac": 0.6}, "exceeds 1"),
    ({"arch": "gated"}, "topk"),
    ({"dtype": "float32"}, "Extra inputs"),
])
def test_invalid_train_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        SAETrainConfig(**kw)


def test_schedules():
    cfg = SAETrainConfig(lr=1.0, lr_warmup_frac=0.1, lr_decay_frac=0.2, arch="relu", l1_coefficient=4.0,
                         sparsity_warmup_frac=0.5)
    lrs = [lr_at(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[50] == 1.0
    assert lrs[80] == 1.0 and lrs[90] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.05)
    assert sparsity_at(cfg, 0, 100) == pytest.approx(4.0 / 50) and sparsity_at(cfg, 60, 100) == 4.0


def test_geometric_median_is_robust_to_outliers():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [100.0, 100.0]])
    med = geometric_median(pts)
    assert med.norm() < 1.5 and pts.mean(0).norm() > 20  # the mean is dragged away, the median is not
    # optimality: the sum of distances is not lower at nearby points
    cost = lambda p: (pts - p).norm(dim=1).sum()  # noqa: E731
    for delta in ([1e-2, 0], [-1e-2, 0], [0, 1e-2], [0, -1e-2]):
        assert cost(med) <= cost(med + torch.tensor(delta)) + 1e-6


def test_cli_train_sae(tiny_cache, tmp_path):
    from typer.testing import CliRunner

    from reasoning_dspy.cli import app

    out = tmp_path / "cli_sae"
    res = CliRunner().invoke(app, ["train-sae", "--cache", str(tiny_cache.path), "--arch", "topk", "--d-sae", "128",
                                   "--k", "4", "--batch-size", "256", "--tokens", "1024", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "FVU" in res.output and "held-out" in res.output and load_sae(out).cfg.k == 4
    bad = CliRunner().invoke(app, ["train-sae", "--cache", str(tiny_cache.path), "--k", "500", "--d-sae", "128",
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "k=500 cannot exceed d_sae=128" in bad.output
    missing = CliRunner().invoke(app, ["train-sae", "--cache", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "no activation cache" in missing.output

"""SAE training as a user runs it on a real model: provenance from a tensor, several caches, token
and time budgets with resume, and FVU measured on held-out prompts."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from typer.testing import CliRunner

from reasoning_dspy.cli import app
from reasoning_dspy.sae import SAETrainConfig, load_sae, train_sae
from reasoning_dspy.sae import train as train_module


def _cfg(**kw) -> SAETrainConfig:
    base = dict(arch="topk", d_sae=128, k=4, batch_size=256, lr=3e-3, log_every=2)
    return SAETrainConfig(**{**base, **kw})


def _same_weights(a, b) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.fixture(scope="module")
def second_cache(tiny, bundled_prompts, tmp_path_factory):
    """Layer-2 activations of other prompts than `tiny_cache`: same model, layer and width."""
    from reasoning_dspy.activations import extract_activations

    return extract_activations(tiny.model, tiny.tokenizer, bundled_prompts[64:96], 2,
                               tmp_path_factory.mktemp("second_cache"), dtype="float32", batch_size=16,
                               shard_tokens=512, progress=False)


# -- provenance ------------------------------------------------------------------------------------


def test_tensor_training_records_layer_and_model(tmp_path):
    cfg = _cfg(tokens=256 * 4, hook_layer=3, model_name="tiny-random", out=str(tmp_path))
    result = train_sae(cfg, torch.randn(2048, 16), progress=False)
    for sae in (result.sae, load_sae(tmp_path)):
        assert (sae.cfg.hook_layer, sae.cfg.model_name) == (3, "tiny-random")
        assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert json.loads((tmp_path / "cfg.json").read_text())["metadata"]["hook_layer"] == 3  # SAELens reads it


def test_cache_metadata_is_the_default_and_contradictions_are_refused(tiny_cache):
    agreed = train_sae(_cfg(tokens=256 * 2, hook_layer=tiny_cache.layer, model_name=tiny_cache.model_name),
                       tiny_cache, progress=False)
    assert agreed.sae.cfg.hook_name == f"blocks.{tiny_cache.layer}.hook_resid_post"
    with pytest.raises(ValueError, match=r"hook_layer=5 contradicts the cache .* extracted at layer 2"):
        train_sae(_cfg(tokens=256 * 2, hook_layer=5), tiny_cache, progress=False)
    with pytest.raises(ValueError, match=r"model_name='other' contradicts the cache"):
        train_sae(_cfg(tokens=256 * 2, model_name="other"), tiny_cache, progress=False)


# -- several caches --------------------------------------------------------------------------------


def test_batches_draw_from_every_cache(tiny_cache, second_cache):
    from reasoning_dspy.sae.train_data import TrainData, open_sources

    data = TrainData(open_sources([tiny_cache, str(second_cache.path)]), 256, seed=0, val_fraction=0.05)
    assert data.n_train + data.n_val == tiny_cache.n_tokens + second_cache.n_tokens
    seen = torch.cat([u for _, u in data.epoch(0, units=True)])
    assert set((seen // 2**40).tolist()) == {0, 1}
    again = torch.cat([x for x in TrainData(open_sources([tiny_cache, second_cache]), 256, 0, 0.05).epoch(0)])
    assert torch.equal(torch.cat(list(data.epoch(0))), again)  # deterministic from the seed


def test_train_on_several_caches_and_resume(tiny_cache, second_cache, tmp_path):
    caches = [str(tiny_cache.path), str(second_cache.path)]
    cfg = _cfg(cache=caches, tokens=256 * 10)
    full = train_sae(cfg.model_copy(update={"out": str(tmp_path / "full")}), progress=False)
    assert full.sae.cfg.hook_layer == 2 and full.steps == 10
    part = cfg.model_copy(update={"out": str(tmp_path / "part")})
    train_sae(part, progress=False, stop_after=4)
    resumed = train_sae(part.model_copy(update={"resume": True}), progress=False)
    _same_weights(full.sae, resumed.sae)
    meta = json.loads((tmp_path / "full" / "training_config.json").read_text())
    assert meta["sources"] == caches and SAETrainConfig.model_validate(meta["train"]).cache == caches


def test_several_caches_must_agree(tiny_cache, tmp_path, tiny):
    from reasoning_dspy.activations import extract_activations

    layer1 = extract_activations(tiny.model, tiny.tokenizer, ["Wait, why?", "Hmm, so."], 1, tmp_path / "l1",
                                 dtype="float32", progress=False)
    with pytest.raises(ValueError, match=r"caches disagree on layer: .*has layer 2, .*l1' has layer 1"):
        train_sae(_cfg(cache=[str(tiny_cache.path), str(layer1.path)]), progress=False)
    with pytest.raises(ValueError, match=r"disagree on width: .*' has d_model=64, tensor #1 has d_model=8"):
        train_sae(_cfg(), [tiny_cache, torch.randn(512, 8)], progress=False)


def test_cli_takes_several_caches(tiny_cache, second_cache, tmp_path):
    out = tmp_path / "sae"
    res = CliRunner().invoke(app, ["train-sae", "--cache", str(tiny_cache.path), "--cache", str(second_cache.path),
                                   "--d-sae", "64", "--k", "4", "--batch-size", "256", "--tokens", "1024",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "training_config.json").read_text())
    assert meta["sources"] == [str(tiny_cache.path), str(second_cache.path)]


# -- budgets ---------------------------------------------------------------------------------------


def test_token_budget_stops_saves_and_resumes(tmp_path):
    x = torch.randn(4096, 16)
    cfg = _cfg(tokens=256 * 12)
    full = train_sae(cfg, x, progress=False)
    part = cfg.model_copy(update={"out": str(tmp_path), "max_tokens": 256 * 5})
    stopped = train_sae(part, x, progress=False)
    assert (stopped.stopped, stopped.steps, stopped.tokens) == ("budget_tokens", 5, 256 * 5)
    assert load_sae(tmp_path).d_sae == 128 and (tmp_path / "checkpoint" / "state.json").is_file()
    meta = json.loads((tmp_path / "training_config.json").read_text())
    assert meta["stopped"] == "budget_tokens" and meta["steps"] == 5 and meta["total_steps"] == 12
    resumed = train_sae(part.model_copy(update={"resume": True, "max_tokens": None}), x, progress=False)
    assert (resumed.stopped, resumed.steps, resumed.tokens) == ("completed", 12, 256 * 7)
    _same_weights(full.sae, resumed.sae)
    log = [json.loads(s) for s in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stopped"]) for r in log if "stopped" in r] == [(5, "budget_tokens"), (12, "completed")]


def test_time_budget_stops_saves_and_resumes(tmp_path, monkeypatch):
    x = torch.randn(4096, 16)
    cfg = _cfg(tokens=256 * 12)
    full = train_sae(cfg, x, progress=False)
    ticks = itertools.count()
    monkeypatch.setattr(train_module, "_clock", lambda: float(next(ticks)))  # one second per reading
    part = cfg.model_copy(update={"out": str(tmp_path), "max_seconds": 4.0})
    stopped = train_sae(part, x, progress=False)
    assert stopped.stopped == "budget_time" and 1 <= stopped.steps < 12
    assert json.loads((tmp_path / "training_config.json").read_text())["stopped"] == "budget_time"
    again = train_sae(part.model_copy(update={"resume": True}), x, progress=False)  # same budget: goes on
    assert again.steps > stopped.steps
    resumed = train_sae(part.model_copy(update={"resume": True, "max_seconds": None}), x, progress=False)
    assert resumed.stopped == "completed" and resumed.steps == 12
    _same_weights(full.sae, resumed.sae)


def test_cli_time_budget(tiny_cache, tmp_path):
    args = ["train-sae", "--cache", str(tiny_cache.path), "--d-sae", "64", "--k", "4", "--batch-size", "256",
            "--tokens", "2560", "--out", str(tmp_path), "--max-seconds", "0.001"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "stopped: budget_time (--max-seconds) at step 1 of 10" in res.output and "--resume" in res.output
    res = CliRunner().invoke(app, [a for a in args if a not in ("--max-seconds", "0.001")] + ["--resume"])
    assert res.exit_code == 0 and "stopped" not in res.output
    assert json.loads((tmp_path / "training_config.json").read_text())["steps"] == 10


# -- held-out FVU ----------------------------------------------------------------------------------


def test_held_out_fvu_shows_overfitting(tmp_path):
    """A wide SAE trained for 60 epochs on 384 noise tokens memorises them: training FVU is low, held-out
    FVU is not, and the held-out one is what is reported."""
    x = torch.randn(512, 16)
    cfg = _cfg(d_sae=256, k=2, batch_size=128, lr=1e-2, tokens=512 * 60, val_fraction=0.25, dead_tokens=10**9,
               out=str(tmp_path))
    result = train_sae(cfg, x, progress=False)
    assert result.eval_val is not None and result.eval is result.eval_val
    assert result.eval_train.fvu < 0.25 and result.eval_val.fvu > 3 * result.eval_train.fvu
    meta = json.loads((tmp_path / "training_config.json").read_text())
    assert meta["fvu_val"] == pytest.approx(result.eval_val.fvu) and meta["fvu_train"] < meta["fvu_val"]
    assert meta["val_tokens"] == result.eval_val.n_tokens == 130  # whole 5-row blocks, >= 25 % of the rows


def test_no_held_out_token_is_trained_on(monkeypatch):
    """Row i of the data carries i in its first coordinate; every row train_sae reads for training
    (batches and the initialisation sample) is checked against the held-out rows."""
    x = torch.randn(3000, 8)
    x[:, 0] = torch.arange(3000, dtype=torch.float32)
    from reasoning_dspy.sae.train_data import TrainData

    seen: list[torch.Tensor] = []

    class Recording(TrainData):
        def _pass(self, seed, batch_size, *, held_out=False, units=False, **kwargs):
            for acts, u in super()._pass(seed, batch_size, held_out=held_out, units=units, **kwargs):
                if not held_out:
                    seen.append(acts[:, 0].long())
                yield acts, u

    monkeypatch.setattr(train_module, "TrainData", Recording)
    train_sae(_cfg(d_sae=32, batch_size=100, tokens=3000 * 3, val_fraction=0.1, normalize_inputs=False), x,
              progress=False)
    data = TrainData([x], 100, seed=0, val_fraction=0.1)
    held = set(torch.cat([a[:, 0] for a, _ in data._pass(1, 1, held_out=True)]).long().tolist())
    assert len(held) == data.n_val == 300  # whole 30-row blocks, 10 % of the rows
    trained = set(torch.cat(seen).tolist())
    assert not trained & held and trained | held == set(range(3000))


def test_cache_holds_out_whole_prompts(tiny_cache):
    from reasoning_dspy.sae.train_data import TrainData

    data = TrainData([tiny_cache], 256, seed=0, val_fraction=0.1)
    val_prompts = set(data.val_units[0].nonzero().squeeze(1).tolist())
    trained = set(torch.cat([u for _, u in data.epoch(0, units=True)]).tolist())
    seq_ids = tiny_cache.load(("seq_ids",))["seq_ids"]
    assert val_prompts and not trained & val_prompts
    assert data.n_val == int(torch.isin(seq_ids, torch.tensor(sorted(val_prompts))).sum())
    assert abs(data.n_val / tiny_cache.n_tokens - 0.1) < 0.05


def test_cli_prints_held_out_fvu(tiny_cache, tmp_path):
    res = CliRunner().invoke(app, ["train-sae", "--cache", str(tiny_cache.path), "--d-sae", "64", "--k", "4",
                                   "--batch-size", "256", "--tokens", "1024", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "(held-out; train " in res.output
    meta = json.loads((tmp_path / "training_config.json").read_text())
    assert meta["fvu_val"] == meta["eval_val"]["fvu"] and meta["val_tokens"] > 0

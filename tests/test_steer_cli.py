"""`reasoning-dspy steer`: baseline and steered answers from the command line, checked against the
Python engine they come from."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoning_dspy.cli import app

runner = CliRunner()
PROMPTS = ["Is 91 a prime number?", "How many legs do three spiders have?"]
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def trained(tiny, tiny_cache, tmp_path_factory):
    """A small TopK SAE trained on the layer-2 cache, and its ReasonScore folder."""
    from reasoning_dspy.features.reasonscore import VocabularyWarning, score_features
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    root = tmp_path_factory.mktemp("steer_cli")
    sae = train_sae(SAETrainConfig(cache=str(tiny_cache.path), out=str(root / "sae"), arch="topk", d_sae=64, k=8,
                                   batch_size=256, tokens=2048, log_every=4), tiny_cache, progress=False).sae
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VocabularyWarning)
        scores = score_features(tiny_cache, sae, tokenizer=tiny.tokenizer, top_n=4, progress=False)
    scores.save(root / "scores")
    return root, scores


def _plain(tiny, prompt: str, max_tokens: int) -> str:
    from reasoning_dspy.program.lm import SteeredEngine

    engine = SteeredEngine(tiny.model, tiny.tokenizer, max_tokens=max_tokens)
    try:
        return engine.generate([prompt])[0].text
    finally:
        engine.close()


def test_steer_writes_baseline_and_steered_answers(tiny, trained, tmp_path):
    from reasoning_dspy.program.lm import SteeredEngine
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.steering import SteeringSpec

    root, scores = trained
    out = tmp_path / "steer.jsonl"
    args = ["steer", "--model", "tiny-random", "--sae", str(root / "sae"), "--scores", str(root / "scores"),
            "--top", "2", "--strength", "200", "--max-tokens", "12", "--out", str(out)]
    for p in PROMPTS:
        args += ["--prompt", p]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    top2 = scores.top(2)
    assert f"steering features {top2} at γ=200.0 (add, layer 2)" in " ".join(result.output.split())
    assert "Is 91 a prime" in result.output and f"wrote 2 rows to {out}" in " ".join(result.output.split())

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS
    for r in rows:
        assert set(r) == {"prompt", "baseline", "steered", "baseline_activation", "steered_activation", "model",
                          "sae", "steering", "steered_perturbation"}
        assert r["steered_perturbation"]["ratio"] > 0
        assert r["model"] == "tiny-random" and r["sae"] == str(root / "sae")
        assert SteeringSpec.model_validate(r["steering"]) == SteeringSpec.from_features(top2, 200.0, layer=2)
        for key in ("baseline_activation", "steered_activation"):
            report = r[key]
            assert report["n_tokens"] > 0 and isinstance(report["features_mean"], float)
        # the baseline is exactly what the plain, unsteered engine answers
        assert r["baseline"] == _plain(tiny, r["prompt"], 12)
        # a strong steer changes the answer
        assert r["steered"] != r["baseline"]

    # the steered answer is the Python engine's answer for the recorded spec
    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=load_sae(root / "sae"), max_activation=root / "scores",
                           max_tokens=12)
    try:
        spec = SteeringSpec.model_validate(rows[0]["steering"])
        assert engine.generate([PROMPTS[0]], steering=spec)[0].text == rows[0]["steered"]
    finally:
        engine.close()


def test_steer_clamp_with_chosen_features_and_a_prompts_file(tiny, trained, tmp_path):
    root, _ = trained
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Why is the sky blue?\n")
    out = tmp_path / "nested" / "clamp.jsonl"
    result = runner.invoke(app, ["steer", "--model", "tiny-random", "--sae", str(root / "sae"),
                                 "--max-activation", str(root / "scores" / "scores.safetensors"),
                                 "--feature", "5", "--feature", "3", "--feature", "5", "--mode", "clamp",
                                 "--strength", "-2", "--prompts", str(prompts), "--prompt", "Wait, what?",
                                 "--max-tokens", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Wait, what?", "Why is the sky blue?"]
    assert rows[0]["steering"] == {"features": {"3": -2.0, "5": -2.0}, "vector": None, "layer": 2, "mode": "clamp"}
    assert rows[1]["baseline"] == _plain(tiny, "Why is the sky blue?", 6)


def test_steer_in_residual_units_without_f_max_prints_the_perturbation(tiny, trained, tmp_path):
    """--units residual needs no --scores: each token moves by γ·√2·‖x‖ for two features, which the
    command prints and writes; the answer is the engine's for the recorded spec."""
    from reasoning_dspy.program.lm import SteeredEngine
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.steering import SteeringSpec

    root, _ = trained
    out = tmp_path / "rel.jsonl"
    result = runner.invoke(app, ["steer", "--model", "tiny-random", "--sae", str(root / "sae"), "--feature", "3",
                                 "--feature", "5", "--units", "residual", "--strength", "0.3", "--prompt", "Why?",
                                 "--max-tokens", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "at γ=0.3 × ‖x‖, α = 0.424 (add, layer 2)" in text
    assert "perturbation: ‖δ‖ =" in text and "= 0.424 × ‖x‖" in text
    row = json.loads(out.read_text())
    spec = SteeringSpec.model_validate(row["steering"])
    assert spec == SteeringSpec.from_features([3, 5], 0.3, layer=2, units="residual")
    assert row["steered_perturbation"]["ratio"] == pytest.approx(0.3 * 2**0.5, rel=1e-4)
    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=load_sae(root / "sae"), max_tokens=6)
    try:
        assert engine.generate(["Why?"], steering=spec)[0].text == row["steered"]
    finally:
        engine.close()


@pytest.mark.parametrize(("extra", "message"), [
    (["--units", "bogus"], "--units must be fmax or residual, got 'bogus'"),
    (["--units", "residual", "--mode", "clamp"], "use --units fmax with clamp"),
    (["--units", "residual", "--strength", "20"], "|γ| must be at most 10"),
])
def test_steer_refuses_bad_units(trained, extra, message):
    root, _ = trained
    result = runner.invoke(app, ["steer", "--model", "tiny-random", "--sae", str(root / "sae"), "--feature", "3",
                                 "--prompt", "Why?", *extra])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_steer_an_sae_without_a_layer_at_the_given_layer(trained, tmp_path):
    from reasoning_dspy.sae import load_sae, save_sae

    root, _ = trained
    sae = load_sae(root / "sae")
    sae.cfg = sae.cfg.model_copy(update={"hook_layer": None})
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "steer.jsonl"
    result = runner.invoke(app, ["steer", "--model", "tiny-random", "--sae", str(tmp_path / "sae"), "--scores",
                                 str(root / "scores"), "--top", "1", "--layer", "2", "--prompt", "Hmm?",
                                 "--max-tokens", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["steering"]["layer"] == 2


def test_readme_steer_command_runs(trained, tmp_path, monkeypatch):
    """The README's `reasoning-dspy steer` line, as written, on an SAE and scores at its paths."""
    root, _ = trained
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    line = next(ln for b in blocks for ln in b.splitlines() if ln.startswith("reasoning-dspy steer "))
    shutil.copytree(root / "sae", tmp_path / "runs" / "sae")
    shutil.copytree(root / "scores", tmp_path / "runs" / "scores")
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line.split("#")[0])[1:]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    assert out.is_file() and json.loads(out.read_text().splitlines()[0])["steered"]

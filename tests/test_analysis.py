"""Feature analysis (contexts, top tokens, plots), the `score` CLI command and the demo's score stage."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_reasonscore_synthetic import EVERYWHERE, WAIT_ONLY, WINDOW, planted_cache, planted_sae
from typer.testing import CliRunner

from reasoning_dspy.features.analysis import analyze_features, load_analysis, write_analysis
from reasoning_dspy.features.reasonscore import FeatureScores, score_features
from reasoning_dspy.features.vocab import token_pieces
from reasoning_dspy.sae import save_sae


@pytest.fixture(scope="module")
def planted(tiny, tmp_path_factory):
    cache = planted_cache(tmp_path_factory.mktemp("planted"), tiny.tokenizer)
    sae = planted_sae()
    scores = score_features(cache, sae, tokenizer=tiny.tokenizer, progress=False)
    return cache, sae, scores


def test_contexts_and_top_tokens_of_planted_features(planted, tiny):
    cache, sae, scores = planted
    reports = analyze_features(cache, sae, scores, tokenizer=tiny.tokenizer, n_features=3, n_contexts=4,
                               context_left=3, context_right=2, progress=False)
    assert [r.index for r in reports] == scores.top(3) and reports[0].index == WINDOW
    assert reports[2].max_activation == 0 and reports[2].contexts == []  # a silent feature has no contexts
    reports = reports[:2]
    data = cache.load()
    pieces = token_pieces(tiny.tokenizer)
    for r in reports:
        assert len(r.contexts) == 4
        acts = [c.activation for c in r.contexts]
        assert acts == sorted(acts, reverse=True)
        assert acts[0] == pytest.approx(float(scores.max_activation[r.index]))  # the best context is the max
        assert len({c.prompt for c in r.contexts}) == 4  # one context per prompt
        for c in r.contexts:
            assert len(c.tokens) == len(c.activations) and c.activations[c.center] == pytest.approx(c.activation)
            # the window is the prompt's own tokens around the max, never another prompt's
            rows = (data["seq_ids"] == c.prompt).nonzero().flatten()
            prompt_pieces = [pieces[t] for t in data["token_ids"][rows].tolist()]
            at = (data["positions"][rows] == c.position).nonzero().item()
            lo = max(at - 3, 0)
            assert c.tokens == prompt_pieces[lo : at + 3]
    # the wait-only feature carries most of its activation on "wait" tokens or their neighbours
    wait_only = analyze_features(cache, sae, scores, tokenizer=tiny.tokenizer, features=[WAIT_ONLY],
                                 progress=False)[0]
    assert wait_only.top_words[0][0] == "wait"
    assert any("wait" in c.text.lower() for c in wait_only.contexts)
    everywhere = analyze_features(cache, sae, scores, tokenizer=tiny.tokenizer, features=[EVERYWHERE],
                                  progress=False)[0]
    assert everywhere.density == 1.0 and everywhere.score < 0
    total = sum(t["total"] for t in everywhere.top_tokens)
    assert 0 < total and all(t["count"] > 0 for t in everywhere.top_tokens)


def test_write_analysis_outputs(planted, tiny, tmp_path):
    cache, sae, scores = planted
    reports = analyze_features(cache, sae, scores, tokenizer=tiny.tokenizer, n_features=5, progress=False)
    paths = write_analysis(tmp_path, scores, reports)
    assert set(paths) == {"analysis.json", "contexts.csv", "top_tokens.csv", "score_distribution.png",
                          "top_features.png"}
    for name in ("score_distribution.png", "top_features.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[name].stat().st_size > 10_000
    meta = json.loads(paths["analysis.json"].read_text())
    assert [f["index"] for f in meta["features"]] == scores.top(5)
    assert meta["features"][0]["contexts"][0]["text"].count("[[") == 1
    rows = list(csv.DictReader(paths["contexts.csv"].open()))
    assert {int(r["feature"]) for r in rows} == {r.index for r in reports if r.contexts} and rows[0]["rank"] == "1"
    assert load_analysis(tmp_path) == reports  # the saved reports read back exactly


def test_load_analysis_names_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no feature analysis at .*reasoning-dspy score"):
        load_analysis(tmp_path)
    (tmp_path / "analysis.json").write_text('{"features": [{"index": 3}]}')
    with pytest.raises(ValueError, match="not a feature analysis written by write_analysis"):
        load_analysis(tmp_path / "analysis.json")


def test_width_mismatch_between_scores_and_sae(planted, tiny):
    cache, _, scores = planted
    with pytest.raises(ValueError, match="scores cover 16 features but the SAE has d_sae=32"):
        analyze_features(cache, planted_sae(d_sae=32), scores, tokenizer=tiny.tokenizer, progress=False)


def test_score_command(planted, tmp_path):
    from reasoning_dspy.cli import app

    cache, sae, scores = planted
    save_sae(sae, tmp_path / "sae")
    vocab = tmp_path / "words.txt"
    vocab.write_text("wait\nlet me\nbut\n")
    out = tmp_path / "scores"
    result = CliRunner().invoke(app, ["score", "--cache", str(cache.path), "--sae", str(tmp_path / "sae"),
                                      "--out", str(out), "--vocab", str(vocab), "--top-n", "2",
                                      "--n-features", "3"])
    assert result.exit_code == 0, result.output
    best = next(line for line in result.output.splitlines() if line.strip().startswith("#1 "))
    assert f"feature {WINDOW} " in best and "selected" in result.output
    loaded = FeatureScores.load(out)
    assert loaded.groups == ["wait", "let me", "but"] and loaded.selected.tolist()[0] == WINDOW
    assert len(loaded.selected) == 2 and loaded.settings["top_n"] == 2
    assert loaded.settings["match"] == "words"  # a .txt file lists words, not spellings
    for name in ("features.csv", "analysis.json", "contexts.csv", "score_distribution.png", "top_features.png"):
        assert (out / name).is_file(), name
    bad = CliRunner().invoke(app, ["score", "--cache", str(tmp_path / "nope"), "--sae", str(tmp_path / "sae"),
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "no activation cache" in bad.output


def test_score_command_match_and_entropy_options(planted, tmp_path):
    """By default the command scores the paper's spellings with the paper's normaliser; both choices
    are flags, and features.json records them."""
    from reasoning_dspy.cli import app

    cache, sae, _ = planted
    save_sae(sae, tmp_path / "sae")
    base = ["score", "--cache", str(cache.path), "--sae", str(tmp_path / "sae"), "--top-n", "2", "--n-features", "2"]
    runs = {"official": [], "broad": ["--match", "words", "--entropy-norm", "seen"]}
    for name, flags in runs.items():
        result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / name), *flags])
        assert result.exit_code == 0, result.output
    official = json.loads((tmp_path / "official" / "features.json").read_text())["settings"]
    broad = json.loads((tmp_path / "broad" / "features.json").read_text())["settings"]
    assert (official["match"], official["entropy_norm"], official["entropy_groups"]) == ("exact", "all", 10)
    assert official["vocabulary"]["words"]["but"] == ["But"]
    assert (broad["match"], broad["entropy_norm"]) == ("words", "seen")
    assert broad["vocabulary"]["words"]["but"] == ["but"]
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--match", "fuzzy"])
    assert bad.exit_code == 2 and "match must be 'exact'" in bad.output
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--entropy-norm", "half"])
    assert bad.exit_code == 2 and "entropy_norm must be 'all'" in bad.output


def test_demo_score_stage(tiny, tiny_cache, tmp_path, capsys):
    from reasoning_dspy.demo.pipeline import DemoState, stage_score
    from reasoning_dspy.sae import SAE, SAEConfig

    state = DemoState(out=tmp_path, limit=64, loaded=tiny, cache=tiny_cache)
    state.extras["sae"] = SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=64))
    stage_score(state)
    printed = capsys.readouterr().out
    # the bundled prompts hold none of the official spellings: said, not raised
    assert "no vocabulary word occurs in the data" in printed
    assert "top features by ReasonScore" in printed
    scores = state.extras["scores"]
    assert isinstance(scores, FeatureScores) and torch.isfinite(scores.reason_score).all()
    assert (tmp_path / "scores" / "features.json").is_file() and (tmp_path / "scores" / "top_features.png").is_file()
